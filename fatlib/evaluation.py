"""Evaluation of test scores against known labels: lwlrap overall, per usage split and per class."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import DataError


def evaluate(
    truth: np.ndarray,
    scores: np.ndarray,
    vocab: Sequence[str],
    *,
    usage: Sequence[str] | None = None,
    out_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """lwlrap of ``scores`` against multi-hot ``truth``: overall, per ``usage`` split (e.g. Public /
    Private) and per class. With ``out_dir``: ``evaluation.json`` and ``per_class_lwlrap.png``."""
    from .metrics import lwlrap, per_class_lwlrap

    truth, scores = np.asarray(truth), np.asarray(scores)
    if truth.shape != scores.shape or truth.shape[1:] != (len(vocab),):
        raise DataError(
            f"evaluate: truth {truth.shape} and scores {scores.shape} must both be (n_clips, {len(vocab)} classes)."
        )
    values, weights = per_class_lwlrap(truth, scores)
    result: dict[str, Any] = {
        "lwlrap": float(lwlrap(truth, scores)),
        "n_clips": int(len(truth)),
        # a class without positive labels has no lwlrap: None (JSON null), weight 0
        "per_class": {
            c: {"lwlrap": None if np.isnan(v) else float(v), "weight": float(w)}
            for c, v, w in zip(vocab, values, weights)
        },
    }
    if usage is not None:
        usage = np.asarray(usage).astype(str)
        if usage.shape != (len(truth),):
            raise DataError(f"evaluate: {usage.shape[0]} usage values for {len(truth)} clips; give one per clip.")
        result["by_usage"] = {
            u: float(lwlrap(truth[usage == u], scores[usage == u])) for u in sorted(set(usage.tolist()))
        }
    if out_dir is not None:
        from .atomic import write_json
        from .plots import plot_per_class, save_figure

        out_dir = Path(out_dir)
        write_json(out_dir / "evaluation.json", result)
        fig = plot_per_class(values, list(vocab), weights=weights, xlabel=f"lwlrap (overall {result['lwlrap']:.4f})")
        save_figure(fig, out_dir / "per_class_lwlrap.png")
    return result
