"""Training settings that scale with the data: the published recipes were tuned for FSDKaggle2019
(4,970 curated + 19,815 noisy clips on a GPU); the same numbers on a few hundred clips give a
handful of optimizer steps per fold and a model far too wide for the data, and learn nothing.

:func:`scale_settings` keeps a recipe's values where the data is as large as the recipe's, and on
smaller data picks, from the number of training clips per fold:

- ``batch_size``: at most the recipe's, and small enough for ``MIN_STEPS_PER_EPOCH`` steps per epoch;
- ``lr``: the recipe's (Adam at 1e-3 learned as well at batch 16 and 32 as at 128 on the benchmark;
  a square-root-scaled rate, 3.5e-4 at batch 16, learned slower);
- ``epochs``: at least the recipe's, and enough for ``min_steps`` optimizer steps per fold (on a data set
  smaller than FSDKaggle2019, ``FULL_DATA_CLIPS``: at its size the recipe's epochs stand, e.g. the 12th place's
  10-epoch stage 4 over curated + a few selected noisy clips);
- ``width_mult`` (when the model options leave it unset): from the size of the whole data set, so
  every stage of one run gets the same model and stage k can start from stage k-1;
- ``n_folds`` (:func:`scale_folds`, before the folds are made): at most ``SMALL_DATA_FOLDS`` under
  ``SMALL_DATA_CLIPS`` clips: validation folds of 80+ clips, and half the training time of 10 folds.

A value somebody gave (a command-line option, ``--config``, ``--set``, a library call's argument:
``given``) is used as given: auto scaling fills only the others, and :meth:`Scaled.describe` says which.

Measured on the real-audio benchmark (``benchmarks/real_audio.py``); the figures are in the README.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

MIN_STEPS_PER_EPOCH = 16  # batches per epoch the batch size is lowered to reach
MIN_BATCH = 8
# (clips in the data set at least, width_mult): the first row that fits applies
WIDTH_BY_DATASET_SIZE = ((4000, 1.0), (1500, 0.5), (0, 0.25))
SMALL_DATA_CLIPS, SMALL_DATA_FOLDS = 1500, 5
FULL_DATA_CLIPS = 4970 + 19815  # FSDKaggle2019's curated + noisy: the size the recipes' values are for


@dataclass(frozen=True)
class Scaled:
    batch_size: int
    lr: float
    epochs: int
    width_mult: float | None  # None: the model options set it (or the model's default)
    steps_per_epoch: int
    kept: tuple = ()  # the fields auto scaling left as given

    def describe(self) -> str:
        width = "" if self.width_mult is None else f", width_mult {self.width_mult:g}"
        return (f"batch {self.batch_size}, lr {self.lr:.2g}, {self.epochs} epochs "
                f"({self.steps_per_epoch} steps each, {self.steps_per_epoch * self.epochs} in all){width}")


def dataset_width(n_dataset_clips: int) -> float:
    """Model width multiplier for a data set of ``n_dataset_clips`` training clips (curated + noisy)."""
    return next(w for n, w in WIDTH_BY_DATASET_SIZE if n_dataset_clips >= n)


def scale_folds(n_folds: int, *, n_dataset: int, given: bool = False) -> int:
    """Folds for a data set of ``n_dataset`` clips (curated + noisy) when the recipe asks for ``n_folds``
    (``given``: somebody gave ``n_folds``, which is then kept)."""
    return min(n_folds, SMALL_DATA_FOLDS) if n_dataset < SMALL_DATA_CLIPS and not given else n_folds


SCALED_FIELDS = ("batch_size", "lr", "epochs")


def scale_settings(*, n_train: int, n_dataset: int, batch_size: int, lr: float, epochs: int, min_steps: int,
                   width_mult: float | None, given=()) -> Scaled:
    """Settings for a fold of ``n_train`` training clips in a data set of ``n_dataset`` clips, from
    the recipe's ``batch_size``, ``lr`` and ``epochs``; ``width_mult`` None lets the data set size
    choose it. ``given``: names of those fields somebody gave; they are kept as they are. See the module doc."""
    if n_train < 1:
        raise ValueError(f"n_train={n_train}: a fold needs training clips")
    given = set(given)
    bs = batch_size
    if "batch_size" not in given:
        while bs > MIN_BATCH and n_train / bs < MIN_STEPS_PER_EPOCH:
            bs //= 2
        bs = max(min(bs, n_train), 1)
    steps = max(1, n_train // bs if n_train > bs else 1)  # the last partial batch is dropped
    n_epochs = epochs if "epochs" in given or n_dataset >= FULL_DATA_CLIPS else max(epochs, math.ceil(min_steps / steps))
    width = dataset_width(n_dataset) if width_mult is None else None
    return Scaled(bs, float(lr), n_epochs, width, steps, tuple(f for f in SCALED_FIELDS if f in given))
