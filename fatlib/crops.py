"""Crop arithmetic shared by the training datasets (:mod:`fatlib.loaders`, :mod:`fatlib.wave_loaders`):
row checks, segment-length indices, crop offsets."""
from __future__ import annotations

import numpy as np

from .errors import DataError


def check_rows(rows, targets, n_total: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` (indices into ``n_total`` items) and their ``targets`` as arrays; DataError naming ``what`` when
    they do not fit."""
    rows = np.asarray(rows, dtype=int).reshape(-1)
    targets = np.asarray(targets, dtype=np.float32)
    if targets.ndim != 2 or len(targets) != len(rows):
        raise DataError(
            f"{what}: targets must be (n_rows, n_classes) with one row per index, got {targets.shape} "
            f"for {len(rows)} indices."
        )
    if len(rows) and (rows.min() < 0 or rows.max() >= n_total):
        raise DataError(f"{what}: indices must lie in [0, {n_total}), got {rows.min()}..{rows.max()}.")
    return rows, targets


def split_index(i) -> tuple[int, int | None]:
    """A dataset index: an int, or (int, frames) from :class:`SegmentLoader` (a segment length)."""
    if isinstance(i, tuple):
        return int(i[0]), int(i[1])
    return int(i), None


def crop_offset(length: int, crop: int, *, train: bool) -> int:
    """Start of a ``crop``-long window in ``length``: uniform random when training, else the centre."""
    if train:
        return int(np.random.randint(0, length - crop + 1))
    return (length - crop) // 2
