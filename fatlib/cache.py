"""Feature cache: the float16 log-mels of a whole split in one memory-mapped file.

Layout in ``cache_dir`` for a split ``name`` and a hash ``h`` of (MelConfig.key(), file names, sizes,
mtimes)::

    <name>-<h>.f16          every clip's (n_mels, frames) block, C order, one after the other
    <name>-<h>.json         index: fnames, lengths (frames), offsets (elements), n_mels, cfg
    <name>-<h>.parts/       while building: shards of SHARD_SIZE clips, each written atomically
    <name>-<h>.lock         while building: the lock that lets one process build (fatlib.filelock)

The index is written last, so its presence means the cache is complete. An interrupted build (Ctrl-C,
``kill -9``, a crash) keeps its finished shards and a rerun computes only the missing ones; a build
whose cache exists returns at once. Builds of one cache by several processes at once (two commands,
the ranks of a distributed run) take turns on the lock: one builds, the others wait and then open the
finished cache. Under the lock, a build first removes what a dead builder left (temporary files, or
the shards of a cache that was finished); a finished build leaves only the data file and the index.
Worker processes die with the builder (fatlib.workers). Clips that cannot be decoded do not stop the
build: all of them are reported in one AudioError at the end, and no cache is written.
Nothing holds the split in RAM: shards are streamed into the data file and reads are views of a
``numpy.memmap``.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from .atomic import atomic_path, write_json
from .errors import AudioError, DataError
from .features import MelConfig, clip_features
from .filelock import exclusive_lock
from .progress import Counter
from .workers import process_pool, run_all
from .workspace import Roots

SHARD_SIZE = 32  # clips per shard: the unit of parallel work and of resuming
DTYPE = np.float16
FORMAT_VERSION = 1


def _split_hash(paths: Sequence[Path], cfg: MelConfig) -> str:
    h = hashlib.sha1(f"fatlib-cache-v{FORMAT_VERSION}|{cfg.key()}|{SHARD_SIZE}".encode())
    for p in paths:
        st = p.stat()
        h.update(f"|{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def _compute_shard(paths: list[str], cfg_dict: dict, shard_path: str) -> list[str]:
    """Worker: features of ``paths`` written (atomically) to ``shard_path``.

    Returns the AudioError messages of the clips that cannot be used (then no shard is written), so
    that the build goes on and reports every bad clip of the split at once.
    """
    cfg = MelConfig.from_dict(cfg_dict)
    specs, bad = [], []
    for p in paths:
        try:
            specs.append(clip_features(p, cfg).astype(DTYPE))
        except AudioError as e:
            bad.append(str(e))
    if bad:
        return bad
    lengths = np.array([s.shape[1] for s in specs], dtype=np.int64)
    data = np.concatenate([s.ravel() for s in specs])
    with atomic_path(shard_path) as tmp, open(tmp, "wb") as f:
        np.savez(f, data=data, lengths=lengths)
    return []


def _check_paths(paths) -> list[Path]:
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError("FeatureCache.build got an empty list of audio files: a split without clips (a curated-only "
                        "data set has no noisy split) has no cache; build only non-empty splits' caches "
                        "(fatlib.report.build_caches skips empty ones)")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise AudioError(f"{len(missing)} audio file(s) not found, first: {missing[:5]}; check the audio directory")
    seen: dict[str, Path] = {}
    for p in paths:
        if p.name in seen:
            raise DataError(f"two files share the name {p.name!r} ({seen[p.name]} and {p}); names must be unique")
        seen[p.name] = p
    return paths


class FeatureCache:
    """Read access to a built cache; make one with :meth:`build` (or open an index with the constructor)."""

    def __init__(self, index_path: str | os.PathLike):
        self.index_path = Path(index_path)
        if not self.index_path.is_file():
            raise DataError(f"{self.index_path}: no feature cache index; build it with FeatureCache.build")
        index = json.loads(self.index_path.read_text())
        self.cfg = MelConfig.from_dict(index["cfg"])
        self.fnames: list[str] = list(index["fnames"])
        self.lengths = np.asarray(index["lengths"], dtype=np.int64)
        self.offsets = np.asarray(index["offsets"], dtype=np.int64)
        self.n_mels = int(index["n_mels"])
        self.data_path = self.index_path.with_suffix(".f16")
        total = int(index["total"])
        size = self.data_path.stat().st_size if self.data_path.is_file() else -1
        if size != total * np.dtype(DTYPE).itemsize:
            raise DataError(
                f"{self.data_path}: expected {total * 2} bytes, found {size}; delete {self.index_path} and rebuild"
            )
        self.data = np.memmap(self.data_path, dtype=DTYPE, mode="r", shape=(total,))
        self._pos = {f: i for i, f in enumerate(self.fnames)}

    @classmethod
    def build(
        cls,
        paths: Sequence[str | os.PathLike],
        cfg: MelConfig,
        *,
        cache_dir: str | os.PathLike,
        name: str = "split",
        n_jobs: int | None = None,
        progress: bool = True,
        input_roots: Sequence = (),
    ) -> FeatureCache:
        """Compute :func:`fatlib.features.clip_features` of every file of ``paths`` into one cache.

        ``n_jobs`` worker processes (default: every core this process may use; 1 = in this process).
        Returns the existing cache at once when one with the same hash is complete; resumes from
        finished shards after an interruption. Another process building the same cache holds its lock:
        this one waits (saying so when ``progress``), then returns the cache that process finished.
        Files that cannot be decoded do not stop the build: once every other clip is computed, one
        AudioError names each of them with its fix, and no cache is written.
        ``input_roots``: earlier sessions' outputs (fatlib.workspace.Roots) where a complete cache is also
        looked for (and read there, read-only); a missing one is built in ``cache_dir``.
        """
        if not isinstance(cfg, MelConfig):
            raise TypeError(f"cfg must be a MelConfig, got {type(cfg).__name__}")
        if not name or "/" in name:
            raise DataError(f"cache name must be a non-empty file name part, got {name!r}")
        paths = _check_paths(paths)
        cache_dir = Path(cache_dir)
        stem = f"{name}-{_split_hash(paths, cfg)}"
        index_path = cache_dir / f"{stem}.json"
        found = Roots(input_roots).find(index_path)
        if found is not None and (found != index_path or not _leftovers(cache_dir, stem)):
            return cls(found)
        n_jobs = _n_jobs(n_jobs)

        def waiting():
            if progress:
                print(f"{name}: another process is building {stem}; waiting for it", flush=True)

        with exclusive_lock(cache_dir / f"{stem}.lock", on_wait=waiting):
            for stale in _leftovers(cache_dir, stem):  # from a builder that died, or finished and was killed
                if stale.is_dir() and index_path.is_file():
                    shutil.rmtree(stale)
                elif stale.is_file():
                    stale.unlink()
            if not index_path.is_file():  # else another process built it while this one waited
                _build(paths, cfg, index_path, name=name, n_jobs=n_jobs, progress=progress)
        return cls(index_path)

    def __len__(self) -> int:
        return len(self.fnames)

    def __getitem__(self, i: int) -> np.ndarray:
        """Clip ``i``'s log-mel as a read-only (n_mels, frames) float16 view of the memmap (dB)."""
        n = len(self.fnames)
        if not -n <= i < n:
            raise IndexError(f"clip index {i} out of range for a cache of {n} clips")
        i %= n
        start = int(self.offsets[i])
        return self.data[start : start + self.n_mels * int(self.lengths[i])].reshape(self.n_mels, -1)

    def index_of(self, fname: str) -> int:
        try:
            return self._pos[fname]
        except KeyError:
            raise DataError(f"{fname!r} is not in the feature cache {self.index_path.name}") from None

    def __repr__(self) -> str:
        return f"FeatureCache({self.index_path}, clips={len(self)}, n_mels={self.n_mels})"


