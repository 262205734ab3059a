"""Training throughput and the data-loading share of an epoch, measured in the same run.

On a synthetic data set (cache built first, not timed):

- ``load``: one pass over the training DataLoader alone (cache crops + normalisation), seconds;
- ``epoch``: one ``fit`` epoch of ``cnn_model_1`` on the same DataLoaders (loading + training);
- ``load / epoch``: the data-loading share (target <= 0.10 with the cache);
- ``wave load / cache load``: the on-the-fly waveform path's loading time relative to the cache's;
- training samples/s (CPU unless CUDA is present).

    python benchmarks/bench_train.py            # 256 clips, full-width cnn_model_1, 128x128 crops
    python benchmarks/bench_train.py --quick    # < 60 s on 2 CPU cores (64 clips, width 0.25)
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _drain(dl) -> None:
    for _ in dl:
        pass


def main(argv=None) -> None:
    import fastai.callback.progress  # noqa: F401  (Learner.no_bar)
    from fastai.learner import Learner

    from fatlib.cache import FeatureCache
    from fatlib.dataset import FatData
    from fatlib.features import get_preset
    from fatlib.loaders import build_dataloaders, input_callbacks
    from fatlib.losses import get_loss
    from fatlib.models import create_model
    from fatlib.synth import make_dataset

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small set and model (< 60 s on 2 CPU cores)")
    p.add_argument("--n-clips", type=int, default=None, help="curated clips (default 256, 64 with --quick)")
    p.add_argument("--width-mult", type=float, default=None, help="default 1.0, 0.25 with --quick")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    args = p.parse_args(argv)
    n = args.n_clips or (64 if args.quick else 256)
    width = args.width_mult if args.width_mult is not None else (0.25 if args.quick else 1.0)
    cfg = get_preset("cnn128", crop_frames=64) if args.quick else get_preset("cnn128")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    with tempfile.TemporaryDirectory() as tmp:
        root = make_dataset(Path(tmp) / "data", n_classes=10, n_curated=n, n_noisy=0, n_test=0,
                            max_seconds=4.0 if args.quick else 8.0, seed=0)
        data = FatData.from_dir(root)
        split = data.curated
        cache = FeatureCache.build(split.paths(), cfg, cache_dir=Path(tmp) / "cache", name="curated", progress=False)
        rows = np.arange(n)
        train, valid = rows[: n * 3 // 4], rows[n * 3 // 4 :]

        def dls_for(mode):
            src = cache if mode == "cache" else split.paths()
            return build_dataloaders([(src, train, split.targets[train])], [(src, valid, split.targets[valid])],
                                     cfg=cfg, mode=mode, batch_size=args.batch_size, n_workers=args.workers,
                                     device=device)

        dls = dls_for("cache")
        _drain(dls.train)  # warm the page cache
        load = min(_timed(lambda: _drain(dls.train)) for _ in range(2))
        wave_dls = dls_for("wave")
        wave_load = _timed(lambda: _drain(wave_dls.train))
        model = create_model("cnn_model_1", n_classes=len(data.vocab), in_channels=cfg.channels, width_mult=width)
        learn = Learner(dls, model, loss_func=get_loss("bce"), cbs=input_callbacks(cfg))  # float16 crops -> model input
        with learn.no_bar(), learn.no_logging():
            learn.fit(1, 1e-3)  # warm-up epoch
            epoch = _timed(lambda: learn.fit(1, 1e-3))
            learn.validate()
        n_train = len(dls.train) * args.batch_size
        print(f"device {device}, {n_train} training crops of {cfg.n_mels}x{cfg.crop_frames}, "
              f"cnn_model_1 width {width}, batch {args.batch_size}, workers {args.workers}")
        print(f"{'measure':<28}{'seconds':>10}{'ratio':>10}")
        print(f"{'cache load (1 pass)':<28}{load:>10.3f}{load / epoch:>10.3f}  (load / epoch)")
        print(f"{'wave load (1 pass)':<28}{wave_load:>10.3f}{wave_load / load:>10.1f}  (wave / cache load)")
        print(f"{'epoch (train + valid)':<28}{epoch:>10.3f}{1.0:>10.3f}")
        print(f"training samples/s (epoch time incl. validation): {n_train / epoch:.1f}")


if __name__ == "__main__":
    main()
