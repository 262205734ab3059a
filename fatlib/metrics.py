"""lwlrap: label-weighted label-ranking average precision, the FAT2019 metric (vectorised).

For every (clip, positive label) pair the precision at that label's rank is (positive labels ranked at
or above it) / (its 1-based rank). A class's lwlrap is the mean over its pairs; the overall value is
the mean over all pairs (= per-class values weighted by each class's share of positive labels).

Ranks are exactly those of the official code (``calculate_per_class_lwlrap`` of the FAT2019 Colab):
``np.argsort(scores)[::-1]`` per clip, with numpy's default sort, in the dtype the scores come in.
Among exactly equal scores that order is whatever the running numpy's default argsort gives: numpy
>= 1.25 may use a SIMD sort whose tie order is neither stable nor documented (on numpy 2.4 with
AVX-512 it differs from a stable sort on most tied rows). ``np.argsort(scores, axis=1)`` sorts every
row with that same routine, so the vectorised ranks here equal the official per-row loop on every
input, ties included (tests/test_metrics.py checks it against a transcription of the official code).
This matters for saturated scores, where a per-clip "lwlrap == 1" rule (12th place, stage 4) is
decided by the tie order alone.

A label is positive where ``truth > 0``; clips without one contribute nothing. For a class without a
positive label :func:`per_class_lwlrap` gives NaN where the official code gives 0; its weight is 0
in both, so the weighted sum is the same. Scores may be logits or probabilities: only their order
matters (a sigmoid can turn distinct logits into equal float32 probabilities, so ties can differ).
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


def _as_given(x) -> np.ndarray:
    """``x`` as a numpy array in its own dtype: what ``np.argsort`` sees in the official code."""
    if hasattr(x, "detach"):  # torch tensor; bfloat16 has no numpy dtype
        import torch

        x = x.detach().cpu()
        x = (x.float() if x.dtype == torch.bfloat16 else x).numpy()
    x = np.asarray(x)
    return x[:, None] if x.ndim == 1 else x


def _official_order(scores) -> np.ndarray:
    """Per row, ``np.argsort(row)[::-1]`` as the official code ranks: numpy's default sort in the
    scores' own dtype. Sorting along axis 1 runs the same routine on every row (checked in the tests)."""
    return np.argsort(scores, axis=1)[:, ::-1]


def _precisions(truth, scores) -> tuple[np.ndarray, np.ndarray]:
    """(positive mask (N, C) bool, precision at each positive (N, C) float, 0 where negative)."""
    truth = _to_numpy(truth, what="truth")
    given = _as_given(scores)
    scores = _to_numpy(scores, what="scores")
    if truth.shape != scores.shape:
        raise DataError(f"lwlrap: truth has shape {truth.shape} but scores {scores.shape}; "
                        "both must be (n_clips, n_classes) in the same vocabulary order")
    pos = truth > 0
    order = _official_order(given if given.dtype.kind in "biuf" else scores)
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
