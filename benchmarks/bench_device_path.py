"""Host side of a training batch, before and after the lean device path, measured in the same run.

On a synthetic data set with ``cnn128`` features (128 mels x 128-frame crops; cache built first, not timed):

- ``host ms / batch``: producing one training batch in the loading process (crops, sound mix, the
  older path's float32 normalisation and 3-channel copy per item, collation), one torch thread as in
  a DataLoader worker;
- ``bytes / batch``: what crosses from the host to the device per batch (x, clip stats, targets), also
  what DataLoader workers send through their queues: float32 x 3 channels before, float16 x 1 after;
- ``device ms / batch``: the lean path's float16 -> normalised float32 3-channel step (``CacheToInput``),
  which runs on the device (on the CPU here when no GPU is present, so it is host time too);
- ``samples/s``: a few training steps of ``cnn_model_1`` through a fastai Learner (the old path without
  callback, the lean one with ``CacheToInput``), validation excluded.

    python benchmarks/bench_device_path.py                # batch 64, full-width cnn_model_1, 6 steps
    python benchmarks/bench_device_path.py --batch-size 128
    python benchmarks/bench_device_path.py --quick        # about 2 min on 2 CPU cores (width 0.25, 3 steps)
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _nbytes(batch) -> int:
    return sum(t.nelement() * t.element_size() for t in batch if torch.is_tensor(t))


def _host_ms(dl, n_batches: int) -> tuple[float, int]:
    """Median milliseconds to produce a batch (collated, on the host) and its bytes, with one torch
    thread as in a DataLoader worker (fastai sets it so)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        it, times, nbytes = iter(dl), [], 0
        for _ in range(n_batches):
            start = time.perf_counter()
            b = next(it)
            times.append(time.perf_counter() - start)
            nbytes = _nbytes(b)
    finally:
        torch.set_num_threads(threads)
    return 1e3 * float(np.median(times)), nbytes


def _samples_per_s(dls, cfg, *, lean: bool, width: float, n_classes: int, device, channels_last: bool) -> float:
    import fastai.callback.progress  # noqa: F401  (Learner.no_bar)
    from fastai.callback.core import Callback
    from fastai.learner import Learner

    from fatlib.loaders import ChannelsLast, input_callbacks
    from fatlib.losses import get_loss
    from fatlib.models import create_model

    class TrainTime(Callback):
        order = 99

        def before_train(self):
            _sync(device)
            self.start = time.perf_counter()

        def after_train(self):
            _sync(device)
            self.seconds = time.perf_counter() - self.start

        def before_validate(self):
            from fastai.callback.core import CancelValidException

            raise CancelValidException

    timer = TrainTime()
    cbs = (input_callbacks(cfg) if lean else []) + ([ChannelsLast()] if channels_last else []) + [timer]
    model = create_model("cnn_model_1", n_classes=n_classes, in_channels=cfg.channels, width_mult=width)
    learn = Learner(dls, model, loss_func=get_loss("bce"), cbs=cbs)
    if device.type == "cuda":
        learn = learn.to_fp16()
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 1e-3)  # warm-up (cuDNN autotuning, allocator)
        learn.fit(1, 1e-3)
    return len(dls.train) * dls.train.bs / timer.seconds


