"""Length bucketing: items (clips or crops) grouped into batches of similar length under a budget of
frames, so that no item is padded to (or stacked with) a much longer one and a batch of long items
holds fewer of them. The one mechanism inference uses for feature passes and for model passes."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import DataError


def length_batches(
    lengths: Sequence[int] | np.ndarray,
    *,
    max_items: int,
    max_frames: int,
    equal_lengths: bool = False,
    sort: bool = True,
) -> list[np.ndarray]:
    """Indices of ``lengths`` (frames) in batches, shortest first when ``sort``.

    A batch holds at most ``max_items`` items and, padded to its longest item, at most ``max_frames``
    frames in all; an item longer than ``max_frames`` gets a batch of its own. ``equal_lengths``: only
    items of one length share a batch (they are stacked, not padded). ``sort=False`` keeps the given
    order (each batch is then a run of consecutive items).
    """
    for name, v in (("max_items", max_items), ("max_frames", max_frames)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise DataError(f"{name} must be a positive integer, got {v!r}")
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    order = np.argsort(lengths, kind="stable") if sort else np.arange(len(lengths))
    batches: list[np.ndarray] = []
    start, longest = 0, 0
    for pos, i in enumerate(order):
        n = int(lengths[i])
        count = pos - start
        fits = count < max_items and max(longest, n) * (count + 1) <= max_frames
        if count and (not fits or (equal_lengths and n != longest)):
            batches.append(order[start:pos])
            start, longest = pos, 0
        longest = max(longest, n)
    if len(order):
        batches.append(order[start:])
    return batches
