"""Batch augmentations of log-mel spectrograms as fastai callbacks (training batches only).

Each augmentation is a plain function on a batch, ``op(x, y, *, generator, ...) -> (x, y)`` with ``x``
a float tensor ``(batch, channels, n_mels, frames)`` and ``y`` float soft targets ``(batch, n_classes)``,
wrapped in a small fastai :class:`~fastai.callback.core.Callback` that applies it in ``before_batch`` of
training batches (``run_valid = False``), in the style of ``fastai/callback/mixup.py``. The callbacks
change only ``learn.xb[0]`` / ``learn.yb[0]`` of the current batch and never swap the loss function,
so a cancelled batch or fit leaves nothing to restore. Targets are mixed directly (the losses of
:mod:`fatlib.losses` accept soft targets); a loss with integer targets (``y_int``) is refused.

Random draws come from the callback's own CPU ``torch.Generator`` (``seed=None`` seeds it from torch's
global RNG, so ``torch.manual_seed`` still makes runs reproducible); tensors may live on CPU or CUDA and
keep their dtype. :func:`apply_augment` runs a callback on ``(x, y)`` without a Learner (tests, plots).

Names for stage configs: :data:`AUGMENTS` / :func:`get_augment` ("specmix", "mixup", "ormixup",
"mixup_specmix", "specaugment", "zoomcrop", and "ormixup_wave", which mixes waveforms before the log-mel). There is deliberately no time flip (9th place: lowers CV).
"""
from __future__ import annotations

import types
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from fastai.callback.core import Callback

from fatlib.errors import DataError

__all__ = [
    "AUGMENTS", "SPECTROGRAM_AUGMENTS", "BatchAugment", "Mixup", "MixupSpecMix", "ORMixup", "SpecAugment", "SpecMix",
    "SpecMixParams", "WaveORMixup", "ZoomCrop", "apply_augment", "check_batch", "get_augment", "make_generator",
    "mixup", "or_mixup", "spec_augment", "specmix", "specmix_mask", "specmix_params", "specmix_share",
    "zoom_crop",
]


# ----------------------------------------------------------------------------------------- helpers
def make_generator(seed: int | None = None) -> torch.Generator:
    """A CPU generator seeded with ``seed``, or from torch's global RNG when ``seed`` is None."""
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise DataError(f"seed must be an int or None, got {seed!r}")
    return torch.Generator().manual_seed(int(seed))


def check_batch(x, y=None, *, where: str = "augment") -> None:
    """Raise DataError unless ``x`` is a float (B, C, M, T) tensor and ``y`` float (B, n_classes)."""
    if not torch.is_tensor(x) or x.ndim != 4 or not x.is_floating_point():
        got = f"{type(x).__name__} {tuple(x.shape)} {x.dtype}" if torch.is_tensor(x) else type(x).__name__
        raise DataError(f"{where}: x must be a float tensor (batch, channels, n_mels, frames), got {got}; "
                        "pass spectrogram batches (fatlib.features.to_model_input) as learn.xb[0]")
    if y is None:
        return
    if not torch.is_tensor(y) or y.ndim != 2 or not y.is_floating_point() or y.shape[0] != x.shape[0]:
        got = f"{type(y).__name__} {tuple(y.shape)} {y.dtype}" if torch.is_tensor(y) else type(y).__name__
        raise DataError(f"{where}: y must be float multi-hot targets (batch={x.shape[0]}, n_classes), "
                        f"got {got}; use float32 targets, not class indices")


def _check_range(name: str, value: float, low: float, high: float) -> float:
    if not low <= float(value) <= high:
        raise DataError(f"{name}={value!r} is outside [{low}, {high}]; choose a value in that range")
    return float(value)


def _uniform(n: int, low: float, high: float, *, generator: torch.Generator) -> torch.Tensor:
    """n float64 draws from U(low, high) on the CPU."""
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _lerp(a: torch.Tensor, b: torch.Tensor, weight_b: torch.Tensor) -> torch.Tensor:
    """Per-sample ``(1 - w) a + w b`` with ``w`` of shape (B,), in ``a``'s dtype and device."""
    w = weight_b.to(device=a.device, dtype=a.dtype).view(-1, *([1] * (a.ndim - 1)))
    return a + w * (b - a)


def _permutation(batch_size: int, *, generator: torch.Generator, device) -> torch.Tensor:
    return torch.randperm(batch_size, generator=generator).to(device)


