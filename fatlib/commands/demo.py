"""``python -m fatlib demo``: the whole pipeline on a synthetic data set (``make demo``)."""
from __future__ import annotations

from .. import demo as _doc
from ..demo import DEMO_DATA, DEMO_SETTINGS, run_demo


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the whole pipeline on a synthetic data set (make demo)",
                              description=_doc.__doc__.splitlines()[0])
    p.add_argument("--out", default="demo", help="output folder (default: demo/)")
    p.add_argument("--size", default="demo", choices=["tiny", "demo", "small"],
                   help=f"synthetic data set size (demo: {DEMO_DATA})")
    p.add_argument("--epochs", type=int, default=DEMO_SETTINGS["epochs"], help="epochs per stage")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and of training")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from ..preflight import check_writable

    check_writable(args.out, what="--out folder")
    run_demo(args.out, size=args.size, seed=args.seed, epochs=args.epochs, progress=not args.quiet)
    return 0
