"""Waveform effects of the 3rd-place solution: pitch shift, speed, reverb, overdrive (``WaveAugment``).

Each effect is a function ``effect(y, *, sample_rate, rng) -> y`` on a mono float32 1-D waveform.
:class:`WaveAugment` applies them with probability ``p`` per clip (0.75 in the 3rd-place solution), each
effect then with its own probability, in the order speed, tempo, pitch shift, reverb, overdrive
(``tempo`` changes the tempo and keeps the pitch; ``speed`` changes both; the default set has speed, not tempo). It is a plain
callable ``y -> y`` meant for a torch Dataset's ``__getitem__`` (the on-the-fly path in
:mod:`fatlib.loaders`).

Length policy: ``speed`` and ``tempo`` change the length (a clip played at speed s has ``round(len(y) / s)``
samples: +-10 % at the default range); every other effect keeps the length (reverb keeps the first
``len(y)`` samples of the convolution, so the tail beyond the clip is dropped). The caller fixes the
length afterwards (``fatlib.audio.fix_length`` or its crop).
"""
from __future__ import annotations

import os
from typing import Callable

import librosa
import numpy as np
from scipy.signal import fftconvolve

from fatlib.errors import AudioError, DataError

__all__ = ["EFFECTS", "WaveAugment", "overdrive", "pitch_shift", "reverb", "speed", "tempo"]


def _check_wave(y, *, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.floating):
        raise AudioError(f"{where}: expected a non-empty mono float waveform (samples,), got shape {y.shape} "
                         f"dtype {y.dtype}; load clips with fatlib.audio.load_audio")
    if not np.isfinite(y).all():
        raise AudioError(f"{where}: waveform has NaN or inf samples; check the source file")
    return y.astype(np.float32, copy=False)


def pitch_shift(y: np.ndarray, *, sample_rate: int, rng: np.random.Generator,
                max_cents: float = 300.0) -> np.ndarray:
    """Shift the pitch by U(-max_cents, +max_cents) cents (librosa phase vocoder); same length."""
    cents = rng.uniform(-max_cents, max_cents)
    return librosa.effects.pitch_shift(y, sr=sample_rate, n_steps=cents / 100.0, bins_per_octave=12)


def speed(y: np.ndarray, *, sample_rate: int, rng: np.random.Generator, low: float = 0.9,
          high: float = 1.1) -> np.ndarray:
    """Play at speed s ~ U(low, high) (tempo and pitch change together): ``round(len(y) / s)`` samples."""
    s = rng.uniform(low, high)
    return librosa.resample(y, orig_sr=sample_rate * s, target_sr=sample_rate, res_type="soxr_mq")


def tempo(y: np.ndarray, *, sample_rate: int, rng: np.random.Generator, low: float = 0.9,
          high: float = 1.1) -> np.ndarray:
    """Change the tempo by r ~ U(low, high) without changing the pitch (``librosa.effects.time_stretch``,
    phase vocoder): about ``len(y) / r`` samples."""
    r = rng.uniform(low, high)
    return librosa.effects.time_stretch(y, rate=r)


def reverb(y: np.ndarray, *, sample_rate: int, rng: np.random.Generator, rt60_seconds=(0.2, 1.0),
           wet=(0.1, 0.5)) -> np.ndarray:
    """Synthetic room: convolve with an exponentially decaying noise impulse response (decay by 60 dB
    in rt60 ~ U(rt60_seconds) s, unit energy) and mix ``wet`` ~ U(wet) of it with the dry clip."""
    rt60 = rng.uniform(*rt60_seconds)
    n = max(1, int(rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    ir = rng.standard_normal(n) * np.exp(-6.908 * t / rt60)    # ln(1000) = 6.908: -60 dB at rt60
    ir /= np.sqrt(np.sum(ir**2))
    wet_share = rng.uniform(*wet)
    tail = fftconvolve(y, ir.astype(np.float32), mode="full")[: len(y)]
    return (1 - wet_share) * y + wet_share * tail


def overdrive(y: np.ndarray, *, sample_rate: int, rng: np.random.Generator, gain_db=(2.0, 10.0)
              ) -> np.ndarray:
    """Overdrive: amplify by U(gain_db) dB then soft-clip with tanh (output within (-1, 1))."""
    gain = 10.0 ** (rng.uniform(*gain_db) / 20.0)
    return np.tanh(gain * y)


EFFECTS: dict[str, Callable[..., np.ndarray]] = {
    "speed": speed, "tempo": tempo, "pitch_shift": pitch_shift, "reverb": reverb, "overdrive": overdrive,
}
DEFAULT_EFFECTS = ("speed", "pitch_shift", "reverb", "overdrive")  # WaveAugment's default set


class WaveAugment:
    """Random waveform effects: with probability ``p`` a clip gets each effect with its own probability.

    ``probs`` maps effect names (``EFFECTS``) to probabilities (default 0.5 each; an effect left out
    is never applied). ``sample_rate`` in Hz. Draws come from a numpy Generator seeded with ``seed``;
    inside DataLoader workers each worker gets its own stream, mixed from ``seed`` and the worker's
    torch seed, so workers do not repeat each other and ``torch.manual_seed`` + ``seed`` reproduce a run.
    With ``seed=None`` outside workers the stream is seeded from torch's global RNG (``torch.manual_seed``).
    """

    def __init__(self, *, p: float = 0.75, sample_rate: int = 44100, probs: dict[str, float] | None = None,
                 seed: int | None = None):
        if not 0.0 <= p <= 1.0:
            raise DataError(f"p={p!r} must be a probability in [0, 1]")
        if int(sample_rate) != sample_rate or sample_rate <= 0:
            raise DataError(f"sample_rate={sample_rate!r} must be a positive int (Hz)")
        probs = {name: 0.5 for name in DEFAULT_EFFECTS} if probs is None else dict(probs)
        unknown = sorted(set(probs) - set(EFFECTS))
        if unknown:
            raise DataError(f"unknown waveform effects {unknown}; choose from {sorted(EFFECTS)}")
        bad = {k: v for k, v in probs.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise DataError(f"effect probabilities {bad} must be in [0, 1]")
        self.p, self.sample_rate, self.seed = float(p), int(sample_rate), seed
        self.probs = {name: float(probs[name]) for name in EFFECTS if name in probs}   # fixed order
        self._rng, self._owner = None, None

    def __repr__(self):
        return f"WaveAugment(p={self.p}, sample_rate={self.sample_rate}, probs={self.probs}, seed={self.seed})"

    @property
    def rng(self) -> np.random.Generator:
        """This process's (DataLoader worker's) generator, created on first use."""
        import torch
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        owner = (os.getpid(), None if info is None else info.id)
        if self._rng is None or self._owner != owner:
            entropy = [] if self.seed is None else [int(self.seed)]
            if info is not None:
                entropy.append(int(info.seed) % 2**63)
            elif self.seed is None:                          # follow torch.manual_seed like fatlib.augment
                entropy.append(int(torch.randint(0, 2**62, (1,)).item()))
            self._rng = np.random.default_rng(entropy)
            self._owner = owner
        return self._rng

    def __call__(self, y: np.ndarray) -> np.ndarray:
        y = _check_wave(y, where="WaveAugment input")
        rng = self.rng
        if rng.random() >= self.p:
            return y
        for name, prob in self.probs.items():
            if rng.random() < prob:
                y = EFFECTS[name](y, sample_rate=self.sample_rate, rng=rng).astype(np.float32, copy=False)
        return _check_wave(y, where=f"WaveAugment output ({self!r})")