# ----------------------------------------------------------------------------------------- SpecMix
@dataclass
class SpecMixParams:
    """Per-sample band and strip: rows [f0, f0+f) and frames [t0, t0+t), all int64 (B,) tensors."""

    f0: torch.Tensor
    f: torch.Tensor
    t0: torch.Tensor
    t: torch.Tensor


def specmix_params(batch_size: int, n_mels: int, n_frames: int, *, generator: torch.Generator,
                   max_band: float = 0.25, max_strip: float = 0.25) -> SpecMixParams:
    """Draw f ~ U{0..F-1}, t ~ U{0..T-1} (F = max_band*n_mels, T = max_strip*n_frames, at least 1),
    f0 ~ U[0, n_mels - f), t0 ~ U[0, n_frames - t), as in the 12th-place code."""
    band_max = max(1, int(max_band * n_mels))
    strip_max = max(1, int(max_strip * n_frames))
    f = torch.randint(0, band_max, (batch_size,), generator=generator)
    t = torch.randint(0, strip_max, (batch_size,), generator=generator)
    # offsets uniform over the positions that keep the band inside the axis
    f0 = (torch.rand(batch_size, generator=generator, dtype=torch.float64) * (n_mels - f)).long()
    t0 = (torch.rand(batch_size, generator=generator, dtype=torch.float64) * (n_frames - t)).long()
    return SpecMixParams(f0=f0, f=f, t0=t0, t=t)


def specmix_mask(params: SpecMixParams, n_mels: int, n_frames: int, *, device=None) -> torch.Tensor:
    """Bool (B, 1, n_mels, n_frames): True where the pixel is taken from the partner (band OR strip)."""
    rows = torch.arange(n_mels, device=device).view(1, -1, 1)
    cols = torch.arange(n_frames, device=device).view(1, 1, -1)
    f0, f, t0, t = (v.to(device).view(-1, 1, 1) for v in (params.f0, params.f, params.t0, params.t))
    band = (rows >= f0) & (rows < f0 + f)
    strip = (cols >= t0) & (cols < t0 + t)
    return (band | strip).unsqueeze(1)


def specmix_share(params: SpecMixParams, n_mels: int, n_frames: int) -> torch.Tensor:
    """a = f/v + t/tau - (f/v)(t/tau): the exact share of partner pixels, float64 (B,)."""
    fv = params.f.double() / n_mels
    tt = params.t.double() / n_frames
    return fv + tt - fv * tt


def specmix(x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator, max_band: float = 0.25,
            max_strip: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """SpecMix (12th place): band + strip from a partner (batch permutation); y = (1-a) y1 + a y2."""
    batch, _, n_mels, n_frames = x.shape
    perm = _permutation(batch, generator=generator, device=x.device)
    params = specmix_params(batch, n_mels, n_frames, generator=generator, max_band=max_band,
                            max_strip=max_strip)
    mask = specmix_mask(params, n_mels, n_frames, device=x.device)
    x_new = torch.where(mask, x[perm], x)
    y_new = _lerp(y, y[perm], specmix_share(params, n_mels, n_frames))
    return x_new, y_new


# ----------------------------------------------------------------------------------------- mixups
def mixup(x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator, alpha: float = 0.4
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """mixup: lam ~ Beta(alpha, alpha) per sample, lam = max(lam, 1-lam) (as fastai), the sample
    keeps weight lam and its partner 1-lam, on inputs and targets alike."""
    batch = x.shape[0]
    # Beta draws through numpy, seeded from the torch generator so one seed drives everything
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator).item()))
    lam = torch.from_numpy(rng.beta(alpha, alpha, size=batch))
    lam = torch.maximum(lam, 1 - lam)
    perm = _permutation(batch, generator=generator, device=x.device)
    return _lerp(x, x[perm], 1 - lam), _lerp(y, y[perm], 1 - lam)


