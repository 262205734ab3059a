"""``python -m fatlib demo``: the whole pipeline on a synthetic data set (``make demo``)."""
from __future__ import annotations

from .. import demo as _doc
from ..demo import DEMO_DATA, DEMO_RECIPE, run_demo


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the whole pipeline on a synthetic data set (make demo)",
                              description=_doc.__doc__.splitlines()[0])
    p.add_argument("--out", default="demo", help="output folder (default: demo/)")
    p.add_argument("--size", default="demo", choices=["tiny", "demo", "small"],
                   help=f"synthetic data set size (demo: {DEMO_DATA})")
    from ..recipes import _parse, resolve_recipe_path

    # the file as read, unchecked: checking its mel table imports torch (fatlib.features), and --help must not
    epochs = _parse(resolve_recipe_path(DEMO_RECIPE))[0]["stage"]["epochs"]
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs per stage (default: {epochs}, recipe {DEMO_RECIPE})")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and of training")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from ..preflight import check_writable

    check_writable(args.out, what="--out folder")
    given = {"epochs": args.epochs} if args.epochs is not None else {}
    run_demo(args.out, size=args.size, seed=args.seed, progress=not args.quiet, **given)
    return 0
