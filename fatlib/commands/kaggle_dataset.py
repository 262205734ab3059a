"""``python -m fatlib kaggle-dataset``: build the fatlib Kaggle dataset."""
from __future__ import annotations

import json
from pathlib import Path

from .options import add_input_roots_argument


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "kaggle-dataset",
        help="build the fatlib Kaggle dataset: wheels (fatlib + dependencies) and, optionally, trained weights",
        description="Build a folder to upload as the Kaggle dataset `fatlib`: wheels/ (fatlib and the dependencies "
        "Kaggle's image may lack, installed offline by every notebook's setup cell), weights/<run>/<stage>/ when "
        "--weights is given (each file loaded first), manifest.json (sha256 of every file) and README.md.",
    )
    p.add_argument("--weights", nargs="+", default=None,
                   help="weights/<run> (or stage folders) to ship (default: none, a wheels-only dataset)")
    p.add_argument("--stages", nargs="+", default=None, help="stage sub-folders of the run (default: all)")
    p.add_argument("--out", default="fatlib", help="output folder (default: fatlib/)")
    p.add_argument("--wheel", default=None, help="use this prebuilt fatlib wheel instead of building one")
    p.add_argument("--dep-wheels", default=None, metavar="DIR",
                   help="take the dependency wheels from this folder, offline (default: download them from PyPI)")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    add_input_roots_argument(p)
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from ..kaggle import build_dataset
    from ..preflight import check_writable

    shipped = sum(p.stat().st_size for w in args.weights or [] for p in Path(w).rglob("*") if p.is_file())
    check_writable(Path(args.out).parent, expected_bytes=shipped, what="--out folder")
    out = build_dataset(args.weights, args.out, stages=args.stages, wheel=args.wheel, dep_wheels=args.dep_wheels,
                        input_roots=args.input_roots, overwrite=args.force)
    manifest = json.loads((out / "manifest.json").read_text())
    stages = ", ".join(s["path"] for s in manifest["stages"]) or "no weights"
    wheels = ", ".join([manifest["wheel"], *manifest["dependencies"].values()])
    print(f"wrote {out}/ ({wheels}; {stages}); upload it as the Kaggle dataset 'fatlib'")
    return 0
