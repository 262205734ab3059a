"""Inference throughput: clips/s of each TTA scheme on the same synthetic clips, length bucketing
against none, and a projection of the Kaggle kernel time.

All schemes run ``fatlib.predict.predict_clips`` on the same WAV files (decode, trim, batched LogMel,
crops, CNN-model-1 at published width, cnn128 preset). Ratios are against ``windows`` (the 12th-place
scheme) measured in the same run. "bucketing" compares ``full`` in length-sorted batches with
``full`` one clip at a time (batch 1, file order): same scores, different speed.

Projection: 4481 test clips x 10 folds x 3 stages x 2 models (60 model passes) with features computed
once, ``time = feature time + 60 x model time`` per clip, against the 1-hour GPU kernel limit. The
feature time is a run of the same scheme with a model that costs nothing (:class:`NullModel`), the
model time what CNN-model-1 adds to it. Clip lengths are
drawn log-normally around 7.6 s (the curated mean) and capped at 30 s; the projection scales with it.

    .venv/bin/python benchmarks/bench_predict.py [--quick] [--device cpu|cuda|auto] [--clips N]

``--quick``: 4 short clips (under a minute on 2 CPU cores); its figures are rough.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from fatlib.features import get_preset
from fatlib.models import create_model
from fatlib.predict import predict_clips

KAGGLE_CLIPS = 4481
MODEL_PASSES = 10 * 3 * 2  # folds x stages x models
KAGGLE_BUDGET_S = 3600.0
SCHEMES = ("windows", "sequential", "full")


def make_clips(root: Path, n: int, *, mean_seconds: float, seed: int = 0) -> tuple[list[Path], float]:
    """``n`` 44.1 kHz WAV files of tones in noise, log-normal lengths around ``mean_seconds`` (0.3-30 s)."""
    rng = np.random.default_rng(seed)
    seconds = np.clip(rng.lognormal(np.log(mean_seconds) - 0.3, 0.8, n), 0.3, 30.0)
    paths = []
    for i, sec in enumerate(seconds):
        t = np.arange(int(sec * 44100)) / 44100
        y = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 0.05 * rng.standard_normal(t.size)
        paths.append(root / f"clip{i:04d}.wav")
        sf.write(paths[-1], y.astype(np.float32), 44100, subtype="PCM_16")
    return paths, float(seconds.mean())


class NullModel(torch.nn.Module):
    """80 zero logits per crop at no cost: what is left of a run is features, crops and batching."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], 80)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few short clips (< 60 s on 2 CPU cores)")
    ap.add_argument("--device", default="auto", help="cpu | cuda | auto (cuda when available)")
    ap.add_argument("--clips", type=int, default=None, help="number of synthetic clips (default 4 quick, 48 full)")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    n = args.clips or (4 if args.quick else 48)
    cfg = get_preset("cnn128")
    torch.manual_seed(0)
    model = create_model("cnn_model_1", n_classes=80).eval()
    print(f"device {device}, {torch.get_num_threads()} CPU threads, cnn_model_1 (cnn128), batch {args.batch_size}")

    with tempfile.TemporaryDirectory() as tmp:
        paths, mean_s = make_clips(Path(tmp), n, mean_seconds=2.0 if args.quick else 7.6)
        print(f"{n} synthetic clips, mean {mean_s:.1f} s")
        run = dict(cfg=cfg, device=device, batch_size=args.batch_size, progress=False)
        predict_clips(model, paths[:2], tta="full", **run)  # warm-up: imports, kernels, thread pools

        rate, per_clip = {}, {}
        for tta in SCHEMES:
            t_model = timed(lambda tta=tta: predict_clips(model, paths, tta=tta, **run))
            t_null = timed(lambda tta=tta: predict_clips(NullModel(), paths, tta=tta, **run))
            per_clip[tta] = (t_null / n, max(t_model - t_null, 0.0) / n)  # (features, one model) s per clip
            rate[tta] = n / t_model
        t_none = timed(lambda: predict_clips(model, paths, tta="full", sort_by_length=False, **{**run, "batch_size": 1}))

    base = rate["windows"]
    print(f"\n{'scheme':<12}{'clips/s':>9}{'ratio':>8}{'feat ms/clip':>14}{'model ms/clip':>15}")
    for tta in SCHEMES:
        f, m = per_clip[tta]
        print(f"{tta:<12}{rate[tta]:>9.2f}{rate[tta] / base:>8.2f}{1e3 * f:>14.1f}{1e3 * m:>15.1f}")
    print(f"\nlength bucketing (full): {rate['full']:.2f} clips/s sorted in batches of {args.batch_size} vs "
          f"{n / t_none:.2f} one by one: x{rate['full'] * t_none / n:.2f}")

    print(f"\nprojection: {KAGGLE_CLIPS} clips x {MODEL_PASSES} model passes on {device} "
          f"(budget {KAGGLE_BUDGET_S:.0f} s)")
    for tta in SCHEMES:
        f, m = per_clip[tta]
        total = KAGGLE_CLIPS * (f + MODEL_PASSES * m)
        print(f"  {tta:<11}{total:>10.0f} s  = {total / KAGGLE_BUDGET_S:5.2f} x budget"
              + ("  (fits)" if total < KAGGLE_BUDGET_S else "  (too slow)"))
    if args.quick:
        print("\n--quick: few short clips; the figures are rough")
    return 0


if __name__ == "__main__":
    sys.exit(main())
