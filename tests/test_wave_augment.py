"""Waveform effects: measured pitch/speed changes, length policy, ranges, seeds, DataLoader workers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fatlib.errors import AudioError, DataError
from fatlib.wave_augment import EFFECTS, WaveAugment, overdrive, pitch_shift, reverb, speed, tempo

SR = 16000


def _sine(freq=440.0, seconds=1.0, amp=0.3):
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def _peak_hz(y):
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return np.argmax(spectrum) * SR / len(y)


def test_pitch_shift_moves_the_tone_by_the_drawn_cents_and_keeps_length():
    y = _sine()
    cents = np.random.default_rng(5).uniform(-300, 300)
    out = pitch_shift(y, sample_rate=SR, rng=np.random.default_rng(5))
    assert len(out) == len(y) and out.dtype == np.float32
    assert _peak_hz(out) == pytest.approx(440 * 2 ** (cents / 1200), rel=0.01)
    assert abs(cents) > 20                                  # the check above is not trivial


def test_speed_changes_length_and_pitch_together():
    y = _sine()
    s = np.random.default_rng(1).uniform(0.9, 1.1)
    out = speed(y, sample_rate=SR, rng=np.random.default_rng(1))
    assert abs(len(out) - len(y) / s) <= 1
    assert _peak_hz(out) == pytest.approx(440 * s, rel=0.01)


def test_tempo_changes_length_but_not_pitch():
    y = _sine(seconds=2.0)
    r = np.random.default_rng(3).uniform(0.9, 1.1)
    out = tempo(y, sample_rate=SR, rng=np.random.default_rng(3))
    assert abs(r - 1) > 0.02 and abs(len(out) - len(y) / r) <= 0.01 * len(y)
    assert _peak_hz(out) == pytest.approx(440, rel=0.005)   # speed would move it to 440 * r


def test_reverb_adds_a_decaying_tail_and_keeps_length():
    y = np.zeros(SR, dtype=np.float32)
    y[100] = 1.0
    out = reverb(y, sample_rate=SR, rng=np.random.default_rng(0), rt60_seconds=(0.3, 0.3))
    assert len(out) == len(y)
    assert np.abs(out[:100]).max() < 1e-6                   # causal (FFT rounding only)
    early = np.sum(out[200:1200] ** 2)
    late = np.sum(out[4000:5000] ** 2)
    assert early > 10 * late > 0                            # energy decays after the impulse


def test_overdrive_soft_clips_within_unit_range():
    y = _sine(amp=0.9)
    out = overdrive(y, sample_rate=SR, rng=np.random.default_rng(0))
    assert np.abs(out).max() < 1 and np.abs(out).max() > np.abs(y).max()
    assert np.all(np.diff(out[np.argsort(y)]) >= 0)         # monotonic in the input


def test_wave_augment_probabilities_seed_and_output_type():
    y = _sine()
    assert np.array_equal(WaveAugment(p=0.0, sample_rate=SR, seed=0)(y), y)
    only_drive = WaveAugment(p=1.0, sample_rate=SR, probs={"overdrive": 1.0}, seed=0)
    out = only_drive(y)
    assert out.dtype == np.float32 and len(out) == len(y) and not np.array_equal(out, y)
    a = [WaveAugment(p=1.0, sample_rate=SR, seed=3)(y) for _ in range(2)]
    assert np.array_equal(a[0], a[1])
    torch.manual_seed(4)
    b = WaveAugment(p=1.0, sample_rate=SR)(y)
    torch.manual_seed(4)
    assert np.array_equal(WaveAugment(p=1.0, sample_rate=SR)(y), b)      # seed=None follows torch
    outs = [WaveAugment(p=0.75, sample_rate=SR, seed=s)(y) for s in range(8)]
    assert all(o.dtype == np.float32 and np.isfinite(o).all() for o in outs)
    assert len({o.tobytes() for o in outs}) > 1


def test_wave_augment_rejects_bad_input_and_settings():
    aug = WaveAugment(sample_rate=SR, seed=0)
    with pytest.raises(AudioError, match="mono"):
        aug(np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(AudioError, match="NaN"):
        aug(np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(AudioError, match="float"):
        aug(np.zeros(10, dtype=np.int16))
    with pytest.raises(DataError, match="unknown waveform effects"):
        WaveAugment(probs={"flanger": 0.5})
    with pytest.raises(DataError, match="p="):
        WaveAugment(p=1.5)
    assert set(EFFECTS) == {"speed", "tempo", "pitch_shift", "reverb", "overdrive"}
    assert set(WaveAugment().probs) == {"speed", "pitch_shift", "reverb", "overdrive"}  # tempo: on request


class _Clips(torch.utils.data.Dataset):
    def __init__(self, augment):
        self.augment = augment

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.from_numpy(self.augment(_sine(seconds=0.1)))


def test_dataloader_workers_draw_different_effects():
    aug = WaveAugment(p=1.0, sample_rate=SR, probs={"overdrive": 1.0}, seed=0)
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(_Clips(aug), batch_size=1, num_workers=2)
    first_of_each_worker = [b[0] for b in loader][:2]
    assert not torch.equal(first_of_each_worker[0], first_of_each_worker[1])


def test_dataloader_workers_follow_torch_seed_and_never_repeat():
    """seed=None: each worker's stream comes from its torch worker seed, so a run is reproduced by
    torch.manual_seed, another seed changes it, and no two clips (of any worker) get the same draw."""
    aug = WaveAugment(p=1.0, sample_rate=SR, probs={"overdrive": 1.0})

    def run(seed):
        torch.manual_seed(seed)
        return torch.cat(list(torch.utils.data.DataLoader(_Clips(aug), batch_size=1, num_workers=2)))

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert len({round(float(x.abs().max()), 6) for x in a}) == len(a)  # 4 different gains
