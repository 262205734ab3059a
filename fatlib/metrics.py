"""lwlrap: label-weighted label-ranking average precision, the FAT2019 metric (vectorised).

For every (clip, positive label) pair the precision at that label's rank is (positive labels ranked at
or above it) / (its 1-based rank). A class's lwlrap is the mean over its pairs; the overall value is
the mean over all pairs (= per-class values weighted by each class's share of positive labels).
Ranks are those of the official code, ``np.argsort(scores)[::-1]``: an ascending stable sort read
backwards, so among exactly equal scores the higher class index ranks first (a stage-4 "lwlrap == 1"
decision on tied scores goes as it did in 2019; numpy >= 1.25's default argsort may be a SIMD sort with
no defined tie order, so the sort here is explicitly stable). A label is positive where ``truth > 0``; clips without one contribute nothing.
Scores may be logits or probabilities: only their order matters.
"""
from __future__ import annotations

import numpy as np

from .errors import DataError

__all__ = ["lwlrap", "per_class_lwlrap", "per_sample_lwlrap", "LwlrapMetric"]


def _to_numpy(x, *, what: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]  # a single class: one column
    if x.ndim != 2:
        raise DataError(f"lwlrap: {what} must be (n_clips, n_classes), got shape {x.shape}; "
                        "pass one row per clip and one column per class")
    if not np.isfinite(x).all():
        raise DataError(f"lwlrap: {what} holds {int((~np.isfinite(x)).sum())} NaN/inf values; "
                        "check the model output (diverged training?) or the targets")
    return x


def _precisions(truth, scores) -> tuple[np.ndarray, np.ndarray]:
    """(positive mask (N, C) bool, precision at each positive (N, C) float, 0 where negative)."""
    truth = _to_numpy(truth, what="truth")
    scores = _to_numpy(scores, what="scores")
    if truth.shape != scores.shape:
        raise DataError(f"lwlrap: truth has shape {truth.shape} but scores {scores.shape}; "
                        "both must be (n_clips, n_classes) in the same vocabulary order")
    pos = truth > 0
    order = np.argsort(scores, axis=1, kind="stable")[:, ::-1]  # official: argsort()[::-1], ties -> higher index
    pos_sorted = np.take_along_axis(pos, order, axis=1)
    hits = np.cumsum(pos_sorted, axis=1)
    ranks = np.arange(1, pos.shape[1] + 1)
    prec_sorted = np.where(pos_sorted, hits / ranks, 0.0)
    prec = np.empty_like(prec_sorted)
    np.put_along_axis(prec, order, prec_sorted, axis=1)
    return pos, prec


def per_class_lwlrap(truth, scores) -> tuple[np.ndarray, np.ndarray]:
    """Per-class lwlrap and weights, both (n_classes,).

    ``values[c]`` is the mean precision over the positive labels of class ``c`` (NaN for a class with
    no positive label); ``weights[c]`` its share of all positive labels (sums to 1, 0 for such a class).
    ``lwlrap == nansum(values * weights)``.
    """
    pos, prec = _precisions(truth, scores)
    counts = pos.sum(axis=0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = prec.sum(axis=0) / counts
        weights = counts / counts.sum()
    if counts.sum() == 0:
        weights = np.zeros_like(counts)
    return values, weights


def per_sample_lwlrap(truth, scores) -> np.ndarray:
    """Per-clip label-ranking average precision, (n_clips,); NaN for clips without a positive label.

    This is what the noisy-sample selection rules threshold (1.0: every label ranked above all others).
    """
    pos, prec = _precisions(truth, scores)
    n_pos = pos.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pos > 0, prec.sum(axis=1) / n_pos, np.nan)


def lwlrap(truth, scores) -> float:
    """Overall lwlrap of scores (n_clips, n_classes) against multi-hot truth; NaN if no clip has a label.

    Accepts numpy arrays or torch tensors (any device).
    """
    pos, prec = _precisions(truth, scores)
    n = pos.sum()
    return float(prec.sum() / n) if n else float("nan")


def _lwlrap_metric(preds, targs) -> float:
    return lwlrap(targs, preds)


def LwlrapMetric():
    """A fastai metric named "lwlrap" computed once on the whole epoch's predictions.

    A plain function metric would be averaged over batches, which is not lwlrap (the ranking
    precision weights differ per batch). ``flatten=False`` keeps (n_clips, n_classes).
    """
    from fastai.metrics import AccumMetric

    return AccumMetric(_lwlrap_metric, flatten=False, name="lwlrap")