def or_mixup(x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator, p: float = 0.5,
             low: float = 0.4, high: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    """OR-mixup (3rd place): with probability p per sample, x = w x1 + (1-w) x2 with w ~ U(low, high)
    and y = clip(y1 + y2, 0, 1) (a mix of two sounds contains both). Works on any (B, ...) x, so the
    same function mixes waveforms (B, samples) or spectrograms; on dB spectrograms the mix is a
    weighted mean of log-mels, not of the sounds."""
    batch = x.shape[0]
    perm = _permutation(batch, generator=generator, device=x.device)
    w_partner = 1 - _uniform(batch, low, high, generator=generator)
    chosen = torch.rand(batch, generator=generator) < p
    w_partner = torch.where(chosen, w_partner, torch.zeros_like(w_partner))
    y_or = (y + y[perm]).clamp(0, 1)
    y_new = torch.where(chosen.to(y.device).view(-1, 1), y_or, y)
    # only the chosen rows are mixed (the others are x as it is): on 8-12 s waveform batches a gather and the
    # arithmetic of half the batch instead of all of it
    rows = chosen.nonzero().view(-1).to(x.device)
    x_new = x.clone()
    if len(rows):
        x_new[rows] = _lerp(x[rows], x[perm[rows]], w_partner[chosen])
    return x_new, y_new


# ---------------------------------------------------------------------------- masks, zoom and crop
def _axis_masks(n_masks: int, size: int, max_frac: float, batch: int, *, generator, device) -> torch.Tensor:
    """Bool (B, size): union of n_masks spans, each of width U(0, max_frac) * size at a random start."""
    pos = torch.arange(size, device=device).view(1, 1, -1)
    width = (_uniform(batch * n_masks, 0.0, max_frac, generator=generator) * size).long()
    start = (torch.rand(batch * n_masks, generator=generator, dtype=torch.float64) * (size - width + 1)).long()
    width, start = width.view(batch, n_masks, 1).to(device), start.view(batch, n_masks, 1).to(device)
    return ((pos >= start) & (pos < start + width)).any(dim=1)


def spec_augment(x: torch.Tensor, *, generator: torch.Generator, n_masks: int = 2, max_freq: float = 0.15,
                 max_time: float = 0.3, fill: str = "mean") -> torch.Tensor:
    """SpecAugment masks (9th place): ``n_masks`` frequency masks of width U(0, max_freq) * n_mels and
    ``n_masks`` time masks of width U(0, max_time) * frames per sample. ``fill="mean"`` writes each
    sample's own mean (per channel), ``fill="zero"`` writes 0, which is the mean of a per-clip
    standardised input (normalize="clip"); targets are unchanged."""
    if fill not in ("mean", "zero"):
        raise DataError(f"fill={fill!r} is not 'mean' or 'zero'")
    batch, _, n_mels, n_frames = x.shape
    freq = _axis_masks(n_masks, n_mels, max_freq, batch, generator=generator, device=x.device)
    time = _axis_masks(n_masks, n_frames, max_time, batch, generator=generator, device=x.device)
    mask = (freq.view(batch, 1, n_mels, 1) | time.view(batch, 1, 1, n_frames))
    value = x.mean(dim=(2, 3), keepdim=True) if fill == "mean" else torch.zeros((), dtype=x.dtype,
                                                                                  device=x.device)
    return torch.where(mask, value, x)


def freq_shift(x: torch.Tensor, *, generator: torch.Generator, max_shift: float = 0.05, p: float = 0.5) -> torch.Tensor:
    """Shift each sample's mel axis by a random whole number of bins in [-max_shift, max_shift] x n_mels
    (probability ``p``), edge bins repeated into the gap: on the mel scale's upper, near-logarithmic
    part a shift is a change of pitch (5 % of 128 mels ~ +-1 semitone up there), so a class is not tied
    to one recording's tuning or microphone. Targets are unchanged."""
    batch, _, n_mels, _ = x.shape
    most = int(round(max_shift * n_mels))
    if most == 0 or p == 0:
        return x
    shift = torch.randint(-most, most + 1, (batch,), generator=generator)
    shift = torch.where(torch.rand(batch, generator=generator) < p, shift, torch.zeros_like(shift))
    rows = (torch.arange(n_mels)[None, :] - shift[:, None]).clamp(0, n_mels - 1).to(x.device)
    return torch.gather(x, 2, rows[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[3]))


def zoom_crop(x: torch.Tensor, *, generator: torch.Generator, max_zoom: float = 1.05, p: float = 0.75
              ) -> torch.Tensor:
    """Zoom and crop (12th place): with probability p per sample, enlarge by z ~ U(1, max_zoom) on both
    axes (bilinear) and crop a random window of the original size; other samples pass unchanged."""
    batch = x.shape[0]
    zoom = _uniform(batch, 1.0, max_zoom, generator=generator)
    zoom = torch.where(torch.rand(batch, generator=generator) < p, zoom, torch.ones_like(zoom))
    scale = 1.0 / zoom                                    # share of each axis that stays visible
    shift = (2 * torch.rand(batch, 2, generator=generator, dtype=torch.float64) - 1) * (1 - scale)[:, None]
    theta = torch.zeros(batch, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    grid = F.affine_grid(theta.to(device=x.device, dtype=work.dtype), list(work.shape), align_corners=False)
    out = F.grid_sample(work, grid, mode="bilinear", padding_mode="border", align_corners=False)
    keep = (zoom == 1.0).to(x.device).view(-1, 1, 1, 1)   # untouched samples stay bit-identical
    return torch.where(keep, x, out.to(x.dtype))


# ----------------------------------------------------------------------------------------- callbacks
class BatchAugment(Callback):
    """Base: applies :meth:`augment` to ``learn.xb[0]``, ``learn.yb[0]`` of training batches only."""

    run_valid = False

    def __init__(self, *, seed: int | None = None):
        super().__init__()
        self.seed = seed
        self.generator = make_generator(seed)

    def before_fit(self):
        if getattr(getattr(self.learn, "loss_func", None), "y_int", False):
            raise DataError(f"{type(self).__name__} mixes soft float targets but the Learner's loss expects "
                            "class indices (y_int); use fatlib.losses.get_loss('bce'|'lsep'|'focal')")

    def before_batch(self):
        x, y = self.learn.xb[0], self.learn.yb[0]
        check_batch(x, y, where=type(self).__name__)
        x_new, y_new = self.augment(x, y)
        self.learn.xb = (x_new, *self.learn.xb[1:])
        self.learn.yb = (y_new, *self.learn.yb[1:])

    def augment(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class SpecMix(BatchAugment):
    """SpecMix (12th place); ``max_band``/``max_strip``: largest band/strip as a share of the axis."""

    def __init__(self, *, max_band: float = 0.25, max_strip: float = 0.25, seed: int | None = None):
        super().__init__(seed=seed)
        self.max_band = _check_range("max_band", max_band, 0.0, 1.0)
        self.max_strip = _check_range("max_strip", max_strip, 0.0, 1.0)

    def augment(self, x, y):
        return specmix(x, y, generator=self.generator, max_band=self.max_band, max_strip=self.max_strip)


class Mixup(BatchAugment):
    """mixup with Beta(alpha, alpha), alpha 0.4 (9th place; 1.0 early in training)."""

    def __init__(self, *, alpha: float = 0.4, seed: int | None = None):
        super().__init__(seed=seed)
        if not alpha > 0:
            raise DataError(f"alpha={alpha!r} must be > 0 (Beta distribution parameter)")
        self.alpha = float(alpha)

    def augment(self, x, y):
        return mixup(x, y, generator=self.generator, alpha=self.alpha)


class ORMixup(BatchAugment):
    """OR-mixup (3rd place): weight U(low, high), targets clip(y1 + y2, 0, 1), probability p per sample."""

    def __init__(self, *, p: float = 0.5, low: float = 0.4, high: float = 0.6, seed: int | None = None):
        super().__init__(seed=seed)
        self.p = _check_range("p", p, 0.0, 1.0)
        self.low = _check_range("low", low, 0.0, 1.0)
        self.high = _check_range("high", high, self.low, 1.0)

    def augment(self, x, y):
        return or_mixup(x, y, generator=self.generator, p=self.p, low=self.low, high=self.high)


class MixupSpecMix(BatchAugment):
    """mixup, then SpecMix on the mixed batch (12th place): up to 4 source clips per sample; targets
    are the same linear combination as the pixels (mixup weights, then the partner pixel share)."""

    def __init__(self, *, alpha: float = 0.4, max_band: float = 0.25, max_strip: float = 0.25,
                 seed: int | None = None):
        super().__init__(seed=seed)
        if not alpha > 0:
            raise DataError(f"alpha={alpha!r} must be > 0 (Beta distribution parameter)")
        self.alpha = float(alpha)
        self.max_band = _check_range("max_band", max_band, 0.0, 1.0)
        self.max_strip = _check_range("max_strip", max_strip, 0.0, 1.0)

    def augment(self, x, y):
        x, y = mixup(x, y, generator=self.generator, alpha=self.alpha)
        return specmix(x, y, generator=self.generator, max_band=self.max_band, max_strip=self.max_strip)


class SpecAugment(BatchAugment):
    """SpecAugment masks (9th place): see :func:`spec_augment`."""

    def __init__(self, *, n_masks: int = 2, max_freq: float = 0.15, max_time: float = 0.3,
                 fill: str = "mean", seed: int | None = None):
        super().__init__(seed=seed)
        if int(n_masks) != n_masks or n_masks < 0:
            raise DataError(f"n_masks={n_masks!r} must be a non-negative int")
        if fill not in ("mean", "zero"):
            raise DataError(f"fill={fill!r} is not 'mean' or 'zero'")
        self.n_masks, self.fill = int(n_masks), fill
        self.max_freq = _check_range("max_freq", max_freq, 0.0, 1.0)
        self.max_time = _check_range("max_time", max_time, 0.0, 1.0)

    def augment(self, x, y):
        return spec_augment(x, generator=self.generator, n_masks=self.n_masks, max_freq=self.max_freq,
                            max_time=self.max_time, fill=self.fill), y


class ZoomCrop(BatchAugment):
    """Random zoom 1.0-``max_zoom`` with probability p, cropped back to the same size (12th place)."""

    def __init__(self, *, max_zoom: float = 1.05, p: float = 0.75, seed: int | None = None):
        super().__init__(seed=seed)
        self.max_zoom = _check_range("max_zoom", max_zoom, 1.0, 2.0)
        self.p = _check_range("p", p, 0.0, 1.0)

    def augment(self, x, y):
        return zoom_crop(x, generator=self.generator, max_zoom=self.max_zoom, p=self.p), y


class FreqShift(BatchAugment):
    """Random shift of the mel axis (a change of pitch on the upper mel scale): see :func:`freq_shift`."""

    def __init__(self, *, max_shift: float = 0.05, p: float = 0.5, seed: int | None = None):
        super().__init__(seed=seed)
        self.max_shift = _check_range("max_shift", max_shift, 0.0, 0.5)
        self.p = _check_range("p", p, 0.0, 1.0)

    def augment(self, x, y):
        return freq_shift(x, generator=self.generator, max_shift=self.max_shift, p=self.p), y


class WaveORMixup(ORMixup):
    """OR-mixup of waveforms (3rd place: "a mix of two sounds lets you hear both"): the same draws as
    :class:`ORMixup`, applied to the (batch, samples) waveform batch of the on-the-fly path before
    ``fatlib.loaders.WaveToMel`` turns it into log-mels (``order`` below WaveToMel's), so the model
    hears the sum of the two sounds. Needs ``wave_augment`` training (a StageConfig refuses it without)."""

    order = -20
    needs_waves = True

    def before_batch(self):
        x, y = self.learn.xb[0], self.learn.yb[0]
        if not torch.is_tensor(x) or x.ndim != 2 or not x.is_floating_point():
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise DataError(f"WaveORMixup: x must be a float waveform batch (batch, samples), got {got}; "
                            "use it with wave_augment = true (on-the-fly waveforms)")
        check_batch(x[:, None, None, :], y, where="WaveORMixup")
        x_new, y_new = self.augment(x, y)
        self.learn.xb = (x_new, *self.learn.xb[1:])
        self.learn.yb = (y_new, *self.learn.yb[1:])


AUGMENTS: dict[str, type[BatchAugment]] = {
    "specmix": SpecMix,
    "mixup": Mixup,
    "ormixup": ORMixup,
    "mixup_specmix": MixupSpecMix,
    "specaugment": SpecAugment,
    "zoomcrop": ZoomCrop,
    "freqshift": FreqShift,
    "ormixup_wave": WaveORMixup,
}
# the ones that work on log-mel batches (the rest need on-the-fly waveforms: wave_augment)
SPECTROGRAM_AUGMENTS = [name for name, cls in AUGMENTS.items() if cls is not WaveORMixup]


def get_augment(name: str, **kwargs) -> BatchAugment:
    """A new callback by name ("specmix", "mixup", ...; case, '-' and '_' ignored); kwargs go to the class."""
    key = _augment_key(name)
    found = {_augment_key(k): k for k in AUGMENTS}
    if key not in found:
        raise DataError(f"unknown augmentation {name!r}; choose one of {sorted(AUGMENTS)}")
    return AUGMENTS[found[key]](**kwargs)


def _augment_key(name) -> str:
    return str(name).lower().replace("-", "").replace("_", "")


def apply_augment(cb: Callback, x: torch.Tensor, y: torch.Tensor, *, training: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``cb``'s ``before_batch`` on (x, y) through a stand-in learner; returns the new (x, y).

    With ``training=False`` the callback sees a validation batch (unchanged when ``run_valid=False``).
    """
    fake = types.SimpleNamespace(xb=(x,), yb=(y,), training=training)
    previous = cb.__dict__.get("learn")
    cb.learn = fake
    try:
        cb("before_batch")
    finally:
        cb.learn = previous
    return fake.xb[0], fake.yb[0]
