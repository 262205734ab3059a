"""``python -m fatlib train-stage``: train one stage over K folds."""
from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ..settings import TRAIN_ON
from .options import (
    add_input_roots_argument,
    add_stage_arguments,
    config_from_args,
    recipe_from_args,
    result_line,
    run_name,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train-stage", help="train one stage over K folds (OOF outputs, weights)",
        description="Train one stage over K folds into <weights>/<run>/<stage>/: fold weights, out-of-fold "
        "predictions, metrics, log.txt. Settings come from the recipe, then --config, then the options; "
        "finished folds are skipped on rerun.",
    )
    add_stage_arguments(p)
    p.add_argument("--stage", default=None,
                   help="stage name (folder inside the run); a stage of the recipe takes that stage's settings "
                   "(default: stage)")
    p.add_argument("--config", default=None, help="StageConfig JSON on top of the recipe (default: none)")
    p.add_argument("--train-on", default=None, choices=TRAIN_ON,
                   help="training split: noisy only, curated only, or curated + a --selection of noisy clips "
                   "(default: curated)")
    p.add_argument("--selection", default=None, help="selection CSV for --train-on curated+selected (default: none)")
    p.add_argument("--init-from", default=None,
                   help="stage folder, or stage name in the run, whose fold k starts fold k (default: none)")
    p.add_argument("--plan", action="store_true",
                   help="print the stage's settings with the source of each value and its work (clips and optimizer "
                   "steps per fold, folds), then stop: nothing is trained or written")
    add_input_roots_argument(p)
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from ..dataset import FatData
    from ..train import train_stage  # it checks that the outputs fit before any work (check_stage_outputs)

    if args.plan:
        return _plan(args)
    data = FatData.from_dir(args.data)
    n = data.n_train_clips
    name = args.stage or "stage"
    rec = recipe_from_args(args, n_dataset=n)  # recipe -> [small_data] -> --config -> options, with provenance
    cfg = config_from_args(args, n_dataset=n, rec=rec)
    run_dir = Path(args.weights) / run_name(args, n_dataset=n)
    res = train_stage(cfg, data, run_dir=run_dir, cache_dir=args.cache_dir, progress=not args.quiet,
                      folds=args.folds, input_roots=args.input_roots, note=rec.small_data_note(name, n),
                      sources=rec.sources(name, n_dataset=n))
    if res is not None:  # None: folds left to train, or not the main process
        print(result_line(cfg.name, res))
    return 0


def _plan(args) -> int:
    """``--plan``: the stage as train_stage would train it, sized by the data set's CSVs (fatlib.plan)."""
    from ..plan import RunPlan, data_size, plan_stage, render_plan

    size = data_size(args.data)
    n, name = size.n_train_clips, args.stage or "stage"
    rec = recipe_from_args(args, n_dataset=n)
    cfg = config_from_args(args, n_dataset=n, rec=rec)
    n_selected = 0
    if cfg.selection_csv:
        import pandas as pd

        try:
            n_selected = len(pd.read_csv(cfg.selection_csv, keep_default_na=False))
        except OSError as e:
            raise DataError(f"--selection {cfg.selection_csv}: cannot read it ({e}); make one with `python -m fatlib select`") from e
    run_dir = Path(args.weights) / run_name(args, n_dataset=n)
    stage = plan_stage(cfg, rec.sources(name, n_dataset=n), size, run_dir=run_dir, n_selected=n_selected,
                       folds=args.folds, note=rec.small_data_note(name, n), recipe_path=rec.path)
    plan = RunPlan(rec.name, rec.path, rec.title, "one stage (train-stage)", size, run_dir, Path(args.cache_dir), [stage])
    print(render_plan(plan), end="")
    return 0
