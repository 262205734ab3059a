"""An offline Kaggle dataset folder: the fatlib wheel plus trained weights, for a kernel without internet.

``python -m fatlib kaggle-dataset --weights weights/RUN --out kaggle_dataset/`` writes::

    kaggle_dataset/
      wheels/fatlib-<version>-py3-none-any.whl
      weights/<run>/<stage>/fold{k}.safetensors  (+ config.json, metrics.json when present)
      manifest.json   (version, wheel, every file with its size and sha256, the stages and models)
      README.md       (how the inference notebook installs fatlib and finds the weights)

Upload the folder as a Kaggle dataset; in the kernel (the Kaggle image has torch, fastai, librosa)::

    pip install --no-index --no-deps --find-links /kaggle/input/<dataset>/wheels fatlib

The folder is assembled beside ``out`` and moved into place at the end, so an interrupted run never
leaves a half-built dataset behind.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from .errors import PackagingError  # noqa: F401  (defined in fatlib.errors, importable from here too)

STAGE_SIDE_FILES = ("config.json", "metrics.json")  # copied with the fold weights when present
SOURCE_ITEMS = ("pyproject.toml", "setup.cfg", "setup.py", "README.md", "LICENSE", "MANIFEST.in", "fatlib")


def project_root() -> Path:
    """The source checkout fatlib is imported from (holds pyproject.toml); PackagingError if installed from a wheel."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise PackagingError(
            f"{root}: fatlib is not imported from a source checkout (no pyproject.toml), so no wheel can be built. "
            "Run from the repository with `pip install -e .`, or pass --wheel with a built wheel."
        )
    return root


