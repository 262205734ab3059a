"""GPU checks (issue 21), one table: each figure against a baseline measured in the same run.

1. ``step``: a training step of xresnet18 (batch 64, 3 x 128 x 258, the default recipe's input) with
   AMP (fp16 autocast + GradScaler) and channels-last vs float32 contiguous: samples/s and the ratio.
2. ``pinned``: host -> device copy of a float16 cache batch from pinned memory (non-blocking) vs
   pageable memory: GB/s and the ratio.
3. ``wave``: the 3rd-place waveform path on the device (64 clips x 10 s: batched effects + log128
   log-mels + model input, ``fatlib.wave_batch``) vs the per-clip librosa effects + ``log_mel`` on one
   CPU core: clips/s and the ratio.
4. ``nccl``: with two GPUs, a 2-process NCCL all-reduce of xresnet18's gradients (GB/s) and a
   DistributedDataParallel step vs one GPU's step (samples/s, the scaling); one GPU: skipped.
5. ``kernel``: the 12th-place kernel's budget: 1,120 public test clips (mean 7.6 s) x its models
   (3 stages x 10 folds x CNN-model-1 and VGG16-BN: 60 models), windows of 128 frames every 48, features
   once per clip on the device; the projected seconds against the 1,000 s budget.

Without a GPU it prints the table with "no GPU" rows and exits 0. ``--dry-run`` prints the checks
without running them; ``--cpu-smoke`` runs every check that can run on the CPU at tiny sizes (to test
the code; its figures are not GPU figures).

    python benchmarks/gpu_check.py               # on a GPU machine, a few minutes
    python benchmarks/gpu_check.py --dry-run
    python benchmarks/gpu_check.py --cpu-smoke   # CI: the code paths on the CPU, < 30 s
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CHECKS = ("step", "pinned", "wave", "nccl", "kernel")
NAMES = {"step": "training step (xresnet18)", "pinned": "pinned transfers", "wave": "3rd-place waveform path",
         "nccl": "2-GPU NCCL", "kernel": "12th-place kernel, 1,120 clips"}
PLAN = {
    "step": "xresnet18 training step, AMP + channels-last vs float32 (samples/s)",
    "pinned": "host -> device batch copy, pinned non-blocking vs pageable (GB/s)",
    "wave": "3rd-place waveform path on the device (batched effects + log-mels) vs per-clip librosa on 1 core (clips/s)",
    "nccl": "2-GPU NCCL all-reduce and DDP step vs 1 GPU (needs 2 GPUs)",
    "kernel": "12th-place kernel: 1,120 clips x 60 models (windows TTA) projected seconds vs the 1,000 s budget",
}
ROWS: list[tuple[str, str, str, str, str]] = []


def row(check: str, baseline: str, candidate: str, ratio: str, note: str = "") -> None:
    ROWS.append((check, baseline, candidate, ratio, note))
    print(f"  {check}: {candidate} vs {baseline} -> {ratio} {note}", flush=True)


def print_table() -> None:
    head = ("check", "baseline", "candidate", "ratio", "note")
    widths = [max(len(r[i]) for r in [head] + ROWS) for i in range(5)]
    print()
    for r in [head] + ROWS:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _median_seconds(fn, device, reps: int) -> float:
    """Median seconds of ``fn()`` over ``reps`` calls after one warm-up (bench_augment.time_per_call)."""
    sys.path.insert(0, str(HERE))
    from bench_augment import time_per_call

    return time_per_call(fn, reps=reps, device=device)


def check_step(device, smoke: bool) -> None:
    import torch

    from fatlib.models import create_model

    bs, frames = (4, 64) if smoke else (64, 258)
    reps = 1 if smoke else 10
    rates = {}
    for label, amp, cl in (("fp32", False, False), ("amp+cl", True, True)):
        torch.manual_seed(0)
        model = create_model("xresnet18", n_classes=80, in_channels=3, width_mult=0.25 if smoke else 1.0).to(device)
        fmt = torch.channels_last if cl else torch.contiguous_format
        model = model.to(memory_format=fmt).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
        x = torch.randn(bs, 3, 128, frames, device=device).contiguous(memory_format=fmt)
        y = (torch.rand(bs, 80, device=device) < 0.05).float()
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

        def step(model=model, opt=opt, scaler=scaler, x=x, y=y, dtype=dtype, amp=amp):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype, enabled=amp):
                loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).float(), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        rates[label] = bs / _median_seconds(step, device, reps)
    row(NAMES["step"], f"fp32 {rates['fp32']:.0f} samples/s", f"AMP + channels-last {rates['amp+cl']:.0f} samples/s",
        f"{rates['amp+cl'] / rates['fp32']:.2f}x", f"batch {bs}, 3x128x{frames}")


def check_pinned(device, smoke: bool) -> None:
    import torch

    if device.type != "cuda":
        row(NAMES["pinned"], "-", "-", "-", "needs CUDA (pinned memory)")
        return
    x = torch.randn(64, 1, 384, 258).half()  # a multires128 cache batch: float16, 1 channel, 3 x 128 rows
    pinned = x.pin_memory()
    nbytes = x.nelement() * x.element_size()
    t_page = _median_seconds(lambda: x.to(device), device, 20)
    t_pin = _median_seconds(lambda: pinned.to(device, non_blocking=True), device, 20)
    row(NAMES["pinned"], f"pageable {nbytes / t_page / 1e9:.1f} GB/s",
        f"pinned non-blocking {nbytes / t_pin / 1e9:.1f} GB/s", f"{t_page / t_pin:.2f}x",
        f"64 multires128 cache crops, {nbytes / 2**20:.1f} MiB")


def check_wave(device, smoke: bool) -> None:
    import torch

    from fatlib.features import get_preset, log_mel, to_model_input
    from fatlib.logmel import LogMel
    from fatlib.wave_augment import WaveAugment
    from fatlib.wave_batch import BatchWaveEffects

    cfg = get_preset("log128")
    n, seconds = (2, 2.0) if smoke else (64, 10.0)
    probs = {"reverb": 0.5, "pitch_shift": 0.5, "overdrive": 0.5, "tempo": 0.5}  # the 3rd-place recipe's
    fx = BatchWaveEffects(p=0.75, sample_rate=cfg.sample_rate, probs=probs, seed=0)
    frames = 1 + int(seconds * cfg.sample_rate) // cfg.hop_length
    rng = np.random.default_rng(0)
    waves = (0.1 * rng.standard_normal((n, (fx.loaded_frames(frames) - 1) * cfg.hop_length))).astype(np.float32)
    logmel = LogMel(cfg).to(device)
    batch = torch.from_numpy(waves).to(device)

    def on_device():
        with torch.no_grad():
            to_model_input(fx.apply(logmel, batch, frames=frames), cfg)

    t_dev = _median_seconds(on_device, device, 1 if smoke else 10)
    ref = WaveAugment(p=0.75, sample_rate=cfg.sample_rate, probs=probs, seed=0)
    k = min(n, 2 if smoke else 8)  # a few clips on the CPU are enough for a rate
    cpu = torch.device("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t_cpu = _median_seconds(lambda: [log_mel(ref(w), cfg) for w in waves[:k]], cpu, 1)
    finally:
        torch.set_num_threads(threads)
    rate_dev, rate_cpu = n / t_dev, k / t_cpu
    row(NAMES["wave"], f"per-clip librosa, 1 core {rate_cpu:.1f} clips/s",
        f"batched on {device.type} {rate_dev:.1f} clips/s", f"{rate_dev / rate_cpu:.1f}x", f"{n} clips x {seconds:g} s, log128")


def _nccl_worker(rank: int, world: int, port: int, q) -> None:
    import torch
    import torch.distributed as dist

    from fatlib.models import create_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl", rank=rank, world_size=world)
    dev = torch.device("cuda", rank)
    torch.cuda.set_device(dev)
    grads = torch.randn(11_700_000, device=dev)  # about xresnet18's parameters
    dist.all_reduce(grads)
    torch.cuda.synchronize(dev)
    start = time.perf_counter()
    for _ in range(10):
        dist.all_reduce(grads)
    torch.cuda.synchronize(dev)
    gbps = 10 * grads.nelement() * 4 / (time.perf_counter() - start) / 1e9
    model = torch.nn.parallel.DistributedDataParallel(create_model("xresnet18", n_classes=80, in_channels=3).to(dev),
                                                      device_ids=[rank])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 3, 128, 258, device=dev), (torch.rand(64, 80, device=dev) < 0.05).float()

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
        opt.step()

    step()
    torch.cuda.synchronize(dev)
    start = time.perf_counter()
    for _ in range(10):
        step()
    torch.cuda.synchronize(dev)
    rate = world * 64 * 10 / (time.perf_counter() - start)
    if rank == 0:
        q.put((gbps, rate))
    dist.destroy_process_group()


def check_nccl(device, smoke: bool) -> None:
    import torch

    n_gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if n_gpus < 2:
        row(NAMES["nccl"], "-", "-", "-", f"skipped: {n_gpus} GPU(s), needs 2")
        return
    import socket

    import torch.multiprocessing as mp

    from fatlib.models import create_model

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_nccl_worker, args=(r, 2, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    gbps, rate2 = q.get(timeout=300)
    for p in procs:
        p.join(timeout=60)
    model = create_model("xresnet18", n_classes=80, in_channels=3).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 3, 128, 258, device=device), (torch.rand(64, 80, device=device) < 0.05).float()

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
        opt.step()

    rate1 = 64 / _median_seconds(step, device, 10)
    row(NAMES["nccl"], f"1 GPU {rate1:.0f} samples/s", f"2 GPUs {rate2:.0f} samples/s", f"{rate2 / rate1:.2f}x",
        f"DDP step; all-reduce of 11.7 M floats {gbps:.1f} GB/s")


def check_kernel(device, smoke: bool) -> None:
    import torch

    from fatlib.features import get_preset
    from fatlib.logmel import LogMel
    from fatlib.models import create_model

    cfg = get_preset("cnn128")
    n_clips, mean_s, step = 1120, 7.6, 48
    models = {"cnn_model_1": 30, "vgg16_bn": 30}  # 3 stages x 10 folds each (REFERENCE.md: 12th place)
    frames = 1 + int(mean_s * cfg.sample_rate) // cfg.hop_length
    windows_per_clip = 1 + max(0, frames - cfg.crop_frames) // step
    bs = 4 if smoke else 256
    clips_probe = 2 if smoke else 64
    logmel = LogMel(cfg).to(device)
    waves = torch.randn(clips_probe, int(mean_s * cfg.sample_rate), device=device) * 0.1
    with torch.no_grad():
        t_feat = _median_seconds(lambda: logmel(waves), device, 1 if smoke else 5) / clips_probe * n_clips
    x = torch.randn(bs, 3, cfg.n_mels, cfg.crop_frames, device=device)
    total = t_feat
    per_model = []
    for name, count in models.items():
        model = create_model(name, n_classes=80, in_channels=3, width_mult=0.25 if smoke else 1.0).to(device).eval()
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)

        def forward(model=model, x=x):
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                torch.sigmoid(model(x))

        sec_per_window = _median_seconds(forward, device, 1 if smoke else 5) / bs
        t = sec_per_window * windows_per_clip * n_clips * count
        per_model.append(f"{name} x{count} {t:.0f} s")
        total += t
    verdict = "within" if total <= 1000 else "OVER"
    row(NAMES["kernel"], "budget 1000 s", f"projected {total:.0f} s ({'; '.join(per_model)}; "
        f"features {t_feat:.0f} s)", f"{total / 1000:.2f}x", f"{verdict} budget; {windows_per_clip} windows a clip")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="print the checks, run nothing")
    p.add_argument("--cpu-smoke", action="store_true", help="run the checks that can run on the CPU at tiny sizes")
    p.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    args = p.parse_args(argv)
    checks = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        p.error(f"--only: unknown {unknown}; choose from {list(CHECKS)}")
    if args.dry_run:
        for c in checks:
            print(f"{c:8s} {PLAN[c]}")
        return 0
    sys.path.insert(0, str(HERE.parent))
    import torch

    if torch.cuda.is_available():
        device = torch.device("cuda")
        print(f"device: {torch.cuda.get_device_name(device)} x {torch.cuda.device_count()}, torch {torch.__version__}")
    elif args.cpu_smoke:
        device = torch.device("cpu")
        print(f"no GPU: --cpu-smoke runs the checks on the CPU at tiny sizes (not GPU figures), torch {torch.__version__}")
    else:
        print("no GPU: nothing measured (run on a machine with CUDA; --cpu-smoke tests the code on the CPU)")
        for c in checks:
            row(NAMES[c], "-", "-", "-", "no GPU")
        print_table()
        return 0
    funcs = {"step": check_step, "pinned": check_pinned, "wave": check_wave, "nccl": check_nccl, "kernel": check_kernel}
    for c in checks:
        print(f"[{c}]", flush=True)
        funcs[c](device, args.cpu_smoke)
    print_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
