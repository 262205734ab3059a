"""Does the warm-up pipeline help? Curated CV lwlrap of each stage and of the stage ensemble versus
curated-only training with the same total epoch budget (4 stages x E epochs = 4E curated epochs)
and curated + every noisy clip with its noisy labels (no selection, same 4E epochs),
on a synthetic data set with label noise in the noisy split, over several seeds (data and training).

Prints one row per seed and the mean, plus the difference ensemble - curated-only (the baseline
measured in the same run).

    python benchmarks/warmup_evidence.py                # 3 seeds, 160+320 clips, 3 epochs per stage, 3 folds
    python benchmarks/warmup_evidence.py --quick        # < 60 s on 2 CPU cores: 1 seed, tiny set and model
    python benchmarks/warmup_evidence.py --n-curated 400 --n-noisy 1600 --epochs 8 --width-mult 0.5
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def main(argv=None) -> None:
    from fatlib.dataset import FatData
    from fatlib.folds import noisy_folds
    from fatlib.pipeline import warmup
    from fatlib.selection import Selection
    from fatlib.synth import make_dataset
    from fatlib.train import StageConfig, train_stage

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1 seed, tiny set and model (< 60 s on 2 CPU cores)")
    p.add_argument("--seeds", type=int, default=None, help="default 3 (1 with --quick)")
    p.add_argument("--n-classes", type=int, default=8)
    p.add_argument("--n-curated", type=int, default=None, help="default 160 (32 with --quick)")
    p.add_argument("--n-noisy", type=int, default=None, help="default 320 (32 with --quick)")
    p.add_argument("--noise-rate", type=float, default=0.3, help="share of noisy clips with wrong labels")
    p.add_argument("--epochs", type=int, default=None, help="epochs per stage (default 3, 1 with --quick)")
    p.add_argument("--n-folds", type=int, default=None, help="default 3 (2 with --quick)")
    p.add_argument("--width-mult", type=float, default=None, help="default 0.25 (0.125 with --quick)")
    p.add_argument("--model", default="cnn_model_1")
    p.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    args = p.parse_args(argv)
    q = args.quick
    seeds = args.seeds or (1 if q else 3)
    n_cur, n_noisy = args.n_curated or (32 if q else 160), args.n_noisy or (32 if q else 320)
    epochs, n_folds = args.epochs or (1 if q else 3), args.n_folds or (2 if q else 3)
    width = args.width_mult or (0.125 if q else 0.25)
    mel = dict(n_mels=32, n_fft=2048, hop_length=1024, crop_frames=32) if q else dict(n_mels=64, crop_frames=64)
    common = dict(model_kwargs={"width_mult": width}, mel=mel, n_folds=n_folds, batch_size=32, cache_jobs=1 if q else None,
                  augment=["specmix"], auto_scale=False)  # the settings these figures were measured with

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        rows = []
        for seed in range(seeds):
            root = make_dataset(out / f"data{seed}", n_classes=args.n_classes, n_curated=n_cur, n_noisy=n_noisy,
                                n_test=0, noise_rate=args.noise_rate, max_seconds=3.0 if q else 6.0, seed=seed)
            data = FatData.from_dir(root)
            kw = dict(weights_root=out / "weights", cache_dir=out / f"cache{seed}", progress=False)
            summary = warmup(data, run=f"warmup{seed}", model=args.model, epochs=epochs, seed=seed, **kw, **common)
            base = StageConfig(name="curated_only", model=args.model, train_on="curated", epochs=4 * epochs,
                               seed=seed, **common)
            res = train_stage(base, data, run_dir=out / "weights" / f"warmup{seed}", cache_dir=kw["cache_dir"],
                              progress=False)
            # second baseline: curated + every noisy clip with its noisy labels (no selection), same budget
            run_dir = out / "weights" / f"warmup{seed}"
            nz = noisy_folds(data, run_dir=run_dir, n_folds=n_folds, seed=base.folds_seed)
            every = Selection(np.arange(len(nz)), data.noisy.targets, np.ones(len(nz)), nz)
            sel_csv = every.write(run_dir / "all_noisy.csv", fnames=data.noisy.fnames, vocab=data.vocab)
            res_all = train_stage(base.replace(name="curated_all_noisy", train_on="curated+selected",
                                               selection_csv=str(sel_csv)),
                                  data, run_dir=run_dir, cache_dir=kw["cache_dir"], progress=False)
            stage_cv = {r["stage"]: r["cv_lwlrap_curated"] for r in summary["stages"]}
            rows.append([stage_cv["stage1"], stage_cv["stage2"], stage_cv["stage3"], stage_cv["stage4"],
                         summary["cv_lwlrap_ensemble"], res.cv_curated, res_all.cv_curated])
            print(f"seed {seed} done", flush=True)
    names = ["stage1", "stage2", "stage3", "stage4", "ens2-4", "cur-only", "cur+noisy"]
    print(f"\n{n_cur} curated + {n_noisy} noisy clips ({args.noise_rate:.0%} wrong labels), {args.n_classes} classes, "
          f"{args.model} width {width}, {epochs} epochs/stage, {n_folds} folds; curated CV lwlrap")
    print(f"{'seed':<6}" + "".join(f"{n:>10}" for n in names) + f"{'ens-cur':>10}{'ens-all':>10}")
    table = np.array(rows)
    for seed, r in enumerate(table):
        print(f"{seed:<6}" + "".join(f"{v:>10.4f}" for v in r) + f"{r[4] - r[5]:>+10.4f}{r[4] - r[6]:>+10.4f}")
    m = table.mean(axis=0)
    print(f"{'mean':<6}" + "".join(f"{v:>10.4f}" for v in m) + f"{m[4] - m[5]:>+10.4f}{m[4] - m[6]:>+10.4f}")


if __name__ == "__main__":
    main()
