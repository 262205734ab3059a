"""The 3rd-place waveform effects as torch ops over a batch, on the batch's device (``BatchWaveEffects``).

The per-clip reference is :mod:`fatlib.wave_augment` (librosa, one clip at a time in DataLoader workers).
Here the same effects act on a whole (batch, samples) waveform batch inside the feature step, where the
log-mels are computed anyway (:class:`fatlib.loaders.WaveToMel`):

- ``overdrive``: ``tanh(gain * y)`` on the waveforms (the only effect that needs the samples);
- ``pitch_shift`` (+-300 cents) and the pitch half of ``speed``: the power STFT read at frequency
  ``f / a`` (``a = 2 ** (cents / 1200)``, or the speed), i.e. each clip's mel filter bank evaluated at
  ``a * f`` (:func:`warped_mel_filters`); a tone at f lands in the mel band of ``a * f``;
- ``tempo`` (pitch kept) and the time half of ``speed``: the mel power resampled along frames (output
  frame t reads input frame ``t * rate``, linear interpolation; :func:`stretch_frames`);
- ``reverb``: the expected power of the reference's convolution with an exponentially decaying noise
  impulse response (``(1 - wet)**2`` dry + ``wet**2`` the mel power convolved along frames with the
  response's energy per frame, which decays by 60 dB in rt60; :func:`reverb_frames`): the same decay time
  and wet share, without the per-clip FFT of the whole clip.

The order differs from the reference's (speed, tempo, pitch, reverb, overdrive): overdrive comes first
(it needs the waveform), then pitch, tempo/speed and reverb on the spectrogram.

Draws: with probability ``p`` a clip gets each effect with its own probability, from the same ranges as
:mod:`fatlib.wave_augment` (test_wave_batch checks that they agree). Batches are cut to the frames the
drawn rates need (``frames_needed``): no frames are computed and thrown away.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import DataError

__all__ = ["BatchWaveEffects", "EffectDraws", "RANGES", "warped_mel_filters", "stretch_frames", "reverb_frames",
           "reverb_kernel", "frames_for_rate"]

# effect -> parameter -> (low, high): the defaults of fatlib.wave_augment's functions
RANGES = {
    "speed": {"low": 0.9, "high": 1.1},
    "tempo": {"low": 0.9, "high": 1.1},
    "pitch_shift": {"max_cents": 300.0},
    "reverb": {"rt60_seconds": (0.2, 1.0), "wet": (0.1, 0.5)},
    "overdrive": {"gain_db": (2.0, 10.0)},
}
EFFECT_NAMES = tuple(RANGES)
DECAY_60DB = math.log(1000.0)  # amplitude decay exp(-6.908 t / rt60) reaches -60 dB at rt60


@dataclass
class EffectDraws:
    """Per-clip effect parameters of one batch (tensors of shape (batch,), on the CPU): neutral values
    (1, 0 cents, 0 wet, gain 0 dB = no overdrive) where a clip does not get the effect."""

    speed: torch.Tensor
    tempo: torch.Tensor
    cents: torch.Tensor
    rt60: torch.Tensor
    wet: torch.Tensor
    gain_db: torch.Tensor
    drive: torch.Tensor  # bool: overdrive applied

    @property
    def freq_factor(self) -> torch.Tensor:
        """How much each clip's frequencies are multiplied by (pitch shift times speed)."""
        return self.speed * torch.pow(2.0, self.cents / 1200.0)

    @property
    def time_rate(self) -> torch.Tensor:
        """Input frames per output frame (tempo times speed; > 1: faster, shorter)."""
        return self.speed * self.tempo

    @classmethod
    def neutral(cls, n: int) -> EffectDraws:
        one, zero = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
        return cls(speed=one, tempo=one.clone(), cents=zero, rt60=zero.clone(), wet=zero.clone(),
                   gain_db=zero.clone(), drive=torch.zeros(n, dtype=torch.bool))


def frames_for_rate(frames_out: int, rate: float) -> int:
    """Input frames that ``frames_out`` output frames read at ``rate`` input frames per output frame."""
    return int(math.ceil((frames_out - 1) * rate - 1e-9)) + 1