def main(argv=None) -> None:
    from fatlib.cache import FeatureCache
    from fatlib.dataset import FatData
    from fatlib.features import get_preset
    from fatlib.loaders import build_dataloaders, cache_batch_to_input
    from fatlib.synth import make_dataset

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="narrower model, fewer steps (about 2 min on 2 CPU cores)")
    p.add_argument("--batch-size", type=int, default=64, help="clips per batch (default: 64)")
    p.add_argument("--steps", type=int, default=None, help="training steps timed (default 6, 3 with --quick)")
    p.add_argument("--width-mult", type=float, default=None, help="cnn_model_1 width (default 1.0, 0.25 with --quick)")
    p.add_argument("--mix", type=float, default=0.5, help="sound mix share of training clips (default: 0.5)")
    p.add_argument("--channels-last", action="store_true", help="train in channels-last memory format")
    args = p.parse_args(argv)
    steps = args.steps or (3 if args.quick else 6)
    width = args.width_mult if args.width_mult is not None else (0.25 if args.quick else 1.0)
    bs = args.batch_size
    cfg = get_preset("cnn128")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    n_clips = 32 if args.quick else 64  # synthesised; the training rows repeat them (same work per item)

    with tempfile.TemporaryDirectory() as tmp:
        root = make_dataset(Path(tmp) / "data", n_classes=10, n_curated=n_clips, n_noisy=0, n_test=0, max_seconds=6.0,
                            seed=0)
        split = FatData.from_dir(root).curated
        cache = FeatureCache.build(split.paths(), cfg, cache_dir=Path(tmp) / "cache", name="curated", progress=False)
        train, valid = np.resize(np.arange(n_clips), bs * steps), np.arange(min(bs, n_clips))

        def dls_for(lean: bool):
            return build_dataloaders([(cache, train, split.targets[train])], [(cache, valid, split.targets[valid])],
                                     cfg=cfg, batch_size=bs, n_workers=0, device=device, mix_p=args.mix,
                                     device_input=lean)

        old_dls, lean_dls = dls_for(False), dls_for(True)
        _host_ms(lean_dls.train, 1)  # warm the page cache
        # host side: the DataLoaders without a device, so only the host work is timed
        old_host = build_dataloaders([(cache, train, split.targets[train])], [(cache, valid, split.targets[valid])],
                                     cfg=cfg, batch_size=bs, mix_p=args.mix, device_input=False)
        lean_host = build_dataloaders([(cache, train, split.targets[train])], [(cache, valid, split.targets[valid])],
                                      cfg=cfg, batch_size=bs, mix_p=args.mix, device_input=True)
        n_b = len(old_host.train)
        old_ms, old_bytes = _host_ms(old_host.train, n_b)
        lean_ms, lean_bytes = _host_ms(lean_host.train, n_b)
        xb, stats, _ = next(iter(lean_dls.train))
        times = []
        for _ in range(5):
            _sync(device)
            start = time.perf_counter()
            cache_batch_to_input(xb, stats, cfg)
            _sync(device)
            times.append(time.perf_counter() - start)
        dev_ms = 1e3 * float(np.median(times))
        kw = dict(width=width, n_classes=split.targets.shape[1], device=device, channels_last=args.channels_last)
        old_sps = _samples_per_s(old_dls, cfg, lean=False, **kw)
        lean_sps = _samples_per_s(lean_dls, cfg, lean=True, **kw)

    print(f"device {device}, batch {bs} crops of {cfg.n_mels}x{cfg.crop_frames} ({cfg.channels} channels), sound mix "
          f"{args.mix}, cnn_model_1 width {width}, {steps} timed steps, workers 0")
    print(f"{'per training batch':<26}{'before':>12}{'after':>12}{'after/before':>14}")
    print(f"{'host ms':<26}{old_ms:>12.1f}{lean_ms:>12.1f}{lean_ms / old_ms:>14.2f}")
    print(f"{'bytes moved':<26}{old_bytes:>12,}{lean_bytes:>12,}{lean_bytes / old_bytes:>14.3f}")
    print(f"{'MiB moved':<26}{old_bytes / 2**20:>12.2f}{lean_bytes / 2**20:>12.2f}")
    print(f"{'device ms (conversion)':<26}{0.0:>12.1f}{dev_ms:>12.1f}{'':>14}  (on {device.type})")
    print(f"{'training samples/s':<26}{old_sps:>12.1f}{lean_sps:>12.1f}{lean_sps / old_sps:>14.2f}")


if __name__ == "__main__":
    main()
