"""fatlib.audio: decoding, resampling, downmix, bad files, trimming, length fixing."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from fatlib.audio import fix_length, load_audio, trim_silence
from fatlib.errors import AudioError


def _tone(seconds, sr, freq=440.0):
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_resample_and_downmix_48k_stereo(tmp_path):
    left = _tone(1.0, 48000, 440.0)
    stereo = np.stack([left, 0.5 * left], axis=1)
    path = tmp_path / "stereo48k.wav"
    sf.write(path, stereo, 48000, subtype="PCM_16")
    y = load_audio(path, sample_rate=44100)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 44100) <= 1
    # downmix = mean of the channels: peak 0.75 * 0.5 (tone peak 0.5)
    assert np.abs(y).max() == pytest.approx(0.375, abs=0.01)
    spectrum = np.abs(np.fft.rfft(y))
    assert np.argmax(spectrum) * 44100 / len(y) == pytest.approx(440, abs=2)


def test_downmix_is_channel_mean_at_native_rate(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.uniform(-0.5, 0.5, size=(1000, 3)).astype(np.float32)
    path = tmp_path / "three.wav"
    sf.write(path, data, 22050, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, sample_rate=22050), data.mean(axis=1), atol=1e-6)


def test_real_stereo_sample(shared_dir):
    path = shared_dir / "audio-samples" / "urbansound8k-135776-2-0-49.wav"
    y = load_audio(path)
    assert y.ndim == 1 and len(y) == 44100 and np.isfinite(y).all()


@pytest.mark.parametrize("kind", ["garbage", "empty", "nan", "inf", "missing"])
def test_bad_files_raise_audio_error_naming_file(tmp_path, kind):
    path = tmp_path / f"bad_{kind}.wav"
    if kind == "garbage":
        path.write_bytes(b"this is not audio" * 50)
    elif kind == "empty":
        sf.write(path, np.zeros(0, dtype=np.float32), 44100)
    elif kind in ("nan", "inf"):
        y = _tone(0.1, 44100)
        y[100] = np.nan if kind == "nan" else np.inf
        sf.write(path, y, 44100, subtype="FLOAT")
    with pytest.raises(AudioError, match=f"bad_{kind}.wav"):
        load_audio(path)


def test_trim_silence_cuts_quiet_edges():
    sr = 44100
    y = np.concatenate([np.zeros(sr), _tone(0.5, sr), np.zeros(sr)])
    t = trim_silence(y, top_db=60)
    assert 0.45 * sr < len(t) < 0.6 * sr
    assert np.abs(t).max() == pytest.approx(0.5, abs=1e-3)


def test_trim_silence_keeps_all_silent_clip():
    y = np.zeros(1000, dtype=np.float32)
    t = trim_silence(y, top_db=60)
    assert len(t) == 1000


def test_trim_rejects_empty_and_2d():
    with pytest.raises(AudioError, match="empty"):
        trim_silence(np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioError, match="1-D"):
        trim_silence(np.zeros((2, 10), dtype=np.float32))


def test_fix_length_pad_is_centred():
    y = np.ones(4, dtype=np.float32)
    out = fix_length(y, min_samples=9, mode="pad")
    np.testing.assert_array_equal(out, [0, 0, 1, 1, 1, 1, 0, 0, 0])


def test_fix_length_repeat_tiles():
    y = np.arange(1, 4, dtype=np.float32)
    out = fix_length(y, min_samples=8, mode="repeat")
    np.testing.assert_array_equal(out, [1, 2, 3, 1, 2, 3, 1, 2])


def test_fix_length_leaves_long_clip_and_validates():
    y = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(fix_length(y, min_samples=5), y)
    with pytest.raises(AudioError, match="mode"):
        fix_length(y, min_samples=20, mode="reflect")
    with pytest.raises(AudioError, match="min_samples"):
        fix_length(y, min_samples=0)


def test_trim_in_parts_equals_librosa(monkeypatch):
    """trim_silence computes librosa.effects.trim's RMS frames a few at a time: the same cut."""
    import librosa

    import fatlib.audio as audio

    monkeypatch.setattr(audio, "TRIM_FRAMES_PER_PASS", 7)
    rng = np.random.default_rng(3)
    for n in (1, 2048, 5000, 44100):
        y = (rng.standard_normal(n) * np.exp(-np.linspace(0, 12, n))).astype(np.float32)
        y[: n // 3] = 0
        want, _ = librosa.effects.trim(y, top_db=60.0)
        np.testing.assert_array_equal(audio.trim_silence(y, top_db=60.0), want if want.size else y)