class BatchWaveEffects:
    """Random waveform effects for a batch, drawn per clip like :class:`fatlib.wave_augment.WaveAugment`
    (same ``p``, ``probs``, ``sample_rate``, ``seed`` and ranges) and applied in :meth:`apply`.

    ``batched`` marks it for :class:`fatlib.loaders.WaveDataset`: training crops are loaded with the
    margin ``max_rate`` needs (:meth:`loaded_frames`) and no per-clip effect runs in the loader.
    Draws come from a CPU ``torch.Generator`` seeded with ``seed`` (None: from torch's global RNG at
    first use, so ``torch.manual_seed`` reproduces a run)."""

    batched = True

    def __init__(self, *, p: float = 0.75, sample_rate: int = 44100, probs: dict[str, float] | None = None,
                 seed: int | None = None):
        from .wave_augment import WaveAugment

        ref = WaveAugment(p=p, sample_rate=sample_rate, probs=probs, seed=seed)  # the same validation
        self.p, self.sample_rate, self.seed, self.probs = ref.p, ref.sample_rate, ref.seed, dict(ref.probs)
        self._gen: torch.Generator | None = None

    @classmethod
    def from_augment(cls, augment) -> BatchWaveEffects:
        """The batched twin of a :class:`fatlib.wave_augment.WaveAugment`."""
        return cls(p=augment.p, sample_rate=augment.sample_rate, probs=augment.probs, seed=augment.seed)

    def __repr__(self):
        return f"BatchWaveEffects(p={self.p}, sample_rate={self.sample_rate}, probs={self.probs}, seed={self.seed})"

    @property
    def max_rate(self) -> float:
        """The largest input frames per output frame a draw can ask for (1 without tempo or speed)."""
        rate = 1.0
        for name in ("speed", "tempo"):
            if self.probs.get(name, 0.0) > 0 and self.p > 0:
                rate *= RANGES[name]["high"]
        return rate

    def loaded_frames(self, frames: int) -> int:
        """Frames a training crop is loaded with so that ``frames`` output frames exist at any draw."""
        return frames_for_rate(frames, self.max_rate)

    def segment_frames(self, loaded: int) -> int:
        """The output frames of a crop loaded with ``loaded`` frames (inverse of :meth:`loaded_frames`)."""
        rate = self.max_rate
        out = int((loaded - 1) / rate + 1e-9) + 1
        while out > 1 and self.loaded_frames(out) > loaded:
            out -= 1
        return out

    @property
    def generator(self) -> torch.Generator:
        if self._gen is None:
            seed = self.seed if self.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
            self._gen = torch.Generator().manual_seed(int(seed))
        return self._gen

    def draw(self, n: int) -> EffectDraws:
        """Parameters for ``n`` clips: each clip gets effects with probability ``p``, then each effect
        with its probability, its parameter uniform in the reference's range."""
        g = self.generator
        d = EffectDraws.neutral(n)

        def uniform(low, high):
            return low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)

        active = torch.rand(n, generator=g, dtype=torch.float64) < self.p
        for name in EFFECT_NAMES:
            on = active & (torch.rand(n, generator=g, dtype=torch.float64) < self.probs.get(name, 0.0))
            r = RANGES[name]
            if name in ("speed", "tempo"):
                setattr(d, name, torch.where(on, uniform(r["low"], r["high"]), getattr(d, name)))
            elif name == "pitch_shift":
                d.cents = torch.where(on, uniform(-r["max_cents"], r["max_cents"]), d.cents)
            elif name == "reverb":
                rt60, wet = uniform(*r["rt60_seconds"]), uniform(*r["wet"])
                d.rt60, d.wet = torch.where(on, rt60, d.rt60), torch.where(on, wet, d.wet)
            else:
                d.gain_db, d.drive = torch.where(on, uniform(*r["gain_db"]), d.gain_db), on
        return d

    def apply(self, logmel, waves: torch.Tensor, *, frames: int, draws: EffectDraws | None = None) -> torch.Tensor:
        """Log-mels (B, feature_rows, ``frames``) of ``waves`` (B, samples) with the effects of ``draws``
        (default: a new draw) applied; ``logmel`` is the :class:`fatlib.logmel.LogMel` of the features."""
        draws = self.draw(len(waves)) if draws is None else draws
        return effect_log_mel(logmel, waves, draws, frames=frames, sample_rate=self.sample_rate)


