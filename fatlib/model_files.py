"""Finding and loading the fold models of trained runs: every ``fold*.safetensors`` of stage folders,
built with :func:`fatlib.weights.build_model` and checked against the data's vocabulary."""
from __future__ import annotations

import os
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


def weight_files(weights: str | os.PathLike | Sequence, *, stages: Sequence[str] | None = None) -> list[Path]:
    """Every ``fold*.safetensors`` under ``weights``: stage folders, or run folders (then their stage
    sub-folders, only ``stages`` when given). WeightsError when a folder or stage has none."""
    roots = [Path(weights)] if isinstance(weights, (str, os.PathLike)) else [Path(w) for w in weights]
    files: list[Path] = []
    for root in roots:
        if not root.is_dir():
            raise WeightsError(f"{root}: no such weights folder. Pass weights/<run> or weights/<run>/<stage>.")
        if sorted(root.glob("fold*.safetensors")):
            files += sorted(root.glob("fold*.safetensors"))
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
            files += sorted((root / s).glob("fold*.safetensors"))
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
    :func:`fatlib.weights.build_model`, checking each file's vocabulary against ``vocab`` (the data's)
    and, when given, its model name and MelConfig. A mismatch raises WeightsError naming the file."""
    from .weights import build_model, check_compatible, read_metadata

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
