"""Finding and loading the fold models of trained runs: every ``fold*.safetensors`` of stage folders,
built with :func:`fatlib.checkpoint.build_model` and checked against the data's vocabulary."""
from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .errors import WeightsError
from .features import MelConfig


@dataclass
class LoadedModel:
    """A model built from a weights file, with where it came from."""

    model: torch.nn.Module
    meta: dict[str, Any]
    path: Path
    stage: str

    @property
    def mel_config(self) -> MelConfig:
        return MelConfig.from_dict(self.meta["mel_config"])

    @property
    def group(self) -> str:
        """Ensemble group: the stage and the model name (its folds are averaged first)."""
        return f"{self.stage}/{self.meta['model_name']}"

    @property
    def tta_step_frames(self) -> int | None:
        """Frames between TTA windows of the out-of-fold predictions at training (None: not recorded,
        weights saved before fatlib stored it)."""
        step = self.meta.get("extra", {}).get("tta_step_frames")
        return int(step) if isinstance(step, int) and not isinstance(step, bool) and step > 0 else None


_FOLD_WEIGHTS = re.compile(r"^fold(0|[1-9][0-9]*)\.safetensors$")


def stage_n_folds(stage_dir: str | os.PathLike) -> int | None:
    """The stage's fold count from its ``config.json`` (None: no config, or one without a usable n_folds)."""
    path = Path(stage_dir) / "config.json"
    try:
        n = json.loads(path.read_text()).get("n_folds")
    except (OSError, ValueError, AttributeError):
        return None
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else None


def stage_fold_files(stage_dir: str | os.PathLike, *, warn: bool = True) -> list[Path]:
    """Exactly the ``fold<k>.safetensors`` of a stage folder, k < the stage's fold count (``config.json``;
    without one, every ``fold<k>.safetensors``), in fold order. Any other ``fold*.safetensors`` there (a
    copy such as ``fold1 (copy).safetensors``, ``fold7`` of a 5-fold stage) is ignored with a warning
    naming it, so that no fold counts twice."""
    stage_dir = Path(stage_dir)
    n_folds = stage_n_folds(stage_dir)
    found, ignored = {}, []
    for p in sorted(stage_dir.glob("*.safetensors")):
        m = _FOLD_WEIGHTS.match(p.name)
        if m and (n_folds is None or int(m.group(1)) < n_folds):
            found[int(m.group(1))] = p
        else:
            ignored.append(p)
    if warn:
        want = f"fold0..fold{n_folds - 1}.safetensors (n_folds={n_folds} in config.json)" if n_folds else \
            "fold<k>.safetensors"
        for p in ignored:
            warnings.warn(f"{p}: ignored, not one of this stage's {want}; remove or rename it if it is a fold model",
                          stacklevel=2)
    return [found[k] for k in sorted(found)]


def _none_usable(stage_dir: Path) -> list[Path]:
    raise WeightsError(f"{stage_dir}: no fold<k>.safetensors for k < the stage's fold count (config.json) among its "
                       "weights files; rename the fold files fold0.safetensors, fold1.safetensors, ... or retrain the stage.")


def check_init_folds(init_dir: str | os.PathLike, n_folds: int) -> None:
    """``--init-from`` starts fold k from the stage's fold k: the stage must have this stage's fold count."""
    there = stage_n_folds(init_dir)
    if there is not None and there != n_folds:
        raise WeightsError(f"{Path(init_dir) / 'config.json'}: init_from stage has {there} folds there, {n_folds} "
                           f"here; fold k starts from its fold k, so train with --n-folds {there} (or init from a "
                           f"{n_folds}-fold stage).")


def weight_files(weights: str | os.PathLike | Sequence, *, stages: Sequence[str] | None = None) -> list[Path]:
    """Every ``fold*.safetensors`` under ``weights``: stage folders, or run folders (then their stage
    sub-folders, only ``stages`` when given). WeightsError when a folder or stage has none."""
    roots = [Path(weights)] if isinstance(weights, (str, os.PathLike)) else [Path(w) for w in weights]
    files: list[Path] = []
    for root in roots:
        if not root.is_dir():
            raise WeightsError(f"{root}: no such weights folder. Pass weights/<run> or weights/<run>/<stage>.")
        if sorted(root.glob("fold*.safetensors")):
            files += stage_fold_files(root) or _none_usable(root)
            continue
        available = sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("fold*.safetensors")))
        wanted = list(stages) if stages else available
        missing = [s for s in wanted if s not in available]
        if missing or not wanted:
            raise WeightsError(
                f"{root}: no fold*.safetensors for stage(s) {missing or '(any)'}; stages with weights here: "
                f"{available or 'none'}. Train them first or fix --weights/--stages."
            )
        for s in wanted:
            files += stage_fold_files(root / s) or _none_usable(root / s)
    return files


def find_models(
    weights: str | os.PathLike | Sequence,
    *,
    vocab: Sequence[str],
    stages: Sequence[str] | None = None,
    model_name: str | None = None,
    mel_config: MelConfig | None = None,
) -> list[LoadedModel]:
    """Load every fold model under ``weights`` (see :func:`weight_files`) with
    :func:`fatlib.checkpoint.build_model`, checking each file's vocabulary against ``vocab`` (the data's)
    and, when given, its model name and MelConfig. A mismatch raises WeightsError naming the file."""
    from .checkpoint import build_model, check_compatible, read_metadata

    loaded = []
    for path in weight_files(weights, stages=stages):
        meta = read_metadata(path)
        check_compatible(
            path, meta, model_name=model_name, vocab=vocab,
            mel_config=mel_config.to_dict() if mel_config is not None else None,
        )
        try:
            MelConfig.from_dict(meta["mel_config"])
        except (TypeError, ValueError) as e:
            raise WeightsError(f"{path}: the stored feature settings are invalid ({e}); re-save the weights.") from e
        model, meta = build_model(path)
        loaded.append(LoadedModel(model=model.eval(), meta=meta, path=path, stage=path.parent.name))
    return loaded
