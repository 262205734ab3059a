"""Feature speed, each figure against a baseline measured in the same run, on synthetic clips.

1. log-mel: ``LogMel`` (torch, one batched call on CPU) vs ``log_mel`` (librosa, clip by clip) on the
   same clips of the cnn128 preset: clips/s of each and the ratio (goal >= 3x on 2 cores).
2. cache build: ``FeatureCache.build`` on all cores vs one process: seconds of audio per second.
3. malloc tuning (``fatlib.sysalloc``): forward + backward of ``cnn_model_1`` on CPU in two fresh
   subprocesses, with ``FATLIB_NO_MALLOC_TUNING=1`` (glibc defaults) and without (tuned):
   samples/s, minor page faults per step, and the ratio.

    python benchmarks/bench_features.py            # 5 s clips, full-width model
    python benchmarks/bench_features.py --quick    # < 60 s on 2 CPU cores
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SR = 44100


def synthetic_clips(n: int, seconds: float, seed: int = 0) -> list[np.ndarray]:
    """Noise plus a few tones at random frequencies, float32, ``seconds`` long."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    clips = []
    for _ in range(n):
        y = 0.05 * rng.standard_normal(t.size)
        for f in rng.uniform(100, 8000, size=3):
            y += 0.2 * np.sin(2 * np.pi * f * t) * np.exp(-rng.uniform(0.1, 2) * t)
        clips.append(y.astype(np.float32))
    return clips


def best_of(fn, reps: int) -> float:
    """Fastest wall time in seconds of ``fn()`` over ``reps`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_log_mel(n_clips: int, seconds: float, reps: int) -> None:
    """Both at the default thread counts, then both with one thread (threadpoolctl): OpenBLAS threads
    spinning on a busy machine slow librosa's mel product a lot, which flatters the first ratio."""
    import torch
    from threadpoolctl import threadpool_limits

    from fatlib.features import get_preset, log_mel
    from fatlib.logmel import LogMel

    cfg = get_preset("cnn128")
    clips = synthetic_clips(n_clips, seconds)
    batch = torch.from_numpy(np.stack(clips))
    module = LogMel(cfg)
    print(f"[log-mel] {n_clips} clips x {seconds:g} s, cnn128")
    for label, limit in (("default threads", None), ("1 thread each", 1)):
        with threadpool_limits(limit), torch.inference_mode():
            t_ref = best_of(lambda: [log_mel(y, cfg) for y in clips], reps)
            t_torch = best_of(lambda: module(batch), reps)
        print(f"  {label:15s}: librosa log_mel (baseline) "
              f"{n_clips / t_ref:7.1f} clips/s, LogMel batched {n_clips / t_torch:7.1f} clips/s, "
              f"ratio {t_ref / t_torch:.1f}x")


def bench_cache(n_clips: int, seconds: float) -> None:
    import soundfile as sf

    from fatlib.cache import FeatureCache
    from fatlib.features import clip_features, get_preset

    cfg = get_preset("cnn128")
    clip_features(synthetic_clips(1, 0.5)[0], cfg)  # librosa's lazy imports out of the baseline's time
    n_jobs = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, y in enumerate(synthetic_clips(n_clips, seconds, seed=1)):
            paths.append(Path(tmp) / f"clip{i:04d}.wav")
            sf.write(paths[-1], y, SR, subtype="PCM_16")
        audio_s = n_clips * seconds
        rates = {}
        for jobs in (1, n_jobs):
            start = time.perf_counter()
            FeatureCache.build(paths, cfg, cache_dir=Path(tmp) / f"cache{jobs}", n_jobs=jobs, progress=False)
            rates[jobs] = audio_s / (time.perf_counter() - start)
    print(f"[cache build] {n_clips} wav files x {seconds:g} s, cnn128 (trim + pad + librosa log-mel, float16)")
    print(f"  n_jobs=1 (baseline): {rates[1]:8.1f} s of audio per s")
    print(f"  n_jobs={n_jobs}          : {rates[n_jobs]:8.1f} s of audio per s   ratio {rates[n_jobs] / rates[1]:.2f}x")


def train_steps_worker(width_mult: float, batch: int, steps: int) -> None:
    """Subprocess body: ``tune_malloc()`` (a no-op when disabled), then time training steps."""
    import torch

    from fatlib.models import create_model
    from fatlib.sysalloc import tune_malloc

    tuned = tune_malloc()
    torch.manual_seed(0)
    model = create_model("cnn_model_1", n_classes=80, in_channels=3, width_mult=width_mult)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(batch, 3, 128, 128), torch.rand(batch, 80).round()
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(json.dumps({"samples_per_s": steps * batch / elapsed, "faults_per_step": faults / steps,
                      "tuned": bool(tuned)}))


def bench_malloc(width_mult: float, batch: int, steps: int) -> None:
    results = {}
    for label, disable in (("glibc defaults", "1"), ("tune_malloc", "0")):
        env = dict(os.environ, FATLIB_NO_MALLOC_TUNING=disable)
        cmd = [sys.executable, __file__, "--train-worker", str(width_mult), str(batch), str(steps)]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        results[label] = json.loads(out.strip().splitlines()[-1])
    base, tuned = results["glibc defaults"], results["tune_malloc"]
    print(f"[malloc] cnn_model_1 width_mult={width_mult:g}, batch {batch} x 3 x 128 x 128, "
          f"forward+backward+SGD, {steps} steps, CPU")
    for label, r in results.items():
        print(f"  {label:15s}: {r['samples_per_s']:7.2f} samples/s, {r['faults_per_step']:9.0f} page faults/step")
    print(f"  ratio {tuned['samples_per_s'] / base['samples_per_s']:.2f}x samples/s, "
          f"{base['faults_per_step'] / max(tuned['faults_per_step'], 1):.0f}x fewer page faults")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: finishes in < 60 s on 2 cores")
    parser.add_argument("--train-worker", nargs=3, metavar=("WIDTH", "BATCH", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_worker:
        width, batch, steps = args.train_worker
        train_steps_worker(float(width), int(batch), int(steps))
        return
    if args.quick:
        bench_log_mel(n_clips=16, seconds=2.0, reps=3)
        bench_cache(n_clips=64, seconds=1.0)  # 2 shards: both processes busy
        bench_malloc(width_mult=0.25, batch=32, steps=2)
    else:
        bench_log_mel(n_clips=64, seconds=5.0, reps=3)
        bench_cache(n_clips=256, seconds=5.0)
        bench_malloc(width_mult=1.0, batch=32, steps=5)


if __name__ == "__main__":
    main()
