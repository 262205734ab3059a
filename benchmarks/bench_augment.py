"""Cost of each batch augmentation relative to one training step of a CNN, measured in the same run.

Batch: B=32 spectrograms 3 x 128 x 128 (the cnn128 crop). Baseline: one forward + backward pass of
``fatlib.models.create_model("cnn_model_1", width_mult=...)`` on that batch. Printed: seconds per
batch and the ratio augmentation / baseline (0.05 = the augmentation adds 5 % to a step). Also the
waveform effects (``WaveAugment``, p 0.75) on the 32 clips of 2 s that would make that batch; they run
per clip with librosa (the reference), and batched on the step's device (``fatlib.wave_batch``, what
training runs), as the extra time over the log-mels the batch needs anyway.

    python benchmarks/bench_augment.py            # full width model, more repeats
    python benchmarks/bench_augment.py --quick    # < 60 s on 2 CPU cores (width 0.25, few repeats)
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fatlib.augment import SPECTROGRAM_AUGMENTS, apply_augment, get_augment
from fatlib.models import create_model
from fatlib.wave_augment import WaveAugment


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_call(fn, *, reps: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``reps`` calls after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small model, few repeats (< 60 s on 2 CPU cores)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--model", default="cnn_model_1")
    p.add_argument("--width-mult", type=float, default=None, help="default 1.0, or 0.25 with --quick")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    width = args.width_mult if args.width_mult is not None else (0.25 if args.quick else 1.0)
    step_reps, aug_reps = (2, 5) if args.quick else (5, 20)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, 128, 128, generator=g).to(device)
    y = (torch.rand(args.batch_size, 80, generator=g) > 0.95).float().to(device)
    model = create_model(args.model, n_classes=80, in_channels=3, width_mult=width).to(device).train()
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step():
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()

    base = time_per_call(step, reps=step_reps, device=device)
    print(f"device {device}, batch {args.batch_size}x3x128x128, baseline: {args.model} width {width} "
          f"forward+backward {base * 1000:.1f} ms")
    print(f"{'augmentation':<16}{'ms/batch':>10}{'ratio':>9}")
    for name in sorted(SPECTROGRAM_AUGMENTS):  # ormixup_wave needs waveforms: the wave rows below
        cb = get_augment(name, seed=0)
        sec = time_per_call(lambda cb=cb: apply_augment(cb, x, y), reps=aug_reps, device=device)
        print(f"{name:<16}{sec * 1000:>10.2f}{sec / base:>9.3f}")

    sample_rate = 44100
    clips = [np.random.default_rng(i).uniform(-0.3, 0.3, 2 * sample_rate).astype(np.float32)
             for i in range(args.batch_size)]
    wave = WaveAugment(p=0.75, sample_rate=sample_rate, seed=0)
    wave(clips[0])                                          # first call loads librosa/numba code
    sec = time_per_call(lambda: [wave(c) for c in clips], reps=1 if args.quick else 3, device=device)
    print(f"{'wave (32x2s)':<16}{sec * 1000:>10.2f}{sec / base:>9.3f}  (per clip, librosa: the reference)")

    from fatlib.features import get_preset
    from fatlib.logmel import LogMel
    from fatlib.wave_batch import BatchWaveEffects

    cfg = get_preset("log128")
    fx = BatchWaveEffects(p=0.75, sample_rate=sample_rate, seed=0)
    frames = 1 + 2 * sample_rate // cfg.hop_length
    n = (fx.loaded_frames(frames) - 1) * cfg.hop_length
    waves = torch.from_numpy(np.stack([np.resize(c, n) for c in clips])).to(device)
    logmel = LogMel(cfg).to(device)
    plain_t, batched_t = [], []
    with torch.no_grad():  # interleaved, so that other jobs' load falls on both alike
        for _ in range(aug_reps):
            plain_t.append(time_per_call(lambda: logmel(waves[:, : (frames - 1) * cfg.hop_length]), reps=1, device=device))
            batched_t.append(time_per_call(lambda: fx.apply(logmel, waves, frames=frames), reps=1, device=device))
    extra = float(np.median(batched_t) - np.median(plain_t))
    print(f"{'wave batched':<16}{extra * 1000:>10.2f}{extra / base:>9.3f}  (BatchWaveEffects on {device.type}: "
          f"log128 features with the effects minus without)")


if __name__ == "__main__":
    main()
