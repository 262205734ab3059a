"""fatlib.features: MelConfig and presets, librosa reference vs torch LogMel, normalisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fatlib.features import (
    PRESETS,
    MelConfig,
    clip_features,
    clip_wave,
    get_preset,
    load_audio,
    log_mel,
    normalize,
    to_model_input,
)
from fatlib.logmel import LogMel

SR = 44100


def _clips():
    """Synthetic clips: noise, a decaying tone, a chirp with silence around it."""
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    noise = 0.1 * rng.standard_normal(SR)
    tone = 0.5 * np.sin(2 * np.pi * 440 * t) * np.exp(-3 * t)
    chirp = np.concatenate([np.zeros(SR // 4), 0.3 * np.sin(2 * np.pi * (200 + 4000 * t) * t), np.zeros(SR // 4)])
    return [c.astype(np.float32) for c in (noise, tone, chirp)]


def test_presets_match_reference():
    c = PRESETS["cnn128"]
    assert (c.n_mels, c.n_fft, c.hop_length, c.fmin, c.fmax, c.crop_frames) == (128, 2560, 694, 20.0, 22050.0, 128)
    assert (c.min_length, c.normalize, c.channels, c.trim_top_db) == ("pad", "clip", 3, 60.0)
    d = PRESETS["dense64"]
    assert (d.n_mels, d.n_fft, d.hop_length, d.crop_frames, d.channels) == (64, 1920, 690, 256, 1)
    assert (d.normalize, d.global_mean, d.global_std) == ("global", -35.7, 21.6)


def test_get_preset_overrides_and_errors():
    c = get_preset("cnn128", n_mels=64)
    assert c.n_mels == 64 and PRESETS["cnn128"].n_mels == 128
    with pytest.raises(ValueError, match="dense64"):
        get_preset("nope")
    with pytest.raises(ValueError, match="hop_length"):
        get_preset("cnn128", hop=512)


@pytest.mark.parametrize("bad", [{"n_mels": 0}, {"fmax": 30000.0}, {"fmin": 500.0, "fmax": 100.0},
                                 {"min_length": "loop"}, {"normalize": "batch"}, {"hop_length": 1.5},
                                 {"trim_top_db": -1.0}, {"global_std": 0.0}])
def test_melconfig_validation(bad):
    field = next(iter(bad))
    with pytest.raises(ValueError, match=field):
        MelConfig(**bad)


def test_key_is_stable_and_sensitive():
    a, b = get_preset("cnn128"), MelConfig(fmin=20, fmax=22050)  # ints normalised to floats
    assert a.key() == b.key() and len(a.key()) == 12
    assert a.key() != a.replace(hop_length=347).key()
    assert MelConfig.from_dict(a.to_dict()) == a


def test_log_mel_shape_dtype_and_range():
    cfg = get_preset("cnn128")
    spec = log_mel(_clips()[0], cfg)
    assert spec.dtype == np.float32 and spec.shape == (128, 1 + SR // 694)
    assert spec.max() - spec.min() <= 80.0 + 1e-4


@pytest.mark.parametrize("preset", ["cnn128", "dense64"])
def test_torch_logmel_matches_librosa_synthetic(preset):
    cfg = get_preset(preset)
    clips = _clips()[:2]
    batch = torch.from_numpy(np.stack(clips))
    out = LogMel(cfg)(batch).numpy()
    for got, y in zip(out, clips):
        ref = log_mel(y, cfg)
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 0.01


def test_torch_logmel_matches_librosa_real(shared_dir):
    cfg = get_preset("cnn128")
    module = LogMel(cfg)
    paths = sorted((shared_dir / "audio-samples").glob("*.wav"))
    assert len(paths) == 6
    for path in paths:
        y = load_audio(path)
        got = module(torch.from_numpy(y))[0].numpy()
        assert np.abs(got - log_mel(y, cfg)).max() <= 0.01, path.name


def test_logmel_buffers_move_with_module():
    m = LogMel(get_preset("dense64"))
    names = dict(m.named_buffers())
    assert names["mel_fb"].shape == (64, 1920 // 2 + 1) and "window" in names
    if torch.cuda.is_available():
        y = _clips()[1]
        got = m.cuda()(torch.from_numpy(y).cuda())[0].cpu().numpy()
        assert np.abs(got - log_mel(y, m.cfg)).max() <= 0.01


def test_clip_features_trims_and_pads(tiny_mel):
    y = _clips()[2]  # 0.25 s silence + 1 s chirp + 0.25 s silence
    spec = clip_features(y, tiny_mel)
    # silence trimmed off (to librosa's 2048-sample frame granularity): ~1 s left of 1.5 s
    assert 1 + SR // tiny_mel.hop_length <= spec.shape[1] <= 1 + (SR + 4096) // tiny_mel.hop_length
    short = clip_features(y[SR // 4 : SR // 4 + 2000], tiny_mel)
    assert short.shape == (tiny_mel.n_mels, tiny_mel.crop_frames + 1)
    assert short[:, 0].max() == short.min()  # centred zero padding: the first frame is the floor
    rep = clip_features(y[SR // 4 : SR // 4 + 2000], tiny_mel.replace(min_length="repeat"))
    assert rep[:, 0].max() > rep.min() + 20


def test_clip_wave_is_the_one_wave_path(tmp_path, tiny_mel):
    """clip_features, the on-the-fly WaveDataset and predict's audio source all go through clip_wave."""
    import soundfile as sf

    from fatlib.loaders import WaveDataset, wave_crop_samples
    from fatlib.sources import WaveSource

    y = _clips()[2][SR // 4 : SR // 4 + 3000]  # shorter than the crop: padding decides the result
    path = tmp_path / "a.wav"
    sf.write(path, y, SR, subtype="FLOAT")
    wave = clip_wave(path, tiny_mel)
    np.testing.assert_array_equal(wave, clip_wave(y, tiny_mel))
    assert wave.shape == (tiny_mel.crop_samples,) and wave[0] == 0.0  # centred zero padding
    np.testing.assert_array_equal(clip_features(path, tiny_mel), log_mel(wave, tiny_mel))
    rep = tiny_mel.replace(min_length="repeat")
    n = wave_crop_samples(rep)
    item, _ = WaveDataset([path], [0], np.ones((1, 1), np.float32), cfg=rep, train=False)[0]
    np.testing.assert_array_equal(item.numpy(), clip_wave(path, rep, min_samples=n)[:n])
    source = WaveSource([path], rep, torch.device("cpu"), 1)
    (_, specs), = list(source.batches([np.arange(1)]))
    np.testing.assert_allclose(specs[0].numpy(), clip_features(path, rep), atol=0.01)


def test_normalize_numpy_and_torch():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 8, 10)) * 20 - 40).astype(np.float32)
    clip = get_preset("cnn128")
    for out in (normalize(x, clip), normalize(torch.from_numpy(x), clip).numpy()):
        np.testing.assert_allclose(out.mean(axis=(1, 2)), 0, atol=1e-5)
        np.testing.assert_allclose(out.std(axis=(1, 2)), 1, atol=1e-4)
    glob = get_preset("dense64")
    np.testing.assert_allclose(normalize(x, glob), (x + 35.7) / 21.6, rtol=1e-6)
    none = clip.replace(normalize="none")
    np.testing.assert_array_equal(normalize(x.astype(np.float16), none), x.astype(np.float16).astype(np.float32))


