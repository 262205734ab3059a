"""fatlib.cache under concurrency and interruption, in real processes.

- two processes build one cache at the same moment: both succeed, each shard is computed once, and
  the result is byte-identical to a build in this process;
- ``python -m fatlib cache`` in a terminal (a pty, so progress bars are on) is killed with ``kill -9``
  mid-build, then stopped with Ctrl-C, then run again: it resumes and gives the same bytes; its pool
  workers die with it;
- stale temporary files of a dead builder are removed; a finished build leaves only data + index;
- every bad clip of a split is named in one error.

Subprocesses slow each shard down (``SHARD_DELAY``) so that the builds overlap and a kill lands
mid-build, and log each computed shard (``SHARD_LOG``).
"""
from __future__ import annotations

import hashlib
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fatlib import cache as cache_mod
from fatlib.cache import FeatureCache
from fatlib.errors import AudioError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; uses fork and pty")

ROOT = Path(__file__).resolve().parents[1]
SHARD = 2  # clips per shard in these tests (cache_mod.SHARD_SIZE is part of the cache's hash)

# runs in the child: small shards, each one slowed down and logged, then the rest of argv
CHILD = r"""
import os, sys, time
import fatlib.cache as c
c.SHARD_SIZE = int(os.environ["SHARD_SIZE"])
_real = c._compute_shard

def slow_shard(paths, cfg, shard_path):
    time.sleep(float(os.environ.get("SHARD_DELAY", "0")))
    out = _real(paths, cfg, shard_path)
    with open(os.environ["SHARD_LOG"], "a") as f:
        f.write(os.path.basename(shard_path) + "\n")
    return out

c._compute_shard = slow_shard
mode = sys.argv[1]
if mode == "cli":
    from fatlib.commands.main import main
    sys.exit(main(sys.argv[2:]))
# mode "build": wait until every sibling is ready (so that the builds really start together), then build
from pathlib import Path
from fatlib.features import get_preset
ready, n, cache_dir, preset, *paths = sys.argv[2:]
Path(ready, str(os.getpid())).touch()
while len(os.listdir(ready)) < int(n):
    time.sleep(0.01)
cache = c.FeatureCache.build(paths, get_preset(preset), cache_dir=cache_dir, name="cur", n_jobs=2, progress=False)
print(cache.index_path)
"""


def _env(tmp_path, **extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), SHARD_SIZE=str(SHARD), SHARD_LOG=str(tmp_path / "shards.log"))
    env.pop("FATLIB_PROGRESS", None)
    return {**env, **{k: str(v) for k, v in extra.items()}}


