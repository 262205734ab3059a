"""``python -m fatlib select``: choose noisy clips to train on."""
from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ..selection import RULES


def _cli(args) -> int:
    from ..dataset import FatData
    from ..folds import noisy_folds
    from ..preflight import check_writable
    from ..selection import check_selection_out, check_sources, run_rule

    data = FatData.from_dir(args.data)
    run_dir = Path(args.weights) / args.run
    check_selection_out(args.out, data, run_dir=run_dir, run=args.run, stages=args.stages)  # fatlib.guards
    check_writable(Path(args.out).parent, what="--out folder")
    check_sources(args.rule, [run_dir / s for s in args.stages])  # before the run's folds file is written
    folds = noisy_folds(data, run_dir=run_dir, n_folds=args.n_folds, seed=args.folds_seed)
    params = {}
    if args.threshold is not None:
        params["threshold"] = args.threshold
    if args.cap is not None:
        key = {"stage3": "max_per_fold_label", "stage4": "max_per_fold_label", "logloss": "max_per_class"}
        if args.rule not in key:
            raise DataError("--cap applies to the stage3, stage4 and logloss rules only.")
        params[key[args.rule]] = None if args.cap <= 0 else args.cap
    if args.n_best is not None:
        params["n_best"] = args.n_best
    if args.round is not None:
        params["round_index"] = args.round
    sel = run_rule(
        args.rule,
        stage_dirs=[run_dir / s for s in args.stages],
        targets=data.noisy.targets,
        folds=folds,
        fnames=data.noisy.fnames,
        vocab=data.vocab,
        **params,
    )
    out = sel.write(args.out, fnames=data.noisy.fnames, vocab=data.vocab)
    print(f"{len(sel)} of {len(data.noisy.fnames)} noisy clips selected -> {out}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "select", help="choose noisy clips to train on (12th/9th/3rd-place rules)",
        description="Choose noisy clips for curated+selected training from finished stages' out-of-fold "
        "outputs and write fname,labels,score,fold (stage3/stage4: 12th place, logloss: 9th, pseudo: 3rd).",
    )
    p.add_argument("--data", default=None, help="data folder (default: input/ or the Kaggle path)")
    p.add_argument("--weights", default="weights", help="weights root (default: weights)")
    p.add_argument("--run", required=True, help="run name: weights/<run>/")
    p.add_argument("--rule", required=True, choices=RULES, help="selection rule (see fatlib.selection)")
    p.add_argument("--stages", nargs="+", required=True, help="stage names inside the run (stage3 rule: two)")
    p.add_argument("--out", required=True, help="output CSV (fname,labels,score,fold)")
    p.add_argument("--threshold", type=float, default=None,
                   help="score threshold (stage3 0.5, stage4 1.0) or pseudo-label probability threshold")
    p.add_argument("--cap", type=int, default=None, help="per fold per label (stage3/4) or per class (logloss); 0: none")
    p.add_argument("--n-best", type=int, default=None, help="logloss rule: clips kept")
    p.add_argument("--round", type=int, default=None, help="pseudo rule: round number (1-based)")
    p.add_argument("--n-folds", type=int, default=5, help="folds of the run (default: 5)")
    p.add_argument("--folds-seed", type=int, default=42, help="seed the run's folds were made with (default: 42)")
    p.set_defaults(func=_cli)