def effect_log_mel(logmel, waves: torch.Tensor, draws: EffectDraws, *, frames: int, sample_rate: int) -> torch.Tensor:
    """Log-mels (B, feature_rows, frames) of ``waves`` (B, samples) with ``draws`` applied (see the module doc).
    Only the input frames the largest drawn rate needs are computed."""
    if waves.dim() != 2 or len(waves) != len(draws.speed):
        raise DataError(f"effect_log_mel: expected {len(draws.speed)} waveforms (batch, samples), got {tuple(waves.shape)}")
    dev = waves.device
    parts = list(logmel.parts) if len(logmel.parts) else [logmel]
    hop = parts[0].cfg.hop_length
    rate = draws.time_rate
    need = max(frames_for_rate(frames, float(r)) for r in rate)
    have = 1 + waves.shape[-1] // hop
    if need > have:
        raise DataError(f"effect_log_mel: {frames} frames at rate {float(rate.max()):.3f} need {need} input frames "
                        f"({(need - 1) * hop} samples), the batch has {have}; load crops with BatchWaveEffects.loaded_frames")
    x = waves[:, : (need - 1) * hop].float()
    drive = None  # overdrive: tanh(gain * y), applied inside LogMel's chunks (no copy of the batch)
    if bool(draws.drive.any()):
        drive = torch.where(draws.drive, torch.pow(10.0, draws.gain_db / 20.0), torch.zeros_like(draws.gain_db))
        drive = drive.to(dev, torch.float32)
    factor = draws.freq_factor
    warp = bool((factor != 1).any())
    out = []
    for part in parts:
        filters = warped_mel_filters(part.cfg, factor.to(dev)) if warp else None
        mel = part.mel_power(x, filters=filters, drive=drive)  # (B, n_mels, need)
        if bool((rate != 1).any()) or mel.shape[-1] != frames:
            mel = stretch_frames(mel, rate.to(dev), frames=frames)
        if bool((draws.wet > 0).any()):
            mel = reverb_frames(mel, rt60_seconds=draws.rt60.to(dev), wet=draws.wet.to(dev),
                                frames_per_second=sample_rate / part.cfg.hop_length)
        out.append(part._to_db(mel))
    return out[0] if len(out) == 1 else torch.cat(out, dim=1)


def warped_mel_filters(cfg, factor: torch.Tensor) -> torch.Tensor:
    """Each clip's mel filter bank evaluated at ``factor * f`` (B, n_fft // 2 + 1, n_mels) float32, the
    formula of ``librosa.filters.mel`` (Slaney scale and area norm): at factor 1 it is librosa's bank,
    transposed. Applied to a power STFT it gives the mel power of the clip with every frequency
    multiplied by ``factor``. Each frequency lies between two mel points j and j + 1, so only two
    filters are non-zero there (the rising edge of j, the falling edge of j - 1): the bank is built
    from those two weights per (clip, bin), not by evaluating every filter at every bin."""
    import librosa

    dev = factor.device
    mel_f = torch.as_tensor(librosa.mel_frequencies(cfg.n_mels + 2, fmin=cfg.fmin, fmax=cfg.fmax, htk=False),
                            dtype=torch.float64, device=dev)
    fft_f = torch.as_tensor(librosa.fft_frequencies(sr=cfg.sample_rate, n_fft=cfg.n_fft), dtype=torch.float64, device=dev)
    fdiff = mel_f[1:] - mel_f[:-1]
    enorm = 2.0 / (mel_f[2:] - mel_f[:-2])  # (n_mels,)
    f = factor.to(torch.float64)[:, None] * fft_f[None, :]  # (B, F)
    j = torch.searchsorted(mel_f, f, right=True) - 1  # mel_f[j] <= f < mel_f[j + 1]
    inside = (j >= 0) & (j < cfg.n_mels + 1)
    jc = j.clamp(0, cfg.n_mels)
    rise = ((f - mel_f[jc]) / fdiff[jc]).clamp(min=0.0)  # filter j's rising edge
    fall = ((mel_f[jc + 1] - f) / fdiff[jc]).clamp(min=0.0)  # filter j - 1's falling edge
    out = torch.zeros(len(factor), len(fft_f), cfg.n_mels + 2, dtype=torch.float32, device=dev)  # filters -1..n_mels
    pad_norm = torch.cat([enorm.new_zeros(1), enorm, enorm.new_zeros(1)])  # index m + 1 for filter m
    out.scatter_add_(2, (jc + 1)[..., None], (rise * pad_norm[jc + 1] * inside).to(torch.float32)[..., None])
    out.scatter_add_(2, jc[..., None], (fall * pad_norm[jc] * inside).to(torch.float32)[..., None])
    return out[..., 1 : cfg.n_mels + 1]