def _n_jobs(n_jobs: int | None) -> int:
    if n_jobs is None:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise DataError(f"n_jobs must be a positive integer (processes) or None for all cores, got {n_jobs!r}")
    return n_jobs


def _leftovers(cache_dir: Path, stem: str) -> list[Path]:
    """What a build of ``stem`` leaves while it runs: temporary files of the data file and the index,
    temporary shard files, and the shard folder."""
    parts = cache_dir / f"{stem}.parts"
    found = sorted(cache_dir.glob(f".{glob.escape(stem)}.*.tmp"))
    if parts.is_dir():
        found += sorted(parts.glob(".*.tmp")) + [parts]
    return found


def _build(paths: list[Path], cfg: MelConfig, index_path: Path, *, name: str, n_jobs: int, progress: bool) -> None:
    """Compute the missing shards, then assemble them; the caller holds the lock."""
    parts = index_path.with_suffix(".parts")
    parts.mkdir(parents=True, exist_ok=True)
    shards = [[str(p) for p in paths[i : i + SHARD_SIZE]] for i in range(0, len(paths), SHARD_SIZE)]
    shard_paths = [parts / f"shard-{k:05d}.npz" for k in range(len(shards))]
    todo = [k for k, sp in enumerate(shard_paths) if not sp.is_file()]
    bad = _run_shards([(shards[k], cfg.to_dict(), str(shard_paths[k])) for k in todo], [len(shards[k]) for k in todo],
                      n_jobs=n_jobs, total=len(paths), done=len(paths) - sum(len(shards[k]) for k in todo),
                      counter_label=f"{name} log-mels" if progress else None)
    if bad:
        shutil.rmtree(parts)  # fixing a clip changes the cache's hash: these shards would never be used
        lines = "\n".join(f"  {msg}" for msg in bad)
        raise AudioError(f"{len(bad)} of {len(paths)} clips of the {name!r} split cannot be used, so no feature "
                         f"cache was written:\n{lines}\nFix or remove each file above (e.g. drop its row from the "
                         "split's CSV), then run again.")
    _assemble(shard_paths, index_path, paths, cfg)
    shutil.rmtree(parts)


