"""``python -m fatlib warmup``: the 12th-place warm-up pipeline (stages 1-4 and the stage ensemble) of one model:
CNN-model-1, or the recipe's VGG16-BN stages with ``--model vgg16_bn`` (:func:`fatlib.pipeline.warmup_half`)."""
from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ..recipes import DEFAULT_RECIPE
from .options import (
    add_input_roots_argument,
    add_stage_arguments,
    given_sources,
    result_line,
    run_name,
    stage_overrides,
)


def register(subparsers) -> None:
    from ..pipeline import STAGES
    from ..recipes import load_recipe

    rec = load_recipe(DEFAULT_RECIPE)
    sel = rec.selection
    epochs = [rec.stage_fields(s).get("epochs") for s in STAGES]
    p = subparsers.add_parser(
        "warmup", help="12th-place warm-up pipeline: stages 1-4 + stage ensemble",
        description="The warm-up pipeline: stage1 on noisy, stage2 on curated from stage1, stages 3 and 4 on "
        "curated + selected noisy clips, then the stage 2-4 ensemble: the recipe's CNN-model-1 warm-up, or with "
        "--model vgg16_bn its VGG16-BN warm-up (vgg_stage1..4, trained here as stage1..4 of the run). Settings come "
        "from the recipe, then the options; every stage resumes where it stopped. `python -m fatlib run 12th_place` "
        "trains both warm-ups in one run and their 6-model ensemble.")
    add_stage_arguments(p)
    p.add_argument("--stage-epochs", type=int, nargs=len(STAGES), default=None, metavar="E",
                   help=f"epochs of stage1..stage4 (default: {' '.join(map(str, epochs))}, recipe {DEFAULT_RECIPE})")
    p.add_argument("--stage3-threshold", type=float, default=None,
                   help=f"keep noisy clips with sqrt(lwlrap1*lwlrap2) >= this (default: {sel['stage3']['threshold']})")
    p.add_argument("--stage3-cap", type=int, default=None,
                   help=f"at most this many kept clips per fold per label, 0: no cap "
                   f"(default: {sel['stage3']['max_per_fold_label']})")
    p.add_argument("--stage4-threshold", type=float, default=None,
                   help=f"keep noisy clips with lwlrap3 >= this (default: {sel['stage4']['threshold']})")
    p.add_argument("--stage", default=None, choices=[*STAGES, "ensemble"],
                   help="run only this step (its earlier stages must be finished) (default: every step)")
    add_input_roots_argument(p)
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from .. import distrib
    from ..dataset import FatData
    from ..pipeline import STAGES, stage_ensemble, warmup, warmup_stage

    over = stage_overrides(args)
    model = over.pop("model", None)
    per_stage = {}
    if args.stage_epochs:
        if len(args.stage_epochs) != len(STAGES):
            raise DataError(f"--stage-epochs takes {len(STAGES)} numbers (stage1..stage4), got {args.stage_epochs}")
        per_stage = {s: {"epochs": e} for s, e in zip(STAGES, args.stage_epochs)}
    selection = {}
    if args.stage3_threshold is not None or args.stage3_cap is not None:
        selection["stage3"] = {k: v for k, v in {
            "threshold": args.stage3_threshold,
            "max_per_fold_label": None if args.stage3_cap is not None and args.stage3_cap <= 0 else args.stage3_cap,
        }.items() if v is not None or k == "max_per_fold_label" and args.stage3_cap is not None}
    if args.stage4_threshold is not None:
        selection["stage4"] = {"threshold": args.stage4_threshold}
    data = FatData.from_dir(args.data)
    args.run = run_name(args, n_dataset=data.n_train_clips)
    _check_outputs(args, data, model=model, over=over)
    sources = {**given_sources(args), **({"epochs": "--stage-epochs"} if per_stage else {})}
    common = dict(run=args.run, recipe=args.recipe, model=model, weights_root=args.weights, cache_dir=args.cache_dir,
                  progress=not args.quiet, input_roots=args.input_roots, sources=sources)
    if args.stage in STAGES:
        res = warmup_stage(args.stage, data, selection=selection.get(args.stage), folds=args.folds, **common,
                           **{**over, **per_stage.get(args.stage, {})})
        if res is not None:
            print(result_line(args.stage, res))
        return 0
    if args.folds is not None:
        raise DataError("--folds needs --stage stage1..stage4 (one stage at a time)")
    if args.stage == "ensemble":
        summary = stage_ensemble(data, run=args.run, weights_root=args.weights, progress=not args.quiet,
                                 input_roots=args.input_roots, recipe=args.recipe) if distrib.is_main_process() else None
    else:
        summary = warmup(data, selection=selection, stage_overrides=per_stage, **common, **over)
    if summary is None:  # not the main process of a job
        return 0
    print(f"ensemble CV lwlrap {summary['cv_lwlrap_ensemble']:.4f} -> {Path(args.weights) / args.run / 'summary.json'}")
    return 0


def _check_outputs(args, data, *, model, over) -> None:
    """Before any stage: the run folder and the cache folder can take what the stages will write."""
    from ..pipeline import STAGES
    from ..preflight import check_writable
    from ..recipes import load_recipe
    from ..settings import StageConfig
    from ..train import check_stage_outputs

    run_dir = Path(args.weights) / args.run
    if args.stage == "ensemble":
        check_writable(run_dir, what="run folder (--weights/--run)")
        return
    first = args.stage if args.stage in STAGES else "stage1"
    given = {**({"model": model} if model else {}), **over}
    cfg = StageConfig.from_dict({**load_recipe(args.recipe).stage_fields(first, n_dataset=data.n_train_clips, given=given),
                                 "name": first})
    check_stage_outputs(cfg, data, run_dir=run_dir, cache_dir=args.cache_dir, input_roots=args.input_roots,
                        n_stages=1 if args.stage in STAGES else len(STAGES))