def _write_clips(folder, n, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        y = 0.2 * rng.standard_normal(int(rng.uniform(0.3, 1.0) * 44100))
        paths.append(folder / f"clip{i:02d}.wav")
        sf.write(paths[-1], y.astype(np.float32), 44100, subtype="PCM_16")
    return paths


def _reference(paths, cfg, out_dir, name, monkeypatch):
    monkeypatch.setattr(cache_mod, "SHARD_SIZE", SHARD)
    return FeatureCache.build(paths, cfg, cache_dir=out_dir, name=name, n_jobs=1, progress=False)


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _shard_log(tmp_path) -> list[str]:
    log = tmp_path / "shards.log"
    return log.read_text().split() if log.exists() else []


def test_two_processes_build_one_cache_at_once(tmp_path, monkeypatch):
    from fatlib.features import get_preset

    paths = _write_clips(tmp_path / "audio", 8)  # 4 shards
    cfg = get_preset("dense64")
    ref = _reference(paths, cfg, tmp_path / "ref", "cur", monkeypatch)
    out, ready = tmp_path / "cache", tmp_path / "ready"
    ready.mkdir()
    cmd = [sys.executable, "-c", CHILD, "build", str(ready), "2", str(out), "dense64", *map(str, paths)]
    procs = [subprocess.Popen(cmd, env=_env(tmp_path, SHARD_DELAY=0.3), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=240) for p in procs]
    for p, (_, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr[-3000:]
    index_paths = {stdout.strip() for stdout, _ in results}
    assert index_paths == {str(out / ref.index_path.name)}
    # one process built every shard once; the other waited for the lock and opened the finished cache
    assert sorted(_shard_log(tmp_path)) == [f"shard-{k:05d}.npz" for k in range(4)]
    assert sorted(os.listdir(out)) == [ref.data_path.name, ref.index_path.name]  # no lock, parts, tmp
    assert _sha(out / ref.data_path.name) == _sha(ref.data_path)
    assert _sha(out / ref.index_path.name) == _sha(ref.index_path)


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie computes nothing and holds no memory


class _Terminal:
    """A command whose stdin/stdout/stderr are a pseudo-terminal (so it shows progress bars)."""

    def __init__(self, cmd, env):
        master, slave = pty.openpty()
        # Ctrl-C as in a terminal: SIGINT at its default, also when this test runs where it is ignored and so
        # inherited (a suite started in the background by a non-interactive shell: `make test &`)
        self.proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        os.close(slave)
        self._master, self._chunks = master, []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while True:
            try:
                data = os.read(self._master, 4096)
            except OSError:  # EIO once the child side is closed
                break
            if not data:
                break
            self._chunks.append(data)

    def wait(self, timeout):
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        os.close(self._master)
        return rc, b"".join(self._chunks).decode(errors="replace")


def _wait_for(cond, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def test_kill_then_ctrl_c_then_resume_with_progress_bars(tmp_path, tiny_dataset, monkeypatch):
    from fatlib.dataset import FatData
    from fatlib.features import get_preset

    paths = FatData.from_dir(tiny_dataset).split("test").paths()  # 16 clips: 8 shards
    ref = _reference(paths, get_preset("dense64"), tmp_path / "ref", "test", monkeypatch)
    out = tmp_path / "cache"
    parts = out / ref.index_path.with_suffix(".parts").name
    cmd = [sys.executable, "-c", CHILD, "cli", "cache", "--data-dir", str(tiny_dataset), "--splits", "test",
           "--preset", "dense64", "--cache-dir", str(out), "--jobs", "2"]
    n_shards = lambda: len(list(parts.glob("shard-*.npz"))) if parts.is_dir() else 0  # noqa: E731

    # 1. kill -9 once some shards are written: the pool workers must die with their parent
    run = _Terminal(cmd, _env(tmp_path, SHARD_DELAY=1.0))
    _wait_for(lambda: n_shards() >= 2, 180, "the first shards")
    workers = _children(run.proc.pid)
    assert len(workers) == 2, workers
    run.proc.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    _wait_for(lambda: not any(map(_alive, workers)), 10, f"workers {workers} to exit after their parent's kill -9")
    assert ref.index_path.name not in os.listdir(out)
    written = n_shards()

    # 2. Ctrl-C (SIGINT to the terminal's process group) after one more shard: stops within seconds
    run = _Terminal(cmd, _env(tmp_path, SHARD_DELAY=1.0))
    _wait_for(lambda: n_shards() > written, 120, "a shard of the second run")
    at_signal = n_shards()
    workers = _children(run.proc.pid)
    os.killpg(run.proc.pid, signal.SIGINT)
    rc, text = run.wait(timeout=30)
    assert rc == 130 and "interrupted" in text and "run the same command again" in text and "Traceback" not in text, (
        f"rc {rc}; shards: {written} after the kill, {at_signal} at Ctrl-C, {n_shards()} now\n" + text[-3000:])
    _wait_for(lambda: not any(map(_alive, workers)), 10, "workers to exit after Ctrl-C")
    assert ref.index_path.name not in os.listdir(out)
    done_before = {p.name for p in parts.glob("shard-*.npz")}
    assert 2 < len(done_before) < 8
    log_before = len(_shard_log(tmp_path))

    # 3. resume with progress bars: computes only the missing shards, same bytes, nothing left over
    rc, text = _Terminal(cmd, _env(tmp_path)).wait(timeout=240)
    assert rc == 0 and "Traceback" not in text, text[-3000:]
    assert "test: 16 clips" in text and "log-mels" in text  # the bar's label
    resumed = _shard_log(tmp_path)[log_before:]
    assert sorted(resumed) == sorted({f"shard-{k:05d}.npz" for k in range(8)} - done_before)
    assert sorted(os.listdir(out)) == [ref.data_path.name, ref.index_path.name]
    assert _sha(out / ref.data_path.name) == _sha(ref.data_path)
    assert _sha(out / ref.index_path.name) == _sha(ref.index_path)


def test_stale_files_of_a_dead_builder_are_removed(tmp_path, tiny_mel, monkeypatch):
    monkeypatch.setattr(cache_mod, "SHARD_SIZE", SHARD)
    paths = _write_clips(tmp_path / "audio", 3)
    first = FeatureCache.build(paths, tiny_mel, cache_dir=tmp_path / "c", n_jobs=1, progress=False)
    stem = first.index_path.stem
    # a builder killed while writing the data file, and one killed while removing the finished shards
    (tmp_path / "c" / f".{stem}.f16.k1l3d.tmp").write_bytes(b"half")
    (tmp_path / "c" / f"{stem}.parts").mkdir()
    (tmp_path / "c" / f"{stem}.parts" / "shard-00000.npz").write_bytes(b"old")
    (tmp_path / "c" / f"{stem}.lock").touch()
    again = FeatureCache.build(paths, tiny_mel, cache_dir=tmp_path / "c", n_jobs=1, progress=False)
    assert sorted(os.listdir(tmp_path / "c")) == sorted([first.data_path.name, first.index_path.name])
    assert again.index_path == first.index_path
    # an unfinished build: its shards are kept for the resume, its temporary files are not
    first.index_path.unlink()
    first.data_path.unlink()
    parts = tmp_path / "c" / f"{stem}.parts"
    parts.mkdir()
    (parts / ".shard-00001.npz.x1y2.tmp").write_bytes(b"half")
    (tmp_path / "c" / f".{stem}.json.q9.tmp").write_bytes(b"half")
    calls = []
    real = cache_mod._compute_shard
    monkeypatch.setattr(cache_mod, "_compute_shard", lambda *a: calls.append(os.path.basename(a[2])) or real(*a))
    rebuilt = FeatureCache.build(paths, tiny_mel, cache_dir=tmp_path / "c", n_jobs=1, progress=False)
    assert calls == ["shard-00000.npz", "shard-00001.npz"]
    assert sorted(os.listdir(tmp_path / "c")) == sorted([first.data_path.name, first.index_path.name])
    assert np.array_equal(np.asarray(rebuilt[2]), np.asarray(again[2]))


def test_every_bad_clip_is_named_in_one_error(tmp_path, tiny_mel, monkeypatch):
    monkeypatch.setattr(cache_mod, "SHARD_SIZE", SHARD)
    good = _write_clips(tmp_path / "audio", 4)
    bad = [tmp_path / "audio" / "broken.wav", tmp_path / "audio" / "empty.wav", tmp_path / "audio" / "nan.wav"]
    bad[0].write_bytes(b"RIFF....not a wav at all" * 20)
    sf.write(bad[1], np.zeros(0, dtype=np.float32), 44100)
    sf.write(bad[2], np.full(4410, np.nan, dtype=np.float32), 44100, subtype="FLOAT")
    paths = [bad[0], *good[:2], bad[1], *good[2:], bad[2]]  # bad clips in 3 of the 4 shards
    with pytest.raises(AudioError) as err:
        FeatureCache.build(paths, tiny_mel, cache_dir=tmp_path / "c", name="curated", n_jobs=2, progress=False)
    msg = str(err.value)
    assert msg.startswith("3 of 7 clips of the 'curated' split cannot be used")
    lines = msg.splitlines()[1:4]  # one line per bad clip, in the split's order
    for line, path, fix in zip(lines, bad, ("re-encode it", "0 samples", "NaN or infinite")):
        assert line.startswith(f"  {path}: ") and fix in line
    assert "Fix or remove each file above" in msg
    assert os.listdir(tmp_path / "c") == []  # no cache, no shards, no lock