def build_wheel(out_dir: str | os.PathLike, *, source: str | os.PathLike | None = None) -> Path:
    """Build the fatlib wheel into ``out_dir`` without network access (``--no-isolation``).

    The sources are copied to a temporary folder first, so the build never reads stale ``build/``
    leftovers nor writes into the checkout. Returns the wheel's path.
    """
    source = Path(source) if source is not None else project_root()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fatlib-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in SOURCE_ITEMS:
            item = source / name
            if item.is_dir():
                shutil.copytree(item, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif item.is_file():
                shutil.copy2(item, src / name)
        dist = Path(tmp) / "dist"
        if importlib.util.find_spec("build") is not None:
            cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(src)]
        else:
            cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                   "-w", str(dist), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        wheels = sorted(dist.glob("fatlib-*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            raise PackagingError(
                f"building the fatlib wheel from {source} failed (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout)[-1500:]}\nCheck that `{' '.join(cmd[:4])}` works in this environment "
                "(setuptools >= 61 installed) or pass --wheel with a wheel built elsewhere."
            )
        return Path(shutil.copy2(wheels[0], out_dir / wheels[0].name))


def stage_dirs(weights: str | os.PathLike | Sequence, *, stages: Sequence[str] | None = None) -> list[Path]:
    """The stage folders holding the chosen ``fold*.safetensors`` (see :func:`fatlib.predict.weight_files`),
    each file checked to carry fatlib metadata."""
    from .predict import weight_files
    from .weights import read_metadata

    files = weight_files(weights, stages=stages)
    for f in files:
        read_metadata(f)  # a damaged or foreign file fails here, not in the Kaggle kernel
    return list(dict.fromkeys(f.parent for f in files))


def build_dataset(
    weights: str | os.PathLike | Sequence,
    out: str | os.PathLike,
    *,
    stages: Sequence[str] | None = None,
    wheel: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write the Kaggle dataset folder ``out`` (module doc) from the runs/stages in ``weights``.

    ``stages``: stage sub-folders of the run(s) to ship (default all); ``wheel``: a prebuilt fatlib
    wheel instead of building one; ``overwrite``: replace an existing non-empty ``out``.
    """
    from fastprogress.fastprogress import progress_bar

    from . import __version__
    from .io import write_json, write_text

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise PackagingError(f"{out}: already exists and is not empty. Pass --force to replace it, or choose another --out.")
    dirs = stage_dirs(weights, stages=stages)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        if wheel is not None:
            wheel = Path(wheel)
            if not (wheel.is_file() and wheel.name.startswith("fatlib-") and wheel.suffix == ".whl"):
                raise PackagingError(f"{wheel}: not a fatlib wheel file (fatlib-*.whl). Build one with `python -m build --wheel`.")
            (tmp / "wheels").mkdir()
            built = Path(shutil.copy2(wheel, tmp / "wheels" / wheel.name))
        else:
            built = build_wheel(tmp / "wheels")
        copies = [
            (f, tmp / "weights" / d.parent.name / d.name / f.name)
            for d in dirs
            for f in sorted(d.glob("fold*.safetensors")) + [d / n for n in STAGE_SIDE_FILES if (d / n).is_file()]
        ]
        for src, dst in progress_bar(copies) if progress else copies:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        manifest = _manifest(tmp, built, dirs, __version__)
        write_json(tmp / "manifest.json", manifest)
        write_text(tmp / "README.md", _readme(manifest))
        _replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _manifest(root: Path, wheel: Path, dirs: list[Path], version: str) -> dict[str, Any]:
    from .weights import read_metadata

    stages = []
    for d in dirs:
        metas = [read_metadata(f) for f in sorted(d.glob("fold*.safetensors"))]
        stages.append({
            "path": f"weights/{d.parent.name}/{d.name}",
            "folds": len(metas),
            "models": sorted({m["model_name"] for m in metas}),
            "n_classes": len(metas[0]["vocab"]),
        })
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {
        "fatlib_version": version,
        "wheel": f"wheels/{wheel.name}",
        "install": "pip install --no-index --no-deps --find-links <dataset>/wheels fatlib",
        "stages": stages,
        "files": {p.relative_to(root).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files},
    }


def _readme(manifest: dict[str, Any]) -> str:
    lines = [
        "# fatlib offline bundle",
        "",
        f"fatlib {manifest['fatlib_version']} as a wheel plus trained weights, for a Kaggle kernel without internet.",
        "",
        "```bash",
        "pip install --no-index --no-deps --find-links /kaggle/input/<this dataset>/wheels fatlib",
        "python -m fatlib predict --data ../input/freesound-audio-tagging-2019 \\",
        "    --weights /kaggle/input/<this dataset>/weights/<run> --tta windows --out submission.csv",
        "```",
        "",
        "`--no-deps`: the Kaggle image already has torch, fastai, librosa, soundfile and safetensors.",
        "",
        "| stage | folds | models | classes |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {s['path']} | {s['folds']} | {', '.join(s['models'])} | {s['n_classes']} |" for s in manifest["stages"]]
    return "\n".join(lines + ["", "manifest.json lists every file with its size and sha256.", ""])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _replace_dir(new: Path, out: Path) -> None:
    """Move the finished folder ``new`` to ``out``; an old ``out`` is removed only after the move."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old)


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "kaggle-dataset",
        help="build an offline Kaggle dataset folder: the fatlib wheel + trained weights",
        description="Build a folder to upload as a Kaggle dataset: wheels/ (fatlib), weights/<run>/<stage>/, "
        "manifest.json and README.md.",
    )
    p.add_argument("--weights", required=True, nargs="+", help="weights/<run> (or stage folders) to ship")
    p.add_argument("--stages", nargs="+", default=None, help="stage sub-folders of the run (default: all)")
    p.add_argument("--out", default="kaggle_dataset", help="output folder (default kaggle_dataset/)")
    p.add_argument("--wheel", default=None, help="use this prebuilt fatlib wheel instead of building one")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    import json

    out = build_dataset(args.weights, args.out, stages=args.stages, wheel=args.wheel, overwrite=args.force)
    manifest = json.loads((out / "manifest.json").read_text())
    stages = ", ".join(s["path"] for s in manifest["stages"])
    print(f"wrote {out}/ ({manifest['wheel']} + {stages}); upload it as a Kaggle dataset")
    return 0
