"""Batched waveform effects (fatlib.wave_batch) against the per-clip librosa reference (fatlib.wave_augment),
compared on the spectrum: the same shift in cents, the same tempo ratio, the same decay time."""
from __future__ import annotations

import inspect

import librosa
import numpy as np
import pytest
import torch

from fatlib import wave_augment
from fatlib.errors import DataError
from fatlib.features import get_preset
from fatlib.logmel import LogMel
from fatlib.wave_batch import (
    RANGES,
    BatchWaveEffects,
    EffectDraws,
    effect_log_mel,
    frames_for_rate,
    warped_mel_filters,
)

SR = 22050
CFG = get_preset("log128", sample_rate=SR, fmax=SR / 2, n_fft=1024, hop_length=256, crop_frames=64, crop_frames_max=None)


def _draws(n=1, **values):
    d = EffectDraws.neutral(n)
    for name, v in values.items():
        setattr(d, name, torch.as_tensor(v).reshape(n) if name != "drive" else torch.as_tensor(v).reshape(n).bool())
    return d


def _frames(y):
    return 1 + len(y) // CFG.hop_length


def _mel_power_ref(y):
    """Mel power (n_mels, frames) of a reference (librosa-processed) waveform."""
    return LogMel(CFG).mel_power(torch.from_numpy(np.asarray(y, np.float32))[None])[0].numpy()


def _mel_power_batched(y, draws, frames=None):
    x = torch.from_numpy(np.asarray(y, np.float32))[None]
    frames = frames or int(_frames(y) / float(draws.time_rate[0]) - 2)
    logmel = effect_log_mel(LogMel(CFG), x, draws, frames=frames, sample_rate=SR)[0].numpy()
    return np.clip(np.exp(logmel) - CFG.log_offset, 0, None)


def _centroid_hz(mel_power):
    centres = librosa.mel_frequencies(CFG.n_mels + 2, fmin=CFG.fmin, fmax=CFG.fmax)[1:-1]
    w = mel_power.sum(axis=-1)
    return float((w * centres).sum() / w.sum())


def _harmonic_tone(f0=300.0, seconds=2.0):
    t = np.arange(int(seconds * SR)) / SR
    return sum(0.2 / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 6)).astype(np.float32)


def _bursts(seconds=3.0, at=(0.5, 1.7), length=0.25, freq=1000.0):
    y = np.zeros(int(seconds * SR), np.float32)
    t = np.arange(int(length * SR)) / SR
    for start in at:
        i = int(start * SR)
        y[i:i + len(t)] = 0.5 * np.sin(2 * np.pi * freq * t) * np.hanning(len(t))
    return y


def _burst_gap_frames(mel_power):
    """Frames between the two bursts' energy peaks."""
    e = mel_power.sum(axis=0)
    half = len(e) // 2
    first, second = int(np.argmax(e[:half])), half + int(np.argmax(e[half:]))
    return second - first


def _rt60_seconds(mel_power, frames_per_second):
    """Decay time: the slope of the frame energy (dB) from -5 to -25 dB below its peak, extrapolated to 60 dB."""
    db = 10 * np.log10(mel_power.sum(axis=0) + 1e-20)
    peak = int(np.argmax(db))
    tail = db[peak:] - db[peak]
    idx = np.flatnonzero((tail < -5) & (tail > -25))
    idx = idx[idx < np.flatnonzero(tail < -25)[0]]
    slope = np.polyfit(idx / frames_per_second, tail[idx], 1)[0]
    return -60.0 / slope


def test_ranges_are_the_references_defaults():
    for name, params in RANGES.items():
        sig = inspect.signature(wave_augment.EFFECTS[name]).parameters
        for key, value in params.items():
            assert sig[key].default == value, (name, key)


