"""Synthetic data generation speed: seconds of audio written per wall-clock second, threads vs one.

The baseline (n_jobs=1) is measured in the same run; the figure that matters is the ratio, and the
projected time for the full competition-size set (~100 h of audio).

    python benchmarks/bench_synth.py --quick      # < 60 s
    python benchmarks/bench_synth.py --jobs 8
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import soundfile as sf

from fatlib.synth import SIZES, make_dataset

FULL_AUDIO_S = 4970 * 7.6 + 19815 * 14.5 + 4481 * 7.6  # FSDKaggle2019 curated + noisy + test


def _run(out: Path, *, n_jobs: int, kw: dict) -> tuple[float, float]:
    """(wall seconds, seconds of audio written)."""
    t0 = time.perf_counter()
    make_dataset(out, n_jobs=n_jobs, seed=0, **kw)
    wall = time.perf_counter() - t0
    audio_s = sum(sf.info(p).duration for p in out.rglob("*.wav"))
    return wall, audio_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny set only (< 60 s)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="threads to compare with 1")
    args = parser.parse_args()
    kw = dict(SIZES["tiny"], n_classes=10)
    if not args.quick:
        kw.update(n_curated=300, n_noisy=300, n_test=100, max_seconds=8.0)
    with tempfile.TemporaryDirectory() as tmp:
        make_dataset(Path(tmp) / "warm", **dict(kw, n_curated=4, n_noisy=4, n_test=2))  # imports, caches
        base_wall, audio_s = _run(Path(tmp) / "one", n_jobs=1, kw=kw)
        wall, _ = _run(Path(tmp) / "many", n_jobs=args.jobs, kw=kw)
    n_clips = kw["n_curated"] + kw["n_noisy"] + kw["n_test"]
    print(f"{n_clips} clips, {audio_s:.0f} s of audio, cpu_count={os.cpu_count()}")
    print(f"n_jobs=1 (baseline): {base_wall:6.2f} s  = {audio_s / base_wall:7.1f} audio-s per s")
    print(f"n_jobs={args.jobs:<2}          : {wall:6.2f} s  = {audio_s / wall:7.1f} audio-s per s  "
          f"speed-up x{base_wall / wall:.2f}")
    print(f"projected full-size set ({FULL_AUDIO_S / 3600:.0f} h of audio) with n_jobs={args.jobs}: "
          f"{FULL_AUDIO_S / (audio_s / wall) / 60:.0f} min")


if __name__ == "__main__":
    main()
