"""Crop and waveform datasets, the waveform-to-log-mel callback and the DataLoaders builder."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from fatlib.datasets import (
    CacheSubset,
    CropDataset,
    WaveDataset,
    WaveToMel,
    build_dataloaders,
    wave_crop_samples,
)
from fatlib.errors import DataError
from fatlib.features import LogMel, to_model_input


@pytest.fixture(scope="module")
def split(tiny_dataset):
    from fatlib.data import FatData

    return FatData.from_dir(tiny_dataset).curated


@pytest.fixture(scope="module")
def cache(split, tiny_mel, tmp_path_factory):
    from fatlib.cache import FeatureCache

    return FeatureCache.build(split.paths()[:12], tiny_mel, cache_dir=tmp_path_factory.mktemp("cache"),
                              name="curated", n_jobs=1, progress=False)


def test_crop_dataset_items(cache, split, tiny_mel):
    rows = np.arange(6)
    ds = CropDataset(cache, rows, split.targets[rows], cfg=tiny_mel, train=False)
    x, y = ds[2]
    assert x.dtype == torch.float32 and x.shape == (tiny_mel.channels, tiny_mel.n_mels, tiny_mel.crop_frames)
    np.testing.assert_array_equal(y.numpy(), split.targets[2])
    spec = np.asarray(cache[2], dtype=np.float32)
    off = (spec.shape[1] - tiny_mel.crop_frames) // 2
    crop = spec[:, off : off + tiny_mel.crop_frames]
    # normalize="clip" (the 12th-place kernel): the whole clip's mean and std, then the crop
    want = (crop - spec.mean()) / (spec.std() + 1e-6)
    np.testing.assert_allclose(x[0].numpy(), want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ds[2][0], x)  # validation crops are deterministic
    # normalize="crop": the crop's own statistics
    crop_cfg = tiny_mel.replace(normalize="crop")
    xc = CropDataset(cache, rows, split.targets[rows], cfg=crop_cfg, train=False)[2][0]
    np.testing.assert_allclose(xc[0].numpy(), (crop - crop.mean()) / (crop.std() + 1e-6), rtol=1e-4, atol=1e-4)
    assert not np.allclose(xc.numpy(), x.numpy())


def test_sound_mix_sums_powers_and_joins_labels(cache, split, tiny_mel):
    rows = np.arange(2)
    cfg = tiny_mel.replace(normalize="none")
    ds = CropDataset(cache, rows, np.eye(2, dtype=np.float32), cfg=cfg, train=True, mix_p=1.0, mix_gain_db=0.0)
    short = [r for r in rows if cache.lengths[r] == tiny_mel.crop_frames]
    np.random.seed(1)
    x, y = ds[0]
    np.testing.assert_array_equal(y.numpy(), [1, 1])  # both sounds are in the mix
    assert x.shape == (tiny_mel.channels, tiny_mel.n_mels, tiny_mel.crop_frames)
    if len(short) == 2:  # whole clips: the mix is exactly the power sum of the two
        a, b = (np.asarray(cache[r], dtype=np.float32) for r in rows)
        np.testing.assert_allclose(x[0].numpy(), 10 * np.log10(10 ** (a / 10) + 10 ** (b / 10)), rtol=1e-4)
    assert (x[0].numpy() >= np.asarray(cache[0], dtype=np.float32)[:, : x.shape[-1]].min() - 1e-3).all()
    valid = CropDataset(cache, rows, np.eye(2, dtype=np.float32), cfg=cfg, train=False, mix_p=1.0)
    np.testing.assert_array_equal(valid[0][1].numpy(), [1, 0])  # never mixed at validation


def test_train_crops_are_random(cache, split, tiny_mel):
    long_row = int(np.argmax(cache.lengths))
    assert cache.lengths[long_row] > tiny_mel.crop_frames + 4
    ds = CropDataset(cache, [long_row], split.targets[[long_row]], cfg=tiny_mel, train=True)
    np.random.seed(0)
    crops = [ds[0][0] for _ in range(8)]
    assert any(not torch.equal(crops[0], c) for c in crops[1:])


def test_crop_dataset_rejects_short_clips_and_bad_rows(tiny_mel):
    class Fake:  # a cache whose first clip is shorter than the 32-frame crop
        lengths, fnames, path = np.array([10, 40]), ["a.wav", "b.wav"], "fake-cache"

        def __len__(self):
            return 2

    with pytest.raises(DataError, match="a.wav"):
        CropDataset(Fake(), [0, 1], np.zeros((2, 3)), cfg=tiny_mel)
    with pytest.raises(DataError, match="indices"):
        CropDataset(Fake(), [1, 5], np.zeros((2, 3)), cfg=tiny_mel)


def test_cache_subset_is_a_view(cache):
    sub = CacheSubset(cache, [3, 1])
    assert len(sub) == 2 and sub.fnames == [cache.fnames[3], cache.fnames[1]]
    np.testing.assert_array_equal(sub[1], cache[1])
    assert sub.lengths.tolist() == [cache.lengths[3], cache.lengths[1]]


def test_wave_path_matches_logmel(split, tiny_mel):
    rows = np.arange(4)
    ds = WaveDataset(split.paths(), rows, split.targets[rows], cfg=tiny_mel, train=False)
    wave, _ = ds[0]
    assert wave.shape == (wave_crop_samples(tiny_mel),) and wave.dtype == torch.float32
    batch = torch.stack([ds[i][0] for i in range(3)])
    cb = WaveToMel(tiny_mel)
    cb.learn = types.SimpleNamespace(xb=(batch,))
    cb.before_batch()
    x = cb.learn.xb[0]
    assert x.shape == (3, tiny_mel.channels, tiny_mel.n_mels, tiny_mel.crop_frames)
    torch.testing.assert_close(x, to_model_input(LogMel(tiny_mel)(batch), tiny_mel))


def test_build_dataloaders_both_modes(cache, split, tiny_mel):
    y = split.targets
    dls = build_dataloaders([(cache, np.arange(8), y[:8])], [(cache, np.arange(8, 12), y[8:12])],
                            cfg=tiny_mel, batch_size=4)
    xb, yb = dls.train.one_batch()
    assert xb.shape == (4, tiny_mel.channels, tiny_mel.n_mels, tiny_mel.crop_frames) and yb.shape == (4, y.shape[1])
    assert len(dls.valid.dataset) == 4
    wave = build_dataloaders([(split.paths(), np.arange(4), y[:4])], [(split.paths(), [4, 5], y[4:6])],
                             cfg=tiny_mel, mode="wave", batch_size=2)
    xb, _ = wave.train.one_batch()
    assert xb.shape == (2, wave_crop_samples(tiny_mel))
    with pytest.raises(DataError, match="feature mode"):
        build_dataloaders([(cache, [0, 1], y[:2])], [(cache, [2], y[2:3])], cfg=tiny_mel, mode="mel")


def test_stage_sound_mix_reaches_the_training_set_only(cache, split, tiny_mel):
    from fatlib.train import StageConfig

    y = split.targets
    dls = build_dataloaders([(cache, np.arange(8), y[:8])], [(cache, np.arange(8, 12), y[8:12])], cfg=tiny_mel,
                            batch_size=4, mix_p=0.7)
    assert dls.train.dataset.mix_p == 0.7 and dls.valid.dataset.mix_p == 0.0

    assert StageConfig(name="s").sound_mix_p == 0.5  # on by default (real-audio benchmark: mixtures +0.03)
    with pytest.raises(DataError, match="sound_mix_p"):
        StageConfig(name="s", sound_mix_p=1.5)