def test_warped_filters_at_factor_one_are_librosas_bank():
    fb = librosa.filters.mel(sr=SR, n_fft=CFG.n_fft, n_mels=CFG.n_mels, fmin=CFG.fmin, fmax=CFG.fmax)
    got = warped_mel_filters(CFG, torch.ones(2, dtype=torch.float64))
    assert got.shape == (2, CFG.n_fft // 2 + 1, CFG.n_mels)
    np.testing.assert_allclose(got[1].numpy().T, fb, atol=1e-6 * fb.max())


def test_neutral_draws_give_the_plain_log_mel():
    y = _harmonic_tone()
    x = torch.from_numpy(y)[None, : 171 * CFG.hop_length]       # a crop as WaveDataset loads it: 172 frames
    got = effect_log_mel(LogMel(CFG), x, EffectDraws.neutral(1), frames=172, sample_rate=SR)
    torch.testing.assert_close(got, LogMel(CFG)(x))


@pytest.mark.parametrize("cents", [250.0, -200.0])
def test_pitch_shift_moves_the_spectrum_by_the_same_cents_as_librosa(cents):
    y = _harmonic_tone()
    ref = _mel_power_ref(librosa.effects.pitch_shift(y, sr=SR, n_steps=cents / 100.0, bins_per_octave=12))
    got = _mel_power_batched(y, _draws(cents=cents), frames=ref.shape[1])
    base = _centroid_hz(_mel_power_ref(y))
    cents_ref = 1200 * np.log2(_centroid_hz(ref) / base)
    cents_got = 1200 * np.log2(_centroid_hz(got) / base)
    assert abs(cents_ref - cents) < 0.2 * abs(cents)         # the measure (mel-band centroid) sees the shift
    assert abs(cents_got - cents_ref) < 10
    ref_db, got_db = (10 * np.log10(m.mean(axis=1) + 1e-10) for m in (ref, got))
    loud = ref_db > ref_db.max() - 30
    assert np.corrcoef(ref_db[loud], got_db[loud])[0, 1] > 0.95  # the same bands carry the partials


@pytest.mark.parametrize("rate", [0.9, 1.1])
def test_tempo_changes_the_time_axis_by_the_same_ratio_as_librosa_and_keeps_pitch(rate):
    y = _bursts()
    ref = _mel_power_ref(librosa.effects.time_stretch(y, rate=rate))
    got = _mel_power_batched(y, _draws(tempo=rate), frames=min(ref.shape[1], int(_frames(y) / rate) - 2))
    gap = _burst_gap_frames(_mel_power_ref(y))
    assert gap / _burst_gap_frames(ref) == pytest.approx(rate, abs=0.02)
    assert gap / _burst_gap_frames(got) == pytest.approx(rate, abs=0.02)
    assert abs(_burst_gap_frames(got) - _burst_gap_frames(ref)) <= 2
    assert abs(_centroid_hz(got) / _centroid_hz(ref) - 1) < 0.01


def test_speed_changes_pitch_and_tempo_together_as_resampling():
    y = _bursts()
    s = 1.08
    ref = _mel_power_ref(librosa.resample(y, orig_sr=SR * s, target_sr=SR, res_type="soxr_mq"))
    got = _mel_power_batched(y, _draws(speed=s), frames=ref.shape[1] - 1)
    assert abs(_burst_gap_frames(got) - _burst_gap_frames(ref)) <= 1
    assert abs(1200 * np.log2(_centroid_hz(got) / _centroid_hz(ref))) < 15


@pytest.mark.parametrize("rt60", [0.3, 0.8])
def test_reverb_decays_in_the_same_time_as_the_noise_convolution(rt60):
    y = np.zeros(int(2.5 * SR), np.float32)
    y[int(0.3 * SR):int(0.3 * SR) + 64] = 0.8                  # a click
    fps = SR / CFG.hop_length
    rng = np.random.default_rng(0)
    ref = _mel_power_ref(wave_augment.reverb(y, sample_rate=SR, rng=rng, rt60_seconds=(rt60, rt60), wet=(0.5, 0.5)))
    got = _mel_power_batched(y, _draws(rt60=rt60, wet=0.5), frames=ref.shape[1])
    t_ref, t_got = _rt60_seconds(ref, fps), _rt60_seconds(got, fps)
    assert t_ref == pytest.approx(rt60, rel=0.2)
    assert t_got == pytest.approx(t_ref, rel=0.15)
    # the wet share: tail energy against the click's, as in the reference
    click = int(0.3 * fps)
    share_ref = ref[:, click + 3:].sum() / ref.sum()
    share_got = got[:, click + 3:].sum() / got.sum()
    assert share_got == pytest.approx(share_ref, rel=0.3)


def test_overdrive_is_the_references_tanh():
    y = _harmonic_tone(seconds=1.0)[: 85 * CFG.hop_length]      # a crop of 86 frames
    got = _mel_power_batched(y, _draws(gain_db=6.0, drive=True), frames=_frames(y))
    np.testing.assert_allclose(got, _mel_power_ref(np.tanh(10 ** (6 / 20) * y)), rtol=1e-3, atol=1e-6)


def test_draws_follow_p_probs_ranges_and_seed():
    fx = BatchWaveEffects(p=0.75, sample_rate=SR, probs={"pitch_shift": 0.5, "tempo": 0.5, "reverb": 0.5,
                                                         "overdrive": 0.5}, seed=3)
    d = fx.draw(4000)
    shifted = (d.cents != 0).float().mean().item()
    assert shifted == pytest.approx(0.375, abs=0.04)         # p 0.75 x prob 0.5
    assert d.cents.abs().max() <= 300 and d.tempo.min() >= 0.9 and d.tempo.max() <= 1.1
    assert (d.speed == 1).all()                              # not in probs: never drawn
    assert ((d.rt60 > 0) == (d.wet > 0)).all() and d.rt60.max() <= 1.0
    same = BatchWaveEffects(p=0.75, sample_rate=SR, probs=fx.probs, seed=3).draw(4000)
    assert torch.equal(same.cents, d.cents)
    assert (BatchWaveEffects(p=0.0, sample_rate=SR, seed=0).draw(100).time_rate == 1).all()
    with pytest.raises(DataError, match="unknown waveform effects"):
        BatchWaveEffects(probs={"chorus": 0.5})


def test_loaded_frames_cover_the_fastest_draw_and_invert():
    fx = BatchWaveEffects(sample_rate=SR, probs={"tempo": 1.0, "speed": 1.0}, seed=0)
    assert fx.max_rate == pytest.approx(1.21)
    for frames in (1, 2, 64, 345, 646):
        loaded = fx.loaded_frames(frames)
        assert loaded >= frames_for_rate(frames, 1.21) and fx.segment_frames(loaded) == frames
    y = torch.zeros(1, (frames_for_rate(64, 1.1) - 2) * CFG.hop_length)
    with pytest.raises(DataError, match="loaded_frames"):
        effect_log_mel(LogMel(CFG), y, _draws(tempo=1.1), frames=64, sample_rate=SR)
    # only the frames the drawn rate needs are computed: a batch at rate 1 reads no margin
    long = torch.randn(2, (fx.loaded_frames(64) - 1) * CFG.hop_length)
    got = effect_log_mel(LogMel(CFG), long, EffectDraws.neutral(2), frames=64, sample_rate=SR)
    torch.testing.assert_close(got, LogMel(CFG)(long[:, : 63 * CFG.hop_length]))


def test_overdrive_inside_logmels_chunks_is_the_log_mel_of_the_tanh_waveform():
    """effect_log_mel hands the overdrive gains to LogMel.mel_power, which applies tanh(gain * y) chunk by
    chunk: the numbers of the mel power of the overdriven batch, clips without a gain untouched, the input
    batch unchanged."""
    cfg = get_preset("log128")
    rng = np.random.default_rng(4)
    waves = torch.from_numpy((0.3 * rng.standard_normal((5, 3 * cfg.sample_rate))).astype(np.float32))
    before = waves.clone()
    gain = torch.tensor([0.0, 3.0, 0.0, 1.5, 10.0])
    module = LogMel(cfg)
    with torch.no_grad():
        got = module.mel_power(waves, drive=gain)
        driven = torch.where(gain[:, None] > 0, torch.tanh(gain[:, None] * waves), waves)
        want = module.mel_power(driven)
    assert torch.equal(waves, before)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-9)


def test_content_frames_by_blocks_match_the_sample_by_sample_span():
    """LogMel._content_frames finds the first and last non-zero samples block by block: the same frames
    as the plain search over every sample, at block edges too."""
    cfg = get_preset("log128")
    module, hop, n_fft = LogMel(cfg), cfg.hop_length, cfg.n_fft
    n = 400 * hop + 37
    for a, b in [(5000, 5001), (hop, 2 * hop), (hop - 1, 3 * hop + 1), (n // 2, n - 1), (1, 40 * hop)]:
        wave = torch.zeros(n)
        wave[a] = 0.5
        wave[b - 1] = -0.25
        total = 1 + n // hop
        first = max(0, -(-(a - n_fft // 2 + 1) // hop))
        end = min(total, -(-(b + n_fft // 2) // hop))
        want = (first, end, total) if 4 * (total - (end - first)) >= total else None
        assert module._content_frames(wave) == want, (a, b)