def stretch_frames(mel: torch.Tensor, rate: torch.Tensor, *, frames: int) -> torch.Tensor:
    """(B, rows, T_in) power -> (B, rows, ``frames``): output frame t is input frame ``t * rate[b]``,
    linearly interpolated (a tempo change by ``rate``: > 1 faster; the frames past the input repeat its last)."""
    t_in = mel.shape[-1]
    pos = torch.arange(frames, device=mel.device, dtype=torch.float64)[None, :] * rate.to(torch.float64)[:, None]
    pos = pos.clamp(max=t_in - 1)
    i0 = pos.floor().long().clamp(max=t_in - 1)
    i1 = (i0 + 1).clamp(max=t_in - 1)
    frac = (pos - i0).to(mel.dtype)[:, None, :]
    idx0 = i0[:, None, :].expand(-1, mel.shape[1], -1)
    idx1 = i1[:, None, :].expand(-1, mel.shape[1], -1)
    return torch.gather(mel, 2, idx0) * (1 - frac) + torch.gather(mel, 2, idx1) * frac


def reverb_kernel(rt60_seconds: torch.Tensor, *, frames_per_second: float, substeps: int = 16) -> torch.Tensor:
    """(B, K) energy per frame of lag of the reference's impulse response (amplitude ``exp(-6.908 t /
    rt60)`` for ``rt60`` seconds, unit energy): a lag of d frames is split linearly between frames
    floor(d) and floor(d) + 1. Clips with rt60 0 get the identity kernel [1, 0, ...]."""
    rt60 = rt60_seconds.to(torch.float64)
    k = max(2, int(math.ceil(float(rt60.max()) * frames_per_second)) + 2)
    lag = (torch.arange(k * substeps, device=rt60.device, dtype=torch.float64) + 0.5) / substeps  # frames
    t = lag[None, :] / frames_per_second  # seconds
    safe = torch.where(rt60 > 0, rt60, torch.ones_like(rt60))[:, None]
    energy = torch.exp(-2 * DECAY_60DB * t / safe) * (t < safe)
    energy = energy / energy.sum(dim=1, keepdim=True)
    i0 = lag.floor().long()
    frac = lag - i0
    kern = torch.zeros(len(rt60), k + 1, dtype=torch.float64, device=rt60.device)
    kern.index_add_(1, i0, energy * (1 - frac))
    kern.index_add_(1, (i0 + 1).clamp(max=k), energy * frac)
    ident = torch.zeros_like(kern)
    ident[:, 0] = 1.0
    return torch.where((rt60 > 0)[:, None], kern, ident)


def reverb_frames(mel: torch.Tensor, *, rt60_seconds: torch.Tensor, wet: torch.Tensor,
                  frames_per_second: float) -> torch.Tensor:
    """Expected power (B, rows, T) of ``(1 - wet) * y + wet * (y * h)`` for a decaying noise response h
    of ``rt60_seconds`` (see :func:`reverb_kernel`): ``(1 - wet)**2 * mel + wet**2 * (mel * kernel)``
    along frames (causal; the tail beyond the segment is dropped, as the reference keeps len(y))."""
    b, rows, t = mel.shape
    kern = reverb_kernel(rt60_seconds, frames_per_second=frames_per_second).to(mel.dtype)  # (B, K)
    k = kern.shape[1]
    weight = kern.flip(-1)[:, None, None, :].expand(-1, rows, 1, -1).reshape(b * rows, 1, k)
    padded = torch.nn.functional.pad(mel.reshape(1, b * rows, t), (k - 1, 0))
    tail = torch.nn.functional.conv1d(padded, weight, groups=b * rows).reshape(b, rows, t)
    w = wet.to(mel.dtype)[:, None, None]
    return (1 - w) ** 2 * mel + w**2 * tail