def test_to_model_input_channels():
    x = np.random.default_rng(0).standard_normal((4, 128, 16)).astype(np.float16) * 30
    out = to_model_input(x, get_preset("cnn128"))
    assert out.dtype == torch.float32 and out.shape == (4, 3, 128, 16)
    assert torch.equal(out[:, 0], out[:, 2])
    one = to_model_input(torch.from_numpy(x[:, :64]), get_preset("dense64"))
    assert one.shape == (4, 1, 64, 16)
    with pytest.raises(ValueError, match="n_mels=128"):
        to_model_input(x[:, :64], get_preset("cnn128"))


# ---------------------------------------------------------------- presets of the 95th and 3rd places
def test_multires_preset_is_one_channel_per_stft_size():
    from fatlib.features import clip_wave, get_preset, log_mel, to_model_input
    from fatlib.logmel import LogMel

    cfg = get_preset("multires128", crop_frames=32)
    assert cfg.resolutions == (896, 1792, 3584) and cfg.feature_rows == 3 * 128 and cfg.hop_length == 512
    y = np.random.default_rng(0).standard_normal(22050).astype(np.float32) * 0.1  # 0.5 s
    wave = clip_wave(y, cfg)
    assert len(wave) == 3 * 44100  # repeated to the 3 s minimum, though the crop is 0.37 s
    assert np.allclose(wave[22050:44100], y)  # tiled, not zero-padded
    ref = log_mel(wave, cfg)
    assert ref.shape == (384, 1 + len(wave) // 512)
    for i, n_fft in enumerate(cfg.n_ffts):  # each block is the single-resolution log-mel of that size
        single = log_mel(wave, get_preset("cnn128", n_fft=n_fft, hop_length=512))
        assert np.allclose(ref[128 * i:128 * (i + 1)], single)
    torch_out = LogMel(cfg)(torch.from_numpy(wave))[0].numpy()
    assert np.abs(torch_out - ref).max() < 1e-3
    x = to_model_input(ref[None, :, :32], cfg)
    assert x.shape == (1, 3, 128, 32)
    assert not torch.allclose(x[0, 0], x[0, 2])  # different resolutions, not copies


def test_log_offset_preset_is_log_of_mel_plus_eps():
    import librosa

    from fatlib.features import get_preset, log_mel
    from fatlib.logmel import LogMel

    cfg = get_preset("log128")
    assert (cfg.n_mels, cfg.n_fft, cfg.hop_length, cfg.log_offset) == (128, 2048, 1024, 1e-4)
    y = np.random.default_rng(1).standard_normal(44100).astype(np.float32) * 0.1
    mel = librosa.feature.melspectrogram(y=y, sr=44100, n_fft=2048, hop_length=1024, n_mels=128, fmin=20.0,
                                         fmax=22050.0, power=2.0, pad_mode="constant")
    assert np.allclose(log_mel(y, cfg), np.log(mel + 1e-4), atol=1e-5)
    assert np.abs(LogMel(cfg)(torch.from_numpy(y))[0].numpy() - log_mel(y, cfg)).max() < 1e-3


def test_later_fields_keep_earlier_configs_and_keys():
    from fatlib.errors import DataError
    from fatlib.features import MelConfig, get_preset

    for name in ("cnn128", "dense64"):
        d = get_preset(name).to_dict()
        assert not {"n_ffts", "log_offset", "min_seconds"} & set(d)
    cfg = get_preset("multires128")
    assert MelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(DataError, match="channels=3"):
        get_preset("cnn128", n_ffts=[512, 1024])
    with pytest.raises(DataError, match="min_seconds"):
        get_preset("cnn128", min_seconds=-1)


def test_repeat_below_seconds_tiles_short_clips_and_pads_longer_ones():
    """95th place: clips shorter than 1.5 s tiled to 3 s, clips of 1.5-3 s zero-padded."""
    from fatlib.features import clip_wave, get_preset

    cfg = get_preset("multires128").replace(trim_top_db=None)
    sr = cfg.sample_rate
    rng = np.random.default_rng(0)
    short, mid = rng.standard_normal(sr).astype(np.float32), rng.standard_normal(2 * sr).astype(np.float32)
    ys, ym = clip_wave(short, cfg), clip_wave(mid, cfg)
    assert len(ys) == len(ym) == max(cfg.crop_samples, 3 * sr)
    np.testing.assert_array_equal(ys[sr : 2 * sr], short)  # tiled: the clip again after itself
    assert np.count_nonzero(ym == 0) >= len(ym) - 2 * sr  # padded with zeros
    assert cfg.replace(repeat_below_seconds=None).min_length == "pad"
    assert np.count_nonzero(clip_wave(short, cfg.replace(repeat_below_seconds=None)) == 0) >= 2 * sr - 1
    with pytest.raises(Exception, match="repeat_below_seconds"):
        cfg.replace(repeat_below_seconds=-1)
    with pytest.raises(Exception, match="crop_frames_max"):
        cfg.replace(crop_frames_max=cfg.crop_frames - 1)


def test_stft256_preset_feeds_the_1d_model():
    """3rd place's 1-D family: a 256-sample STFT window, 40 mel bands (no empty filter), 8-12 s segments,
    LogMel equal to the librosa reference, and stft1d_3rd takes its model input."""
    import warnings

    import librosa

    from fatlib.features import get_preset, log_mel, to_model_input
    from fatlib.logmel import LogMel
    from fatlib.models import create_model

    cfg = get_preset("stft256")
    assert (cfg.n_fft, cfg.hop_length, cfg.n_mels, cfg.log_offset, cfg.channels) == (256, 128, 40, 1e-4, 1)
    assert cfg.crop_frames * cfg.hop_length / cfg.sample_rate == pytest.approx(8.0, abs=0.01)
    assert cfg.crop_frames_max * cfg.hop_length / cfg.sample_rate == pytest.approx(12.0, abs=0.01)
    fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    assert (fb.max(axis=1) > 0).all()  # every band has a filter; 48 bands would leave one empty
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert (librosa.filters.mel(sr=cfg.sample_rate, n_fft=256, n_mels=48).max(axis=1) == 0).any()
    y = np.random.default_rng(2).standard_normal(22050).astype(np.float32) * 0.1
    ref = log_mel(y, cfg)
    assert ref.shape == (40, 1 + len(y) // 128)
    assert np.abs(LogMel(cfg)(torch.from_numpy(y))[0].numpy() - ref).max() < 1e-3
    x = to_model_input(ref[None], cfg)
    model = create_model("stft1d_3rd", n_classes=3, in_channels=cfg.channels, width_mult=0.125).eval()
    assert model(x).shape == (1, 3)


@pytest.mark.parametrize("preset", ["log128", "cnn128"])
def test_logmel_of_zero_padded_short_clips_skips_the_silent_frames_with_the_same_numbers(preset):
    """A sub-second clip padded to an 8-s segment: LogMel takes the STFT of the frames that see its samples
    only (the rest are exact zeros), and gives librosa's numbers for every frame."""
    cfg = get_preset(preset)
    rng = np.random.default_rng(3)
    module = LogMel(cfg)
    waves = [clip_wave((0.1 * rng.standard_normal(n)).astype(np.float32), cfg, min_samples=399 * cfg.hop_length)
             for n in (3000, 30000)]
    batch = torch.from_numpy(np.stack(waves))
    first, end, total = module._content_frames(batch[0])
    assert total == 400 and 0 < end - first < 10                 # a few frames of 400 are computed
    with torch.no_grad():
        got = module(batch).numpy()
    for g, w in zip(got, waves):
        assert np.abs(g - log_mel(w, cfg)).max() <= 0.01
    assert module._content_frames(torch.ones(399 * cfg.hop_length)) is None  # a full clip: every frame


def test_logmel_threads_split_the_batch_with_the_same_numbers_and_restore_the_thread_count():
    """On the CPU with 2 torch threads the clips go one contiguous share per thread (each on one torch
    thread): the numbers of the one-thread path and librosa's, the caller's thread count unchanged, and a
    forked child at one thread (a DataLoader worker; OpenMP itself hangs a forked child at 2) still works."""
    import multiprocessing as mp

    cfg = get_preset("cnn128")
    rng = np.random.default_rng(5)
    waves = (0.1 * rng.standard_normal((6, 3 * SR))).astype(np.float32)
    batch = torch.from_numpy(waves)
    module = LogMel(cfg)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.no_grad():
            one = module(batch)
        torch.set_num_threads(2)
        with torch.inference_mode():
            two = module(batch)
        assert torch.get_num_threads() == 2
        assert torch.equal(one, two) or (one - two).abs().max() <= 1e-3
        assert np.abs(two[4].numpy() - log_mel(waves[4], cfg)).max() <= 0.01
        if "fork" in mp.get_all_start_methods():
            with mp.get_context("fork").Pool(1) as pool:
                child = pool.apply_async(_logmel_in_child, (waves[:4],)).get(timeout=120)
            assert np.abs(child - two[:4].numpy()).max() <= 1e-3
    finally:
        torch.set_num_threads(before)


def _logmel_in_child(waves):
    torch.set_num_threads(1)
    with torch.no_grad():
        return LogMel(get_preset("cnn128"))(torch.from_numpy(waves)).numpy()


def test_logmel_cpu_clip_path_matches_the_whole_batch_stft_path():
    """The CPU path (clip by clip, per-thread buffers reused between calls, FFT_FRAMES frames per FFT call,
    passes of CPU_CHUNK_FRAMES frames) gives the numbers of the whole-batch torch.stft path (the GPU's),
    for clips longer than one pass, per-clip filter banks and overdrive, and again on a second call and on
    a batch of another length (buffers re-made)."""
    from fatlib.logmel import CPU_CHUNK_FRAMES, FFT_FRAMES

    cfg = get_preset("cnn128")
    module = LogMel(cfg)
    rng = np.random.default_rng(11)
    long = torch.from_numpy((0.1 * rng.standard_normal((3, (CPU_CHUNK_FRAMES + FFT_FRAMES + 7) * cfg.hop_length)))
                            .astype(np.float32))
    with torch.no_grad():
        for waves in (long, long, long[:, : 3 * SR]):
            got = module(waves)
            assert got.shape[-1] == 1 + waves.shape[-1] // cfg.hop_length
            want = module._to_db(module._power(waves, center=True))
            assert (got - want).abs().max() <= 1e-3
        assert np.abs(got[1].numpy() - log_mel(long[1, : 3 * SR].numpy(), cfg)).max() <= 0.01
        bank = module.mel_fb.T.contiguous()
        filters = torch.stack([bank * (1 + 0.5 * k) for k in range(3)])  # (B, bins, n_mels): three banks
        drive = torch.tensor([0.0, 2.0, 4.0])
        got = module.mel_power(long, filters=filters, drive=drive)
        driven = torch.where(drive[:, None] > 0, torch.tanh(long * drive[:, None]), long)
        ranges = [(c0, c1) for c0, c1 in module._bins]
        want = module._power(driven, center=True, filters=filters, ranges=ranges)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
        assert not torch.allclose(got[0], got[2], rtol=0.1)  # the banks and the drive did act per clip
