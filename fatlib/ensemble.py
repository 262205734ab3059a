"""Combine score matrices (n_clips, n_classes) over folds, stages and models.

- ``mean``: arithmetic mean of probabilities (12th place: folds, then stages, then models).
- ``geometric``: geometric mean, ``exp(mean(log p))`` (several solutions over folds and models).
- ``rescale=True``: each class's scores mapped to [0, 1] over the clips before averaging (9th place),
  so a model whose scores for a class are compressed into a narrow range still counts fully.

Weights are optional and relative (normalised to sum to 1).
"""
from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import numpy as np

from .errors import DataError

METHODS = ("mean", "geometric")
# the smallest probability used inside log() by the geometric mean, so a single 0 does not veto a class
GEOMETRIC_EPS = 1e-7


def rescale_per_class(scores: np.ndarray) -> np.ndarray:
    """Map each class column of ``scores`` (n_clips, n_classes) linearly onto [0, 1] over the clips.

    A column with a single value carries no ranking information to stretch; it is kept as it is.
    """
    scores = _check_matrix(scores, name="scores")
    lo = scores.min(axis=0, keepdims=True)
    span = scores.max(axis=0, keepdims=True) - lo
    flat = span[0] == 0
    out = (scores - lo) / np.where(span == 0, 1.0, span)
    out[:, flat] = scores[:, flat]
    return out.astype(np.float32)


def combine(
    scores: Sequence[np.ndarray] | np.ndarray,
    *,
    method: str = "mean",
    weights: Sequence[float] | None = None,
    rescale: bool = False,
) -> np.ndarray:
    """Combine a stack of score matrices, ``(n_models, n_clips, n_classes)`` or a list of them.

    ``method``: "mean" or "geometric"; ``weights``: one non-negative weight per matrix (relative);
    ``rescale``: per-class rescaling to [0, 1] of each matrix first. Returns float32 (n_clips, n_classes).
    """
    if method not in METHODS:
        raise DataError(f"ensemble method {method!r} is unknown: use one of {', '.join(METHODS)}.")
    mats = [_check_matrix(s, name=f"scores[{i}]") for i, s in enumerate(scores)]
    if not mats:
        raise DataError("ensemble: no score matrices to combine. Predict with at least one model first.")
    shapes = {m.shape for m in mats}
    if len(shapes) > 1:
        raise DataError(
            f"ensemble: score matrices have different shapes {sorted(shapes)}; "
            "combine predictions of the same clips and the same vocabulary only."
        )
    w = _check_weights(weights, len(mats))
    if rescale:
        mats = [rescale_per_class(m) for m in mats]
    stack = np.stack(mats).astype(np.float64)
    if method == "mean":
        out = np.tensordot(w, stack, axes=1)
    else:
        if stack.min() < 0:
            raise DataError(
                "ensemble: the geometric mean needs non-negative scores (probabilities); "
                "got negative values. Pass sigmoid probabilities, not logits."
            )
        out = np.exp(np.tensordot(w, np.log(np.maximum(stack, GEOMETRIC_EPS)), axes=1))
    return out.astype(np.float32)


def combine_groups(
    scores: Sequence[np.ndarray] | np.ndarray,
    groups: Sequence[Hashable],
    *,
    method: str = "mean",
    within: str = "mean",
    weights: Mapping[Hashable, float] | None = None,
    rescale: bool = False,
) -> tuple[np.ndarray, dict[Hashable, np.ndarray]]:
    """Two-level ensemble: first the matrices of each group (the folds of one stage or model) with
    ``within``, then the groups with ``method``, ``weights`` (group -> weight; missing groups weigh 1)
    and ``rescale`` (applied to the group results).

    Returns (combined, {group: group result}) with groups in order of first appearance.
    """
    mats = list(scores)
    if len(groups) != len(mats):
        raise DataError(f"ensemble: {len(mats)} score matrices but {len(groups)} group labels; give one label per matrix.")
    order = list(dict.fromkeys(groups))
    unknown = sorted(set(weights or {}) - set(order), key=str)
    if unknown:
        raise DataError(f"ensemble: weights given for unknown groups {unknown}; the groups are {order}.")
    per_group = {
        g: combine([m for m, gi in zip(mats, groups) if gi == g], method=within) for g in order
    }
    gw = [float((weights or {}).get(g, 1.0)) for g in order]
    return combine(list(per_group.values()), method=method, weights=gw, rescale=rescale), per_group


def _check_matrix(scores, *, name: str) -> np.ndarray:
    a = np.asarray(scores)
    if a.ndim != 2:
        raise DataError(f"ensemble: {name} has shape {a.shape}; expected (n_clips, n_classes).")
    if not np.issubdtype(a.dtype, np.number):
        raise DataError(f"ensemble: {name} has dtype {a.dtype}; expected numbers.")
    if not np.isfinite(a).all():
        bad = int((~np.isfinite(a)).any(axis=1).sum())
        raise DataError(f"ensemble: {name} has NaN or infinite scores in {bad} clip(s); fix the prediction that made them.")
    return a


def _check_weights(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise DataError(f"ensemble: {w.size} weights for {n} score matrices; give exactly one weight per matrix.")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise DataError(f"ensemble: weights {w.tolist()} must be finite, non-negative and not all zero.")
    return w / w.sum()
