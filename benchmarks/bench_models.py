"""Training throughput of every registered model: forward + backward + SGD step, samples/s.

Published widths (width_mult 1), batch 32, input 3 x 128 x 128 (cnn128 preset), 1 x 64 x 256 for
the dense models (dense64 preset), 8 s of log128 (1 x 128 x 345, with frequency encoding) or stft256
(1 x 40 x 2756) for the 3rd place's models, best of the timed steps. The baseline is cnn_model_1 measured in
the same run; each line prints its ratio to it (> 1: faster than the baseline).

    .venv/bin/python benchmarks/bench_models.py [--quick] [--device cpu|cuda|auto] [--models a,b]

``--quick``: batch 2, 1 warm-up and 1 timed step on one CPU thread (~15 s on a busy 2-core machine);
its ratios are rough. The full run (batch 32, best of 5 timed steps) takes several minutes on 2 cores.
``--threads N`` sets torch's CPU threads (default: torch's own choice, 1 with ``--quick``): on a
machine shared with other jobs, extra threads mostly wait for each other.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from fatlib.models import count_parameters, create_model, list_models, published_input

BASELINE = "cnn_model_1"


def input_shape(name: str) -> tuple[int, int, int]:
    """(channels, n_mels, frames) of the preset the model was published with."""
    if name == "stft1d_3rd":
        return (1, 40, 2756)
    if name.endswith("_3rd"):
        return (1, 128, 345)
    return (1, 64, 256) if name.startswith("dense") else (3, 128, 128)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_throughput(
    model: torch.nn.Module, *, shape: tuple[int, int, int], device: torch.device, batch_size: int, warmup: int, steps: int
) -> float:
    """Samples per second of forward + backward + SGD step on random input of ``(batch_size, *shape)``
    (80 classes): the fastest of ``steps`` timed steps after ``warmup`` ones (the best of several is
    the figure least disturbed by other processes on a shared machine)."""
    torch.manual_seed(0)
    model = model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(batch_size, *shape, device=device)
    y = (torch.rand(batch_size, 80, device=device) < 0.02).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return batch_size / min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 2, 1 timed step, 1 thread (< 60 s on CPU)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 (2 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 5, 1 with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default torch's; 1 with --quick)")
    parser.add_argument("--models", default=None, help=f"comma-separated subset of {list_models()}")
    args = parser.parse_args(argv)

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is available; use --device cpu")
    threads = args.threads or (1 if args.quick else None)
    if threads:
        torch.set_num_threads(threads)
    batch_size = args.batch_size or (2 if args.quick else 32)
    steps = args.steps or (1 if args.quick else 5)
    names = args.models.split(",") if args.models else list_models()
    unknown = sorted(set(names) - set(list_models()))
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {list_models()}")
    names = [BASELINE] + [n for n in names if n != BASELINE]

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {dev_name}, batch {batch_size}, best of {steps} timed steps, torch {torch.__version__}")
    print(f"{'model':<16} {'input':<12} {'params (M)':>10} {'samples/s':>10} {'vs ' + BASELINE:>16}")
    base = None
    for name in names:
        shape = input_shape(name)
        model = create_model(name, n_classes=80, width_mult=1.0, **{**published_input(name), "in_channels": shape[0]})
        n_params = count_parameters(model)
        rate = train_throughput(model, shape=shape, device=device, batch_size=batch_size, warmup=1, steps=steps)
        base = base or rate
        print(f"{name:<16} {'x'.join(map(str, shape)):<12} {n_params / 1e6:>10.2f} {rate:>10.1f} {rate / base:>15.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
