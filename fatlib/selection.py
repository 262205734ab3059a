"""Noisy-sample selection: which clips of the noisy split to add to curated training.

Rules (thresholds and caps are parameters; defaults are the published ones, ``REFERENCE.md``):

- ``select_by_agreement`` (12th place): keep clips whose out-of-fold per-clip lwlrap score reaches
  ``threshold`` with at most ``max_per_fold_label`` clips per (fold, label). Stage 3 uses
  ``score = sqrt(lwlrap1 * lwlrap2)``, threshold 0.5, cap 5 (``stage3_score``); stage 4 uses
  ``score = lwlrap3``, threshold 1.0, no cap.
- ``select_by_logloss`` (9th place): single-label clips ranked by log loss under a curated model,
  best ``n_best``, at most ``max_per_class`` per class.
- ``select_pseudo_labels`` (3rd place): round r keeps the ``r * round_size`` clips whose noisy labels
  are exactly the model's top-k classes, ranked by the mean probability of those labels; after
  ``max_rounds`` rounds, every clip is kept with its labels replaced by thresholded predictions.

Each returns a ``Selection``; ``Selection.write`` writes ``fname,labels,score,fold`` atomically.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .atomic import write_csv
from .errors import DataError
from .folds import SELECTION_COLUMNS


@dataclass
class Selection:
    """Chosen clips: row indices into the noisy split, their (possibly replaced) labels, score, fold."""

    indices: np.ndarray  # int rows of the noisy split, best first
    targets: np.ndarray  # float32 (n_chosen, n_classes) multi-hot labels to train with
    score: np.ndarray  # float per chosen clip (meaning depends on the rule, see its docstring)
    folds: np.ndarray  # int fold id per chosen clip

    def __len__(self) -> int:
        return len(self.indices)

    def to_frame(self, fnames: Sequence[str], vocab: Sequence[str]) -> pd.DataFrame:
        labels = [",".join(vocab[j] for j in np.flatnonzero(row > 0.5)) for row in self.targets]
        return pd.DataFrame(
            {
                "fname": [fnames[i] for i in self.indices],
                "labels": labels,
                "score": self.score.astype(float),
                "fold": self.folds.astype(int),
            },
            columns=SELECTION_COLUMNS,
        )

    def write(self, path, *, fnames: Sequence[str], vocab: Sequence[str]) -> Path:
        """Write the selection CSV (``fname,labels,score,fold``) atomically; returns the path."""
        return write_csv(path, self.to_frame(fnames, vocab))


def _check(name: str, array, n: int | None = None, ndim: int = 1) -> np.ndarray:
    a = np.asarray(array)
    if a.ndim != ndim or (n is not None and a.shape[0] != n):
        want = f"{ndim}-D" + (f" with {n} rows" if n is not None else "")
        raise DataError(
            f"selection argument {name!r}: expected a {want} array, got shape {a.shape}. "
            "Pass one value per noisy clip, in the noisy split's order."
        )
    return a


def _greedy_cap(order: np.ndarray, targets: np.ndarray, groups: np.ndarray, cap: int | None) -> np.ndarray:
    """Walk ``order`` (best first) and keep a clip if every one of its labels has fewer than ``cap``
    kept clips in its group (fold); returns the kept rows in order."""
    if cap is None:
        return order
    counts: dict[tuple[int, int], int] = {}
    kept = []
    for i in order:
        labels = np.flatnonzero(targets[i] > 0.5)
        keys = [(int(groups[i]), int(j)) for j in labels]
        if all(counts.get(k, 0) < cap for k in keys):
            kept.append(i)
            for k in keys:
                counts[k] = counts.get(k, 0) + 1
    return np.asarray(kept, dtype=int)


def stage3_score(lwlrap1, lwlrap2) -> np.ndarray:
    """The 12th-place stage-3 score: sqrt(lwlrap1 * lwlrap2) per noisy clip (NaN stays NaN)."""
    a = _check("lwlrap1", lwlrap1).astype(float)
    b = _check("lwlrap2", lwlrap2, len(a)).astype(float)
    return np.sqrt(np.clip(a, 0, None) * np.clip(b, 0, None))  # NaN (clip without labels) stays NaN


def select_by_agreement(
    score, *, targets, folds, threshold: float = 0.5, max_per_fold_label: int | None = 5
) -> Selection:
    """12th-place rule: clips with ``score >= threshold`` (NaN never), best first, at most
    ``max_per_fold_label`` per (fold, label) (``None``: no cap). Stage 4: ``threshold=1.0, cap None``."""
    s = _check("score", score).astype(float)
    y = _check("targets", targets, len(s), ndim=2)
    f = _check("folds", folds, len(s)).astype(int)
    if max_per_fold_label is not None and max_per_fold_label < 1:
        raise DataError(f"max_per_fold_label={max_per_fold_label}: use a positive cap or None for no cap.")
    ok = np.flatnonzero(np.nan_to_num(s, nan=-np.inf) >= threshold - 1e-9)
    order = ok[np.argsort(-s[ok], kind="stable")]
    kept = _greedy_cap(order, y, f, max_per_fold_label)
    return Selection(kept, y[kept].astype(np.float32), s[kept], f[kept])


def log_loss_per_clip(probs, targets, *, eps: float = 1e-6) -> np.ndarray:
    """Mean binary cross-entropy (nats) of each clip's probabilities against its labels."""
    p = np.clip(_check("probs", probs, ndim=2).astype(float), eps, 1 - eps)
    y = _check("targets", targets, len(p), ndim=2).astype(float)
    if p.shape != y.shape:
        raise DataError(f"probs {p.shape} and targets {y.shape} differ: pass both in vocabulary order.")
    return -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=1)


