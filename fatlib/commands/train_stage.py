"""``python -m fatlib train-stage``: train one stage over K folds."""
from __future__ import annotations

from pathlib import Path

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
    add_input_roots_argument(p)
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from ..data import FatData
    from ..train import train_stage  # it checks that the outputs fit before any work (check_stage_outputs)

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
