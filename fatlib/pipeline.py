"""The 12th-place warm-up pipeline (``REFERENCE.md``, "Training and the noisy set"):

1. stage1: from scratch on noisy clips; out-of-fold per-clip lwlrap on noisy = lwlrap1
2. stage2: curated, initialised from stage1 (fold k from fold k); lwlrap2
3. keep noisy clips with sqrt(lwlrap1 * lwlrap2) >= 0.5, at most 5 per fold per label;
   stage3: curated + kept, from stage2; lwlrap3
4. keep noisy clips with lwlrap3 == 1; stage4: curated + kept, from stage3
5. ensemble of stages 2-4 (mean of out-of-fold probabilities on curated) and its CV lwlrap

``warmup`` runs it for any registered model (``cnn_model_1``; ``vgg16_bn`` for the VGG16 variant)
and writes ``weights/<run>/summary.json`` and ``stages.csv``. Every stage is resumable, so a rerun
continues where it stopped.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .io import write_csv, write_json
from .train import StageConfig, add_stage_arguments, noisy_folds, train_stage

ENSEMBLE_STAGES = ("stage2", "stage3", "stage4")


def warmup(
    data,
    *,
    run: str,
    model: str = "cnn_model_1",
    weights_root="weights",
    cache_dir="cache",
    stage3_threshold: float = 0.5,
    stage3_cap: int | None = 5,
    stage4_threshold: float = 1.0,
    stage_overrides: dict | None = None,
    progress: bool = True,
    **overrides,
) -> dict:
    """Run (or resume) stages 1-4 and the stage ensemble; returns the summary dict.

    ``overrides`` are StageConfig fields for every stage (epochs, lr, batch_size, n_folds, preset, mel,
    model_kwargs, augment, ...); ``stage_overrides`` maps "stage1".."stage4" to per-stage fields.
    """
    from .ensemble import combine
    from .metrics import lwlrap
    from .select import run_rule

    stage_overrides = dict(stage_overrides or {})
    unknown = sorted(set(stage_overrides) - {"stage1", "stage2", "stage3", "stage4"})
    if unknown:
        raise DataError(f"stage_overrides: unknown stages {unknown}; use stage1..stage4.")
    run_dir = Path(weights_root) / run
    base = StageConfig(name="stage1", model=model, **overrides)
    nz_folds = None
    results, selected = {}, {}

    def stage(name, train_on, init, selection=None):
        cfg = base.replace(name=name, train_on=train_on, selection_csv=selection and str(selection),
                           init_from=init and str(run_dir / init), **stage_overrides.get(name, {}))
        results[name] = train_stage(cfg, data, run_dir=run_dir, cache_dir=cache_dir, progress=progress)

    def select(name, rule, sources, **params):
        sel = run_rule(rule, stage_dirs=[run_dir / s for s in sources], targets=data.noisy.targets,
                       folds=nz_folds, fnames=data.noisy.fnames, vocab=data.vocab, **params)
        selected[name] = len(sel)
        return sel.write(run_dir / name / "selected.csv", fnames=data.noisy.fnames, vocab=data.vocab)

    stage("stage1", "noisy", None)
    nz_folds = noisy_folds(data, run_dir=run_dir, n_folds=base.n_folds, seed=base.folds_seed)
    stage("stage2", "curated", "stage1")
    sel3 = select("stage3", "stage3", ["stage1", "stage2"], threshold=stage3_threshold,
                  max_per_fold_label=stage3_cap)
    stage("stage3", "curated+selected", "stage2", sel3)
    sel4 = select("stage4", "stage4", ["stage3"], threshold=stage4_threshold, max_per_fold_label=None)
    stage("stage4", "curated+selected", "stage3", sel4)

    ens = combine([results[s].oof_curated for s in ENSEMBLE_STAGES], method="mean")
    cv_ens = lwlrap(data.curated.targets, ens)
    write_csv(run_dir / "oof_ensemble_curated.csv",
              pd.concat([pd.DataFrame({"fname": data.curated.fnames}), pd.DataFrame(ens, columns=data.vocab)], axis=1))
    rows = [
        {"stage": name, "train_on": StageConfig.load(r.stage_dir / "config.json").train_on,
         "n_selected": selected.get(name, 0), "cv_lwlrap_curated": r.cv_curated, "cv_lwlrap_noisy": r.cv_noisy}
        for name, r in results.items()
    ]
    rows.append({"stage": "ensemble(" + "+".join(ENSEMBLE_STAGES) + ")", "train_on": "",
                 "n_selected": 0, "cv_lwlrap_curated": cv_ens, "cv_lwlrap_noisy": float("nan")})
    table = pd.DataFrame(rows)
    write_csv(run_dir / "stages.csv", table)
    summary = {
        "run": run, "model": model, "stages": rows, "ensemble_stages": list(ENSEMBLE_STAGES),
        "cv_lwlrap_ensemble": cv_ens, "n_noisy": len(data.noisy.fnames), "n_curated": len(data.curated.fnames),
        "base_config": base.to_dict(),
    }
    write_json(run_dir / "summary.json", summary)
    if progress:
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return summary


def stage_oof(run_dir, stage: str) -> np.ndarray:
    """A finished stage's out-of-fold curated probabilities (n_curated, n_classes)."""
    path = Path(run_dir) / stage / "oof_curated.csv"
    if not path.exists():
        raise DataError(f"{path}: not found; train stage {stage!r} of this run first.")
    return pd.read_csv(path).drop(columns=["fname"]).to_numpy(dtype=np.float32)


def _cli(args) -> int:
    from .data import FatData
    from .train import json_arg

    over = {k: v for k, v in {
        "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "n_folds": args.n_folds,
        "preset": args.preset, "loss": args.loss, "augment": args.augment, "seed": args.seed,
        "n_workers": args.workers, "model_kwargs": json_arg(args.model_kwargs, flag="--model-kwargs"),
        "mel": json_arg(args.mel, flag="--mel"),
    }.items() if v is not None}
    if args.wave_augment:
        over["wave_augment"] = True
    data = FatData.from_dir(args.data)
    summary = warmup(data, run=args.run, model=args.model or "cnn_model_1", weights_root=args.weights,
                     cache_dir=args.cache_dir, stage3_threshold=args.stage3_threshold,
                     stage3_cap=None if args.stage3_cap <= 0 else args.stage3_cap, progress=not args.quiet, **over)
    print(f"ensemble CV lwlrap {summary['cv_lwlrap_ensemble']:.4f} -> {Path(args.weights) / args.run / 'summary.json'}")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("warmup", help="12th-place warm-up pipeline: stages 1-4 + stage ensemble")
    add_stage_arguments(p)
    p.add_argument("--stage3-threshold", type=float, default=0.5, help="sqrt(lwlrap1*lwlrap2) threshold")
    p.add_argument("--stage3-cap", type=int, default=5, help="clips per fold per label (0: no cap)")
    p.set_defaults(func=_cli)
