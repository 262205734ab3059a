"""``python -m fatlib predict``: predict the test split and write submission.csv."""
from __future__ import annotations

from pathlib import Path

from .options import add_input_roots_argument

# fatlib.tta's TTA_SCHEMES and DEFAULT_STEP_FRAMES (tests/test_cli checks they agree): tta imports torch,
# and --help does not
TTA_SCHEMES = ("windows", "sequential", "full")
DEFAULT_STEP_FRAMES = 48


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict the test split with trained folds (TTA, ensembles) and write submission.csv",
        description="Predict the test split with every fold*.safetensors of the chosen run/stages, "
        "average folds, combine stages/models, write submission.csv (and evaluate when test labels exist).",
    )
    p.add_argument("--data", default=None, help="data folder (default: input/, then the Kaggle path)")
    p.add_argument("--weights", required=True, nargs="+", help="weights/<run> or stage folders")
    p.add_argument("--stages", nargs="+", default=None, help="stage sub-folders of the run (default: all)")
    p.add_argument("--tta", choices=TTA_SCHEMES, default="windows",
                   help="test-time augmentation: windows every --step-frames (12th), sequential crops (95th), "
                   "full clip (3rd); default: windows")
    p.add_argument("--step-frames", type=int, default=None,
                   help="windows: at most this many frames between windows (default: each model's own, the step "
                   f"of its out-of-fold predictions stored in its weights; {DEFAULT_STEP_FRAMES} for older weights)")
    p.add_argument("--batch-size", type=int, default=64, help="crops per forward pass")
    p.add_argument("--ensemble", choices=("mean", "geometric"), default="mean", help="across stages/models")
    p.add_argument("--rescale", action="store_true", help="rescale each class to [0, 1] before combining (9th place)")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    p.add_argument("--out", default="submission.csv",
                   help="submission CSV to write (default: submission.csv; evaluation beside it when labels exist)")
    add_input_roots_argument(p)
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from ..dataset import FatData
    from ..kaggle import verify_shipped
    from ..predict import check_submission_out, default_device, predict_test
    from ..preflight import check_writable, submission_bytes
    from ..sysalloc import tune_malloc_for_inference
    from ..workspace import Roots

    default_device(args.device)  # a bad --device fails before any work
    tune_malloc_for_inference()  # freed memory goes back to the system: peak RSS follows what is in use
    data = FatData.from_dir(args.data)
    weights = Roots(args.input_roots).find_weights(args.weights, stages=args.stages)  # stage folders
    verify_shipped(weights)  # weights read from a fatlib dataset: its files against manifest.json first
    check_submission_out(args.out, data, weights, input_roots=args.input_roots)  # fatlib.guards rule 2
    check_writable(Path(args.out).parent, expected_bytes=submission_bytes(len(data.test.fnames), len(data.vocab)),
                   what="--out folder")
    result = predict_test(
        data, weights, stages=None, tta=args.tta, ensemble=args.ensemble, rescale=args.rescale,
        out=args.out, step_frames=args.step_frames, batch_size=args.batch_size, device=args.device,
    )
    print(f"wrote {result['submission']} ({len(data.test.fnames)} clips, {result['n_models']} models, "
          f"groups {result['groups']})")
    if result["evaluation"] is not None:
        ev = result["evaluation"]
        print(f"test lwlrap {ev['lwlrap']:.4f}" + "".join(f", {k} {v:.4f}" for k, v in ev.get("by_usage", {}).items()))
    return 0
