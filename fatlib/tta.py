"""Test-time augmentation (TTA) crop plans: which crops of a clip's log-mel a model sees at inference.

Each clip's log-mel is (n_mels, frames); ``width`` = the training crop, ``cfg.crop_frames``:

- ``windows`` (12th place): crops of ``width`` frames spread evenly from the clip's start to its end,
  at most ``step_frames`` (48) frames apart: ``linspace(0, frames - width, ceil((frames - width) /
  step) + 1)`` rounded down, as the 12th-place kernel spaces them (T = 200, width 128: starts 0, 36,
  72); probabilities averaged.
- ``sequential`` (95th place): every non-overlapping crop; the last partial crop is aligned to the
  clip's end (it overlaps its neighbour) instead of wrapping to the start, so no frame of the start is
  counted twice.
- ``full`` (3rd place): the whole clip at once, cut (centred) to a multiple of ``length_quantum_frames``
  so that clips of similar length share a batch (length bucketing). The cut depends only on the
  clip, never on the batch, so batched and one-by-one scores agree.

Clips shorter than ``width`` frames are extended per the preset (``cfg.min_length``, ``repeat_below_seconds``): the waveform
path extends the audio with :func:`fatlib.features.clip_wave`, like the cache; a shorter cached
spectrogram is tiled ("repeat") or centred between frames at the clip's own floor ("pad": the value
zero-padded audio takes after the 80 dB clamp).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .errors import DataError
from .features import MelConfig, extend_mode, normalize

TTA_SCHEMES = ("windows", "sequential", "full")
DEFAULT_STEP_FRAMES = 48  # 12th place: windows at most 48 frames apart
DEFAULT_QUANTUM_FRAMES = 16  # "full": lengths cut to a multiple of this (~0.25 s at hop 694)


def window_starts(n_frames: int, *, width_frames: int, step_frames: int = DEFAULT_STEP_FRAMES) -> np.ndarray:
    """Start frames of the ``windows`` scheme: the fewest windows at most ``step_frames`` apart that
    reach from the clip's start to its end, spread evenly (``np.linspace``, rounded down), as in the
    12th-place kernel. A clip of at most ``width_frames`` frames gets the single start 0 (it is
    extended to the width).
    """
    check_positive(n_frames=n_frames, width_frames=width_frames, step_frames=step_frames)
    last = n_frames - width_frames
    if last <= 0:
        return np.zeros(1, dtype=np.int64)
    n_windows = -(-last // step_frames) + 1
    return np.floor(np.linspace(0, last, n_windows)).astype(np.int64)


def sequential_starts(n_frames: int, *, width_frames: int) -> np.ndarray:
    """Start frames of the ``sequential`` scheme: 0, width, 2*width, ... and, when frames remain, one
    crop aligned to the clip's end. Every frame is covered once except the end crop's overlap."""
    check_positive(n_frames=n_frames, width_frames=width_frames)
    full_crops = max(n_frames // width_frames, 1)
    starts = np.arange(full_crops, dtype=np.int64) * width_frames
    last = n_frames - width_frames
    return starts if last <= starts[-1] else np.append(starts, last)


def full_frames(n_frames: int, *, width_frames: int, quantum_frames: int = DEFAULT_QUANTUM_FRAMES) -> int:
    """Frames the ``full`` scheme feeds the model: ``n_frames`` cut down to a multiple of
    ``quantum_frames``, at least ``width_frames`` (shorter clips are extended to the width)."""
    check_positive(n_frames=n_frames, width_frames=width_frames, quantum_frames=quantum_frames)
    return max(width_frames, n_frames - n_frames % quantum_frames)


def crop_plan(
    n_frames: int,
    *,
    tta: str,
    width_frames: int,
    step_frames: int = DEFAULT_STEP_FRAMES,
    quantum_frames: int = DEFAULT_QUANTUM_FRAMES,
) -> list[tuple[int, int]]:
    """The crops ``(start, length)`` in frames that scheme ``tta`` takes from a clip of ``n_frames``
    frames (after extension to ``width_frames``). Their probabilities are averaged with equal weight."""
    check_scheme(tta)
    n = max(n_frames, width_frames)
    if tta == "windows":
        return [(int(s), width_frames) for s in window_starts(n, width_frames=width_frames, step_frames=step_frames)]
    if tta == "sequential":
        return [(int(s), width_frames) for s in sequential_starts(n, width_frames=width_frames)]
    length = full_frames(n, width_frames=width_frames, quantum_frames=quantum_frames)
    return [((n - length) // 2, length)]


def extend_frames(spec: torch.Tensor, *, width_frames: int, mode: str) -> torch.Tensor:
    """Extend a (n_mels, frames) dB spectrogram to ``width_frames`` frames: "repeat" tiles it,
    "pad" centres it between frames at its own minimum (what silence becomes after the 80 dB clamp)."""
    n = spec.shape[-1]
    if n >= width_frames:
        return spec
    if mode == "repeat":
        return spec.repeat(1, -(-width_frames // n))[:, :width_frames]
    left = (width_frames - n) // 2
    out = spec.new_full((spec.shape[0], width_frames), float(spec.min()))
    out[:, left : left + n] = spec
    return out


def clip_crops(
    clips: Sequence[int],
    specs: Sequence[torch.Tensor],
    cfg: MelConfig,
    *,
    tta: str,
    step_frames: int,
    quantum_frames: int,
) -> list[tuple[int, torch.Tensor]]:
    """``(clip id, crop)`` for every crop of the plan of each clip's (n_mels, frames) dB log-mel.

    With ``cfg.normalize == "clip"`` each whole clip is standardised first and the crops are cut from
    it (the model input then uses normalisation "none"), as in training."""
    out = []
    for clip, spec in zip(clips, specs):
        if cfg.normalize == "clip":
            spec = normalize(spec, cfg)
        mode = extend_mode(spec.shape[-1] * cfg.hop_length, cfg)
        spec = extend_frames(spec, width_frames=cfg.crop_frames, mode=mode)
        plan = crop_plan(spec.shape[-1], tta=tta, width_frames=cfg.crop_frames, step_frames=step_frames,
                         quantum_frames=quantum_frames)
        out.extend((int(clip), spec[:, s : s + length]) for s, length in plan)
    return out


def check_positive(**values: int) -> None:
    """DataError naming the first value that is not a positive integer (a frame count)."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise DataError(f"{name} must be a positive integer (frames), got {v!r}")


def check_scheme(tta: str) -> None:
    if tta not in TTA_SCHEMES:
        raise DataError(f"TTA scheme {tta!r} is unknown: use one of {', '.join(TTA_SCHEMES)}.")