def select_by_logloss(
    probs, *, targets, folds, n_best: int = 5000, max_per_class: int | None = 50
) -> Selection:
    """9th-place rule: single-label clips, lowest log loss first, best ``n_best`` with at most
    ``max_per_class`` per class. ``score`` is the log loss (nats, lower is better).

    The cap bounds the selection at ``sum(min(clips of c, max_per_class))`` over the classes c: on
    FSDKaggle2019's noisy set (80 classes) a cap of 50 keeps at most 3,960 clips, 64 reaches 5,000 and
    218 reaches 15,000 (the 9th recipe's values; ``None``: no cap)."""
    y = _check("targets", targets, ndim=2)
    loss = log_loss_per_clip(probs, y)
    f = _check("folds", folds, len(y)).astype(int)
    single = np.flatnonzero(y.sum(axis=1) == 1)
    order = single[np.argsort(loss[single], kind="stable")]
    kept = _greedy_cap(order, y, np.zeros(len(y), dtype=int), max_per_class)[:n_best]
    return Selection(kept, y[kept].astype(np.float32), loss[kept], f[kept])


def select_pseudo_labels(
    probs,
    *,
    targets,
    folds,
    round_index: int,
    round_size: int = 1000,
    max_rounds: int = 5,
    threshold: float = 0.5,
) -> Selection:
    """3rd-place iterative pseudo-labelling, round ``round_index`` (1-based).

    Rounds 1..max_rounds: the ``round_index * round_size`` clips whose noisy labels equal the model's
    top-k classes (k = number of noisy labels), ranked by the mean probability of those labels
    (``score``), keeping the noisy labels. Later rounds: the ``max_rounds * round_size`` clips kept so
    far keep their noisy labels (first, as before); every other clip gets the predictions ``>= threshold``
    as labels (the top class when none passes), ``score`` its top probability. The write-up gives no
    threshold value: 0.5 is fatlib's choice.
    """
    p = _check("probs", probs, ndim=2).astype(float)
    y = _check("targets", targets, len(p), ndim=2)
    f = _check("folds", folds, len(p)).astype(int)
    if round_index < 1:
        raise DataError(f"round_index={round_index}: rounds are numbered from 1.")
    k = (y > 0.5).sum(axis=1)
    rank = np.argsort(-p, axis=1, kind="stable")
    agree = np.array(
        [ki > 0 and set(rank[i, :ki]) == set(np.flatnonzero(y[i] > 0.5)) for i, ki in enumerate(k)], dtype=bool
    )
    mean_p = (p * (y > 0.5)).sum(axis=1) / np.maximum(k, 1)
    cand = np.flatnonzero(agree)
    order = cand[np.argsort(-mean_p[cand], kind="stable")][: min(round_index, max_rounds) * round_size]
    if round_index <= max_rounds:
        return Selection(order, y[order].astype(np.float32), mean_p[order], f[order])
    new = (p >= threshold).astype(np.float32)
    new[np.arange(len(p)), p.argmax(axis=1)] = 1.0
    top = p.max(axis=1)
    rest = np.setdiff1d(np.arange(len(p)), order)
    rest = rest[np.argsort(-top[rest], kind="stable")]
    rows = np.concatenate([order, rest]).astype(int)
    targets = np.concatenate([y[order].astype(np.float32), new[rest]])
    return Selection(rows, targets, np.concatenate([mean_p[order], top[rest]]), f[rows])