def _run_shards(tasks: list[tuple], sizes: list[int], *, n_jobs: int, total: int, done: int,
                counter_label: str | None) -> list[str]:
    """Run ``_compute_shard`` on every task (in-process for one job), counting clips on a progress
    counter (none when ``counter_label`` is None); returns the messages of every bad clip."""
    counter = Counter(total, label=counter_label or "", show=counter_label is not None)
    counter.update(done)
    bad: dict[int, list[str]] = {}

    def finished(k: int, errors: list[str]) -> None:
        nonlocal done
        bad[k] = errors
        done += sizes[k]
        counter.update(done)

    if n_jobs == 1 or len(tasks) <= 1:
        with _single_thread_blas():
            for k, task in enumerate(tasks):
                finished(k, _compute_shard(*task))
        return [msg for k in sorted(bad) for msg in bad[k]]
    # librosa loads its submodules lazily (~10 s for effects/feature on a busy machine): load them
    # here once so that forked workers inherit them instead of each importing them again
    importlib.import_module("librosa.effects")
    importlib.import_module("librosa.feature")
    with process_pool(min(n_jobs, len(tasks)), initializer=_single_thread_blas) as pool:
        run_all(pool, _compute_shard, tasks, on_result=finished)
    return [msg for k in sorted(bad) for msg in bad[k]]  # in clip order


def _single_thread_blas():
    """One BLAS thread for feature work (returned as a context; a worker initializer just calls it).

    The mel projection is a small matrix product: with several OpenBLAS threads per process, on a
    busy machine, their spinning made the cache build up to 8x slower (benchmarks/bench_features.py).
    Uses threadpoolctl when present (it comes with scikit-learn); otherwise changes nothing.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def _assemble(shard_paths: list[Path], index_path: Path, paths: list[Path], cfg: MelConfig) -> None:
    """Stream the shards into ``<stem>.f16`` (atomically), then write the index (atomically, last)."""
    lengths: list[int] = []
    with atomic_path(index_path.with_suffix(".f16")) as tmp, open(tmp, "wb") as f:
        for sp in shard_paths:
            with np.load(sp) as z:
                f.write(np.ascontiguousarray(z["data"], dtype=DTYPE).tobytes())
                lengths.extend(int(n) for n in z["lengths"])
    sizes = np.asarray(lengths, dtype=np.int64) * cfg.feature_rows
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    write_json(index_path, {
        "format": FORMAT_VERSION, "cfg": cfg.to_dict(), "n_mels": cfg.feature_rows, "dtype": "float16",
        "fnames": [p.name for p in paths], "lengths": lengths, "offsets": offsets.tolist(),
        "total": int(sizes.sum()),
    })


def missing_cache_bytes(paths, cfg, *, cache_dir, name: str, input_roots=()) -> int:
    """:func:`fatlib.preflight.cache_bytes` of a split, or 0 when its cache is complete already (in ``cache_dir`` or an input
    root): then nothing is written there."""
    from .preflight import cache_bytes
    from .workspace import Roots

    paths = [Path(p) for p in paths]
    if not paths:
        return 0
    index = Path(cache_dir) / f"{name}-{_split_hash(paths, cfg)}.json"
    return 0 if Roots(input_roots).find(index) is not None else cache_bytes(paths, cfg)
