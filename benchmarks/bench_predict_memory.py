"""Peak memory of ``python -m fatlib predict`` against the length of one long clip among short ones.

Each run is the real command in a child process (``--device cpu``, default batch size and TTA unless
given) on the same short test clips plus, except for the baseline (0 minutes), one clip of the given
length. Peak RSS is the child's ``ru_maxrss`` from ``os.wait4``; ratios are against the baseline
measured in the same run. The model is CNN-model-1 (``--width-mult``, published width 1.0) with
random weights saved like a trained fold, features are the ``cnn128`` preset.

    .venv/bin/python benchmarks/bench_predict_memory.py [--minutes 0 1 5 10] [--short-clips 100]
        [--tta windows] [--batch-size 64] [--width-mult 1.0] [--quick]

``--quick``: 16 short clips, 0 and 1 minute (rough figures, about a minute on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

SR = 44100
VOCAB = ["Bark", "Meow", "Purr"]
ROOT = Path(__file__).resolve().parents[1]


def write_clip(path: Path, seconds: float, rng: np.random.Generator) -> None:
    """A tone in noise, written in blocks of 10 s so that long clips need little memory here."""
    freq = rng.uniform(100, 4000)
    with sf.SoundFile(str(path), "w", SR, 1, subtype="PCM_16") as f:
        n, done = int(seconds * SR), 0
        while done < n:
            t = (done + np.arange(min(10 * SR, n - done))) / SR
            f.write((0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32))
            done += t.size


def make_data(work: Path, *, short_clips: int, minutes: list[float], seed: int = 0) -> dict[float, Path]:
    """One data folder per long-clip length (symlinked audio): {minutes: data root}."""
    rng = np.random.default_rng(seed)
    audio = work / "audio"
    (audio / "test").mkdir(parents=True)
    (audio / "train_curated").mkdir()
    write_clip(audio / "train_curated" / "t0.wav", 2.0, rng)
    seconds = np.clip(rng.lognormal(np.log(5.0), 0.6, short_clips), 0.5, 30.0)
    short = [f"s{i:04d}.wav" for i in range(short_clips)]
    for name, sec in zip(short, seconds):
        write_clip(audio / "test" / name, float(sec), rng)
    roots = {}
    for m in minutes:
        names = list(short)
        if m > 0:
            names.append(f"long_{m:g}min.wav")
            write_clip(audio / "test" / names[-1], 60.0 * m, rng)
        root = work / f"data_{m:g}min"
        root.mkdir()
        for d in ("test", "train_curated"):
            (root / d).symlink_to(audio / d)
        pd.DataFrame({"fname": ["t0.wav"], "labels": [VOCAB[0]]}).to_csv(root / "train_curated.csv", index=False)
        sample = pd.DataFrame({"fname": names, **{c: 0 for c in VOCAB}})
        sample.to_csv(root / "sample_submission.csv", index=False)
        roots[m] = root
    return roots


def make_weights(work: Path, *, width_mult: float) -> Path:
    import torch

    from fatlib.checkpoint import save_weights
    from fatlib.features import get_preset
    from fatlib.models import create_model

    torch.manual_seed(0)
    model = create_model("cnn_model_1", n_classes=len(VOCAB), width_mult=width_mult)
    stage = work / "weights" / "run" / "stage1"
    save_weights(stage / "fold0.safetensors", model, model_name="cnn_model_1", model_kwargs=model.fatlib_kwargs,
                 mel_config=get_preset("cnn128").to_dict(), vocab=VOCAB)
    return stage.parent


def run_predict(root: Path, weights: Path, out: Path, extra: list[str]) -> tuple[float, float]:
    """(peak RSS MiB, wall seconds) of ``python -m fatlib predict`` in a child process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "fatlib", "predict", "--data", str(root), "--weights", str(weights),
           "--device", "cpu", "--out", str(out), *extra]
    start = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as log:
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"predict failed ({child.returncode}): see {out.with_suffix('.log')}\n"
                         + out.with_suffix(".log").read_text()[-2000:])
    return usage.ru_maxrss / 1024.0, seconds  # Linux: KiB


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=None, help="long-clip lengths (0 = baseline)")
    ap.add_argument("--short-clips", type=int, default=None, help="short test clips (~5 s each), default 100")
    ap.add_argument("--tta", default="windows", choices=("windows", "sequential", "full"))
    ap.add_argument("--batch-size", type=int, default=None, help="predict --batch-size (default: predict's own)")
    ap.add_argument("--width-mult", type=float, default=1.0, help="CNN-model-1 width (1.0 = published)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    minutes = args.minutes or ([0, 1] if args.quick else [0, 1, 5, 10])
    minutes = sorted(set([0.0] + [float(m) for m in minutes]))
    n_short = args.short_clips or (16 if args.quick else 100)
    extra = ["--tta", args.tta] + (["--batch-size", str(args.batch_size)] if args.batch_size else [])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        roots = make_data(work, short_clips=n_short, minutes=minutes)
        weights = make_weights(work, width_mult=args.width_mult)
        print(f"python -m fatlib predict {' '.join(extra)} --device cpu: {n_short} short clips (~5 s) "
              f"+ one long clip; CNN-model-1 x{args.width_mult:g}, cnn128 features")
        print(f"{'long clip':>10} {'peak RSS MiB':>13} {'x baseline':>11} {'seconds':>8} {'x baseline':>11}")
        base = None
        for m in minutes:
            rss, sec = run_predict(roots[m], weights, work / f"sub_{m:g}.csv", extra)
            base = base or (rss, sec)
            label = "none" if m == 0 else f"{m:g} min"
            print(f"{label:>10} {rss:13.0f} {rss / base[0]:11.2f} {sec:8.1f} {sec / base[1]:11.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
