"""fatlib.cache.FeatureCache: roundtrip, no-op rebuild, resume, memmap, bad files."""
from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from fatlib import cache as cache_mod
from fatlib.cache import FeatureCache
from fatlib.errors import AudioError, DataError
from fatlib.features import clip_features, load_audio


def _write_clips(folder, n, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        seconds = rng.uniform(0.2, 1.5)  # some shorter, some longer than the crop
        y = 0.2 * rng.standard_normal(int(seconds * 44100)) * np.hanning(int(seconds * 44100))
        path = folder / f"clip{i:02d}.wav"
        sf.write(path, y.astype(np.float32), 44100, subtype="PCM_16")
        paths.append(path)
    return paths


def test_roundtrip_equals_clip_features_memmapped(tmp_path, tiny_mel, monkeypatch):
    monkeypatch.setattr(cache_mod, "SHARD_SIZE", 2)  # 3 shards over 2 worker processes
    paths = _write_clips(tmp_path / "audio", 6)
    cache = FeatureCache.build(paths, tiny_mel, cache_dir=tmp_path / "cache", name="cur", n_jobs=2, progress=False)
    assert len(cache) == 6 and cache.fnames == [p.name for p in paths] and cache.cfg == tiny_mel
    assert isinstance(cache.data, np.memmap)
    for i, path in enumerate(paths):
        item = cache[i]
        assert isinstance(item, np.memmap) and item.dtype == np.float16 and not item.flags.writeable
        ref = clip_features(load_audio(path), tiny_mel).astype(np.float16)
        np.testing.assert_array_equal(np.asarray(item), ref)
        assert cache.lengths[i] == ref.shape[1] >= tiny_mel.crop_frames
        assert cache.index_of(path.name) == i
    np.testing.assert_array_equal(cache[-1], cache[5])
    files = sorted(os.listdir(tmp_path / "cache"))
    assert len(files) == 2 and files[0].startswith("cur-") and files[0].endswith(".f16")
    with pytest.raises(DataError, match="nope.wav"):
        cache.index_of("nope.wav")
    with pytest.raises(IndexError):
        cache[6]


def test_real_samples_cache(tmp_path, shared_dir, tiny_mel):
    paths = sorted((shared_dir / "audio-samples").glob("*.wav"))
    cache = FeatureCache.build(paths, tiny_mel, cache_dir=tmp_path, n_jobs=1, progress=False)
    i = cache.index_of("urbansound8k-135776-2-0-49.wav")
    ref = clip_features(load_audio(paths[i]), tiny_mel).astype(np.float16)
    np.testing.assert_array_equal(np.asarray(cache[i]), ref)


def test_second_build_is_noop_and_change_rebuilds(tmp_path, tiny_mel, monkeypatch):
    paths = _write_clips(tmp_path / "audio", 3)
    first = FeatureCache.build(paths, tiny_mel, cache_dir=tmp_path / "c", n_jobs=1, progress=False)
    mtime = first.data_path.stat().st_mtime_ns

    def boom(*args):
        raise AssertionError("recomputed a finished cache")

    monkeypatch.setattr(cache_mod, "_compute_shard", boom)
    again = FeatureCache.build(paths, tiny_mel, cache_dir=tmp_path / "c", n_jobs=1, progress=False)
    assert again.index_path == first.index_path and again.data_path.stat().st_mtime_ns == mtime
    # another config or a changed file gives another cache (and here needs computing)
    with pytest.raises(AssertionError, match="recomputed"):
        FeatureCache.build(paths, tiny_mel.replace(n_mels=16), cache_dir=tmp_path / "c", n_jobs=1, progress=False)
    sf.write(paths[0], np.full(5000, 0.1, dtype=np.float32), 44100)
    with pytest.raises(AssertionError, match="recomputed"):
        FeatureCache.build(paths, tiny_mel, cache_dir=tmp_path / "c", n_jobs=1, progress=False)


def test_resume_after_interruption(tmp_path, tiny_mel, monkeypatch):
    monkeypatch.setattr(cache_mod, "SHARD_SIZE", 2)
    paths = _write_clips(tmp_path / "audio", 5)  # 3 shards
    real = cache_mod._compute_shard
    calls = []

    def interrupted(*args):
        if calls:
            raise KeyboardInterrupt  # the second shard never finishes
        calls.append(args[2])
        return real(*args)

    monkeypatch.setattr(cache_mod, "_compute_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        FeatureCache.build(paths, tiny_mel, cache_dir=tmp_path, n_jobs=1, progress=False)
    assert not list(tmp_path.glob("*.json"))  # no index: the cache is not complete
    (parts,) = tmp_path.glob("*.parts")
    assert [p.name for p in parts.iterdir()] == ["shard-00000.npz"]

    def counting(*args):
        calls.append(args[2])
        return real(*args)

    monkeypatch.setattr(cache_mod, "_compute_shard", counting)
    cache = FeatureCache.build(paths, tiny_mel, cache_dir=tmp_path, n_jobs=1, progress=False)
    assert [os.path.basename(c) for c in calls[1:]] == ["shard-00001.npz", "shard-00002.npz"]
    assert not parts.exists()
    for i, path in enumerate(paths):
        ref = clip_features(load_audio(path), tiny_mel).astype(np.float16)
        np.testing.assert_array_equal(np.asarray(cache[i]), ref)


def test_bad_file_raises_naming_it(tmp_path, tiny_mel, monkeypatch):
    monkeypatch.setattr(cache_mod, "SHARD_SIZE", 2)  # the error comes back from a worker process
    paths = _write_clips(tmp_path / "audio", 3)
    bad = tmp_path / "audio" / "broken.wav"
    bad.write_bytes(b"RIFF....not a wav at all" * 20)
    with pytest.raises(AudioError, match="broken.wav"):
        FeatureCache.build([*paths, bad], tiny_mel, cache_dir=tmp_path / "c", n_jobs=2, progress=False)
    with pytest.raises(AudioError, match="missing.wav"):
        FeatureCache.build([tmp_path / "missing.wav"], tiny_mel, cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(DataError, match="empty list of audio files"):
        FeatureCache.build([], tiny_mel, cache_dir=tmp_path / "c", progress=False)


def test_cli_builds_split_cache(tmp_path, tiny_dataset, capsys):
    from fatlib.commands.main import main

    args = ["cache", "--data-dir", str(tiny_dataset), "--splits", "test", "--preset", "dense64",
            "--cache-dir", str(tmp_path), "--jobs", "1"]
    assert main(args) == 0
    (index,) = tmp_path.glob("test-*.json")
    cache = FeatureCache(index)
    assert len(cache) == 16 and cache.cfg.n_mels == 64
    assert "test: 16 clips" in capsys.readouterr().out


@pytest.mark.parametrize("mode", ["bars", "lines"])
def test_resume_with_progress_shown(tmp_path, tiny_mel, monkeypatch, capsys, mode):
    """A resumed build starts its progress part-done (fastprogress bars used to crash there)."""
    monkeypatch.setenv("FATLIB_PROGRESS", mode)
    monkeypatch.setattr(cache_mod, "SHARD_SIZE", 2)
    paths = _write_clips(tmp_path / "audio", 4)  # 2 shards
    real = cache_mod._compute_shard

    def second_fails(*args):
        if args[2].endswith("shard-00001.npz"):
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(cache_mod, "_compute_shard", second_fails)
    with pytest.raises(KeyboardInterrupt):
        FeatureCache.build(paths, tiny_mel, cache_dir=tmp_path, name="cur", n_jobs=1, progress=True)
    monkeypatch.setattr(cache_mod, "_compute_shard", real)
    capsys.readouterr()
    cache = FeatureCache.build(paths, tiny_mel, cache_dir=tmp_path, name="cur", n_jobs=1, progress=True)
    assert len(cache) == 4
    out = capsys.readouterr().out
    if mode == "lines":
        assert [line.rsplit(",", 1)[0] for line in out.splitlines()] == ["cur log-mels: 2/4 (50%)",
                                                                         "cur log-mels: 4/4 (100%)"]
