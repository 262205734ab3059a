"""``python -m fatlib tag``: top labels of any audio files or folders with trained weights (fatlib.tagger).

Rule for bad files: each file that cannot be read is named on stderr in one line (``skipped: <file>:
<why>; <fix>``) and left out; the exit code is 0 when at least one file was tagged, else 1 (and nothing is
written). Outputs (``--out``, by suffix .csv or .json; ``--timeline`` adds ``<stem>_timeline.<suffix>``
and ``<stem>_timeline/<file>.png`` beside it) are written atomically once every file is done.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

TTA_CHOICES = ("windows", "sequential", "full")  # fatlib.tta.TTA_SCHEMES (not imported here: no torch for --help)
ENSEMBLE_CHOICES = ("mean", "geometric")  # fatlib.ensemble.METHODS
OUT_SUFFIXES = (".csv", ".json")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "tag",
        help="tag your own audio files or folders with trained weights: top labels per file (--timeline: when)",
        description="Tag audio files (wav, flac, ogg, mp3, any rate, mono or stereo; folders searched recursively) "
        "with every fold model of a trained run: the same features, TTA and ensemble as predict. Prints each "
        "file's top labels; --out writes every class's score as CSV or JSON. A file that cannot be read is named "
        "and skipped; exit code 0 when at least one file was tagged, else 1.",
    )
    p.add_argument("file_or_folder", nargs="+", help="audio files and folders (searched recursively)")
    # one value per option (repeat it for more), so that the files after it are not taken as more weights
    p.add_argument("--weights", required=True, action="append",
                   help="weights/<run> or a stage folder (repeat --weights for several)")
    p.add_argument("--stages", type=_names, action="extend", default=None,
                   help="stage sub-folders of the run, comma-separated, e.g. stage2,stage3 (default: the run's "
                   "recipe.json [predict] stages, else all)")
    p.add_argument("--tta", choices=TTA_CHOICES, default=None,
                   help="test-time augmentation as in predict (default: the run's recipe.json, else windows)")
    p.add_argument("--step-frames", type=int, default=None,
                   help="windows: at most this many frames between windows (default: recipe.json, else each "
                   "model's own, stored in its weights)")
    p.add_argument("--ensemble", choices=ENSEMBLE_CHOICES, default=None,
                   help="across stages/models (default: the run's recipe.json, else mean)")
    p.add_argument("--rescale", action=argparse.BooleanOptionalAction, default=None,
                   help="rescale each class to [0, 1] before combining (default: recipe.json, else no)")
    p.add_argument("--batch-size", type=int, default=64, help="crops per forward pass")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    p.add_argument("--top-k", type=int, default=3, help="labels shown per file (and per window); default 3")
    p.add_argument("--out", default=None, help="write every class's score per file: a .csv or .json file")
    p.add_argument("--timeline", action="store_true",
                   help="also each TTA window's scores over time per file: <out stem>_timeline.<csv|json> and a "
                   "picture per file in <out stem>_timeline/ (labels against time over the log-mel); long files "
                   "are decoded in blocks")
    p.set_defaults(func=_cli)


def _names(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def _check_args(args) -> Path | None:
    from ..errors import DataError

    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in OUT_SUFFIXES:
        raise DataError(f"--out {out}: the suffix says the format; use a .csv or .json file name, e.g. --out tags.csv")
    if args.timeline and out is None:
        raise DataError("--timeline writes a table and a picture per file beside --out; give --out, e.g. --out tags.csv")
    if args.timeline and args.tta == "full":
        raise DataError("--timeline needs windows: use --tta windows or --tta sequential, not full")
    for name in ("top_k", "batch_size", "step_frames"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise DataError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    return out


def _cli(args) -> int:
    from ..errors import DataError
    from ..kaggle import verify_shipped
    from ..predict import default_device
    from ..preflight import check_writable
    from ..sysalloc import tune_malloc_for_inference
    from ..tagger import Tagger, find_audio

    out = _check_args(args)
    default_device(args.device)  # a bad --device fails before any work
    files, problems = find_audio(args.file_or_folder)  # before loading models: a wrong path fails fast
    if not files:
        raise DataError("nothing to tag: " + "; ".join(problems))
    if out is not None:
        check_writable(out.parent, what="--out folder")
    tune_malloc_for_inference()  # freed memory goes back to the system: peak RSS follows what is in use
    verify_shipped(args.weights)  # weights read from a fatlib dataset: its files against manifest.json first
    tagger = Tagger(args.weights, stages=args.stages, device=args.device, tta=args.tta, step_frames=args.step_frames,
                    ensemble=args.ensemble, rescale=args.rescale, batch_size=args.batch_size,
                    progress=sys.stderr.isatty())
    print(_settings_line(tagger), file=sys.stderr)
    if args.timeline and tagger.settings["tta"] == "full":
        raise DataError(f"--timeline needs windows, but the TTA scheme is full ({tagger.sources['tta']}); "
                        "add --tta windows")
    timelines = []
    if args.timeline:  # the tags and the timelines from the same forward passes
        df, timelines = tagger.timelines(files, top_k=args.top_k)
    else:
        df = tagger.tag(files, top_k=args.top_k)
    skipped = problems + df.attrs["skipped"]
    for line in skipped:
        print(f"skipped: {line}", file=sys.stderr)
    if df.empty:
        raise DataError(f"no file could be tagged ({len(skipped)} skipped, named above); nothing was written")
    print(format_tags(df, args.top_k, table=sys.stdout.isatty()))
    written = []
    if out is not None:
        written.append(write_table(df, out))
        if timelines:
            written += write_timelines(timelines, out)
    print(f"tagged {len(df)} file(s)" + (f", skipped {len(skipped)}" if skipped else "")
          + f" with {len(tagger.models)} model(s)" + (f"; wrote {', '.join(map(str, written))}" if written else ""),
          file=sys.stderr)
    return 0


def _settings_line(tagger) -> str:
    s, src = tagger.settings, tagger.sources
    groups = list(dict.fromkeys(lm.group for lm in tagger.models))
    step = f"{s['step_frames']} ({src['step_frames']})" if s["step_frames"] is not None else src["step_frames"]
    return (f"tag: {len(tagger.models)} model(s) {groups} on {tagger.device}; tta {s['tta']} ({src['tta']}), "
            f"step {step}, ensemble {s['ensemble']} ({src['ensemble']}), "
            f"rescale {bool(s['rescale'])} ({src['rescale']})")


def format_tags(df, top_k: int, *, table: bool) -> str:
    """Each file's top labels: aligned columns with a header (``table``, for a terminal) or one plain
    line per file, ``path<TAB>label score<TAB>...`` (for pipes and files)."""
    k = sum(1 for c in df.columns if c.startswith("label_"))
    cells = [[f"{row[f'label_{j}']} {row[f'score_{j}']:.3f}" for j in range(1, k + 1)] for _, row in df.iterrows()]
    if not table:
        return "\n".join("\t".join([p, *c]) for p, c in zip(df["path"], cells))
    ordinal = {1: "1st", 2: "2nd", 3: "3rd"}
    rows = [["file", *[ordinal.get(j, f"{j}th") for j in range(1, k + 1)]]]
    rows += [[p, *c] for p, c in zip(df["path"], cells)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def write_table(df, path: Path) -> Path:
    """``df`` as CSV, or as JSON records (``path``, ``top``: [[label, score], ...], ``scores``: {class:
    score}), by the suffix of ``path``; atomically."""
    from ..atomic import write_csv, write_json

    if path.suffix.lower() == ".csv":
        return write_csv(path, df, float_format="%.6g")
    return write_json(path, _records(df))


def _records(df) -> list[dict]:
    k = sum(1 for c in df.columns if c.startswith("label_"))
    meta = {"path", "start_s", "end_s"} | {f"label_{j}" for j in range(1, k + 1)} | {f"score_{j}" for j in range(1, k + 1)}
    classes = [c for c in df.columns if c not in meta]
    out = []
    for _, row in df.iterrows():
        rec = {c: row[c] for c in ("path", "start_s", "end_s") if c in df.columns}
        rec["top"] = [[row[f"label_{j}"], float(row[f"score_{j}"])] for j in range(1, k + 1)]
        rec["scores"] = {c: float(row[c]) for c in classes}
        out.append(rec)
    return out


def write_timelines(timelines, out: Path) -> list[Path]:
    """``<stem>_timeline.<suffix>`` (every file's windows, a ``path`` column first) and one picture per
    file, ``<stem>_timeline/<file stem>.png`` (a number added when two files share a stem)."""
    import pandas as pd

    table = pd.concat([tl.windows.assign(path=str(tl.path))[["path", *tl.windows.columns]] for tl in timelines],
                      ignore_index=True)
    written = [write_table(table, out.with_name(f"{out.stem}_timeline{out.suffix}"))]
    folder = out.with_name(f"{out.stem}_timeline")
    used: set[str] = set()
    for tl in timelines:
        name, n = tl.path.stem, 1
        while name in used:
            n += 1
            name = f"{tl.path.stem}-{n}"
        used.add(name)
        tl.save_plot(folder / f"{name}.png")
    return written + ([folder] if timelines else [])
