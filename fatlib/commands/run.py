"""``python -m fatlib run RECIPE``: a whole recipe end to end."""
from __future__ import annotations

from pathlib import Path

from .options import add_input_roots_argument, workspace_from_args


def register(subparsers) -> None:
    from ..recipes import list_recipes

    p = subparsers.add_parser(
        "run", help="run a whole recipe end to end (training, selection or pseudo-labels, submission, report)",
        description="Run a recipe end to end into <weights>/<run>/: its stages (warm-up, single stages, "
        "selection or pseudo-label rounds), the out-of-fold ensemble, the test submission and report.md. "
        "A rerun resumes where it stopped; steps.json lists the finished steps.")
    p.add_argument("recipe", help=f"a shipped recipe ({', '.join(list_recipes())}) or a .toml path")
    p.add_argument("--data", default=None, help="data folder (default: input/, then the Kaggle path)")
    p.add_argument("--run", default=None, help="run name: outputs in <weights>/<run>/ (default: the recipe's name)")
    p.add_argument("--weights", default="weights", help="weights root (default: weights)")
    p.add_argument("--cache-dir", default="cache", help="feature cache folder (default: cache)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="change the recipe: a StageConfig field for every stage (epochs=1, auto_scale=false), "
                   "model_kwargs.width_mult=0.125, mel.crop_frames=32, stages.<stage>.<field>=..., "
                   "selection.<stage>.<key>=..., predict.<key>=..., pseudo.<key>=...; values are JSON "
                   "(default: none)")
    p.add_argument("--ensemble-size", type=int, default=None, metavar="N",
                   help="keep the first N members of the recipe's [predict] stages (its ensemble, in priority order) "
                   "and train only the stages they need (default: the recipe's [small_data] ensemble_size on a small "
                   "data set, else its [predict] ensemble_size, else every member)")
    p.add_argument("--quiet", action="store_true", help="no progress bars; step and epoch lines stay")
    p.add_argument("--plan", action="store_true",
                   help="print what the run will do and stop: every stage's settings with the source of each value, "
                   "the selections, the ensemble, the output folders and the work (clips and optimizer steps per fold, "
                   "folds, models); nothing is trained or written (sized by the data set's CSVs, else FSDKaggle2019's size)")
    add_input_roots_argument(p)
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from ..dataset import FatData
    from ..engine import _check, run_recipe
    from ..recipes import apply_sets, load_recipe

    rec = apply_sets(load_recipe(args.recipe), args.sets)
    if args.ensemble_size is not None:
        rec.give_ensemble_size(args.ensemble_size, source="--ensemble-size")
    _check(rec)  # a bad recipe, --set or --ensemble-size fails before the data is read
    if args.plan:
        from ..plan import plan_run, render_plan

        print(render_plan(plan_run(rec, args.data, run=args.run, weights_root=args.weights,
                                   cache_dir=args.cache_dir)), end="")
        return 0
    data = FatData.from_dir(args.data)
    summary = run_recipe(rec, data, run=args.run, workspace=workspace_from_args(args))
    if summary is None:  # a process other than the main one of a torchrun job: rank 0 wrote and reports
        return 0
    test = summary.get("test")
    score = "" if not test or test["lwlrap"] is None else f", test lwlrap {test['lwlrap']:.4f}"
    print(f"{summary['recipe']}: ensemble CV lwlrap {summary['cv_lwlrap_ensemble']:.4f}{score} -> "
          f"{Path(args.weights) / (args.run or summary['recipe']) / 'report.md'}")
    return 0