# ---------------------------------------------------------------------------------------------- CLI
RULES = ("stage3", "stage4", "logloss", "pseudo")


def _noisy_lwlrap(stage_dir: Path, fnames: Sequence[str]) -> np.ndarray:
    path = stage_dir / "noisy_lwlrap.csv"
    if not path.exists():
        raise DataError(f"{path}: not found. Train stage {stage_dir.name!r} to completion first.")
    df = pd.read_csv(path).set_index("fname")
    missing = [n for n in fnames if n not in df.index][:5]
    if missing:
        raise DataError(f"{path}: no lwlrap for noisy clips {missing}; retrain the stage on this data set.")
    return df.loc[list(fnames), "lwlrap"].to_numpy(dtype=float)


def _oof_noisy(stage_dir: Path, fnames: Sequence[str], vocab: Sequence[str]) -> np.ndarray:
    path = stage_dir / "oof_noisy.csv"
    if not path.exists():
        raise DataError(f"{path}: not found. Train stage {stage_dir.name!r} to completion first.")
    df = pd.read_csv(path).set_index("fname")
    if [c for c in vocab if c not in df.columns] or [n for n in fnames if n not in df.index]:
        raise DataError(f"{path}: does not cover this data set's noisy clips and classes; retrain the stage.")
    return df.loc[list(fnames), list(vocab)].to_numpy(dtype=float)


def check_sources(rule: str, stage_dirs: Sequence[Path]) -> None:
    """Before anything is written (the run's noisy folds): the rule's stage outputs exist."""
    name = "noisy_lwlrap.csv" if rule in ("stage3", "stage4") else "oof_noisy.csv"
    for d in stage_dirs:
        if not (Path(d) / name).exists():
            raise DataError(f"{Path(d) / name}: not found. Train stage {Path(d).name!r} to completion first.")


def run_rule(
    rule: str, *, stage_dirs: Sequence[Path], targets, folds, fnames, vocab, **params
) -> Selection:
    """Apply ``rule`` (one of RULES) to the outputs of the given stage folders."""
    need = {"stage3": 2, "stage4": 1, "logloss": 1, "pseudo": 1}
    if rule not in need:
        raise DataError(f"unknown selection rule {rule!r}; choose one of {RULES}.")
    if len(stage_dirs) != need[rule]:
        raise DataError(f"rule {rule!r} needs {need[rule]} stage folder(s), got {len(stage_dirs)}.")
    if rule == "stage3":
        score = stage3_score(*(_noisy_lwlrap(d, fnames) for d in stage_dirs))
        return select_by_agreement(score, targets=targets, folds=folds, **params)
    if rule == "stage4":
        params = {"threshold": 1.0, "max_per_fold_label": None, **params}
        return select_by_agreement(_noisy_lwlrap(stage_dirs[0], fnames), targets=targets, folds=folds, **params)
    probs = _oof_noisy(stage_dirs[0], fnames, vocab)
    fn = select_by_logloss if rule == "logloss" else select_pseudo_labels
    return fn(probs, targets=targets, folds=folds, **params)


def check_selection_out(out, data, *, run_dir: Path, run: str, stages: Sequence[str]) -> None:
    """Run and stage names are plain folder names, and ``out`` falls on no input: a file of the data set
    (``--out data/train_noisy.csv`` would shrink the noisy split), the stages' outputs or the run's folds."""
    from .guards import (
        check_output_not_input,
        check_plain_name,
        check_replaceable_file,
        data_inputs,
        weights_inputs,
    )

    check_plain_name(run, what="run name (--run)")
    for s in stages:
        check_plain_name(s, what="stage name (--stages)")
    inputs = [*data_inputs(data), *weights_inputs([run_dir / s for s in stages]), run_dir / "folds_curated.csv",
              run_dir / "folds_noisy.csv"]
    check_output_not_input(out, inputs=inputs, what="--out file")
    check_replaceable_file(out)
