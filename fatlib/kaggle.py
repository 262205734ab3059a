"""The fatlib Kaggle dataset: wheels to install fatlib offline, trained weights, a manifest of checksums.

``python -m fatlib kaggle-dataset --out fatlib/`` (wheels only: what notebooks 00-05 install from) or
``... --weights weights/RUN ... --out fatlib/`` (wheels + weights: what the offline kernel 06 reads) writes::

    fatlib/
      wheels/fatlib-<version>-py3-none-any.whl
      wheels/<dependency>-<version>-*.whl   (DEPENDENCIES: the packages Kaggle's image may lack)
      weights/<run>/<stage>/fold{k}.safetensors  (+ config.json, metrics.json when present)
      manifest.json   (version, wheels, every file with its size and sha256, the stages and models)
      README.md       (how the notebooks install fatlib and find the weights)

Every weights file is loaded (model built, tensors finite) before it is shipped. Upload the folder as a
Kaggle dataset named ``fatlib``; each notebook's setup cell installs fatlib from its ``wheels/`` when
fatlib is not importable, then :func:`install_missing` the dependencies that are not, all with
``pip install --no-index`` (no internet needed). :func:`verify_dataset` checks the files against the
manifest (notebook 06 does before predicting).

The folder is assembled beside ``out`` and moved into place at the end, so an interrupted run never
leaves a half-built dataset behind.
"""
from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from .errors import DependencyError, ModelError, PackagingError, WeightsError
from .guards import check_output_not_input, check_replaceable, clean_stale_temps, temp_prefix, weights_inputs
from .preflight import copy_file

# import name -> package name of the pure-Python (or abi3) dependencies shipped as wheels: Kaggle's image
# has torch, fastai, librosa, soundfile, but not iterative-stratification (safetensors and fastprogress
# come with transformers and fastai there; shipped anyway, installed only when missing)
DEPENDENCIES = {"iterstrat": "iterative-stratification", "safetensors": "safetensors", "fastprogress": "fastprogress"}
KAGGLE_PLATFORM = "manylinux2014_x86_64"  # the platform of a Kaggle kernel, for wheels that are not pure Python
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
        return copy_file(wheels[0], out_dir / wheels[0].name)  # a full disk names the destination


def download_dependency_wheels(dest: str | os.PathLike, *, find_links: str | os.PathLike | None = None) -> list[Path]:
    """The wheels of :data:`DEPENDENCIES` at the versions installed here, for Kaggle's platform, into ``dest``
    (``pip download --no-deps``): from PyPI, or with ``find_links`` only from that folder (offline, e.g.
    an earlier dataset's ``wheels/``). A PackagingError says which could not be had and the fix."""
    from importlib import metadata

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    reqs = []
    for package in DEPENDENCIES.values():
        try:
            reqs.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            raise PackagingError(f"{package} is not installed here, so the version to ship is unknown: "
                                 f"`pip install {package}` (fatlib needs it) and build the dataset again.") from None
    source = ["--no-index", "--find-links", str(find_links)] if find_links is not None else ["--timeout", "20", "--retries", "1"]
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps", "--only-binary", ":all:",
           "--platform", KAGGLE_PLATFORM, "--dest", str(dest), *source, *reqs]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        said = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()][-1:] or ["no output"]
        if "[Errno 28]" in proc.stderr + proc.stdout or "No space left" in proc.stderr + proc.stdout:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest))  # the disk, not PyPI
        where = f"in {find_links}" if find_links is not None else "from PyPI (offline?)"
        raise PackagingError(
            f"could not get the wheels of {' '.join(reqs)} {where}: pip said {said[0].strip()!r}. Run this where PyPI "
            f"is reachable, or download them elsewhere (`pip download --no-deps --only-binary :all: --platform "
            f"{KAGGLE_PLATFORM} -d DIR {' '.join(reqs)}`) and pass --dep-wheels DIR."
        )
    names = {p.lower().replace("-", "_") for p in DEPENDENCIES.values()}
    return sorted(p for p in dest.glob("*.whl") if p.name.split("-")[0].lower() in names)


def check_weights_file(path: str | os.PathLike) -> dict[str, Any]:
    """Load a weights file as the kernel will (:func:`fatlib.checkpoint.build_model`: metadata, the model it
    names, every tensor checked against the file's checksum; an older file without one is loaded with a
    warning) and check its feature settings are valid and its tensors finite.
    Returns its metadata; a WeightsError names the file."""
    import torch

    from .checkpoint import build_model
    from .features import MelConfig

    try:
        model, meta = build_model(path)
    except ModelError as e:  # the metadata names a model or arguments this fatlib cannot build
        raise WeightsError(f"{path}: {e}") from e
    try:
        MelConfig.from_dict(meta["mel_config"])
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{path}: the stored feature settings are invalid ({e}); re-save the weights.") from e
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise WeightsError(f"{path}: NaN or infinite values in {bad[:3]}; the file is damaged or the training "
                           "diverged. Retrain that fold, or leave its stage out (--stages).")
    return meta


def dataset_root(path: str | os.PathLike) -> Path | None:
    """The fatlib dataset folder (holding manifest.json) that ``path`` lies in, or None."""
    path = Path(path).resolve()
    for folder in [path, *path.parents]:
        if (folder / "manifest.json").is_file() and (folder / "wheels").is_dir():
            return folder
    return None


def verify_shipped(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """:func:`verify_dataset` for every fatlib dataset that one of ``paths`` (weights folders) lies in, once
    each: what ``predict`` does before predicting with weights read from a dataset. Returns the datasets."""
    roots = list(dict.fromkeys(r for r in map(dataset_root, paths) if r is not None))
    for root in roots:
        verify_dataset(root)
    return roots


def stage_dirs(weights, *, stages: Sequence[str] | None = None, input_roots: Sequence = ()) -> list[Path]:
    """The stage folders holding the chosen ``fold*.safetensors`` (see :func:`fatlib.predict.weight_files`;
    each stage looked up in the working folder, then ``input_roots``), each file loaded by
    :func:`check_weights_file` so a damaged one fails here, not in the Kaggle kernel."""
    from .run_models import weight_files
    from .workspace import Roots

    files = weight_files(Roots(input_roots).find_weights(weights, stages=stages))
    for f in files:
        check_weights_file(f)
    return list(dict.fromkeys(f.parent for f in files))


def build_dataset(
    weights=None,
    out: str | os.PathLike = "fatlib",
    *,
    stages: Sequence[str] | None = None,
    wheel: str | os.PathLike | None = None,
    dep_wheels: str | os.PathLike | None = None,
    input_roots: Sequence = (),
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write the Kaggle dataset folder ``out`` (module doc) with the runs/stages in ``weights`` (None:
    wheels only, what notebooks 00-05 install from).

    ``stages``: stage sub-folders of the run(s) to ship (default all); ``wheel``: a prebuilt fatlib
    wheel instead of building one; ``dep_wheels``: a folder holding the dependency wheels (offline;
    default: downloaded from PyPI); ``input_roots``: earlier sessions' outputs where the runs' stages are
    looked up too (:class:`fatlib.workspace.Roots`); ``overwrite``: replace an existing non-empty ``out``.
    """
    from . import __version__
    from .atomic import write_json, write_text
    from .progress import progress as show_progress

    out = Path(out)
    _check_out(out, weights, wheel=wheel, dep_wheels=dep_wheels, input_roots=input_roots, overwrite=overwrite)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise PackagingError(f"{out}: already exists and is not empty. Pass --force to replace it, or choose another --out.")
    if wheel is not None:
        wheel = Path(wheel)
        if not (wheel.is_file() and wheel.name.startswith("fatlib-") and wheel.suffix == ".whl"):
            raise PackagingError(f"{wheel}: not a fatlib wheel file (fatlib-*.whl). Build one with `python -m build --wheel`.")
    dirs = stage_dirs(weights, stages=stages, input_roots=input_roots) if weights else []
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out.parent, name=out.name)  # left by a killed run
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name), suffix=".tmp", dir=out.parent))
    try:
        deps = download_dependency_wheels(tmp / "wheels", find_links=dep_wheels)
        if wheel is not None:
            built = copy_file(wheel, tmp / "wheels" / wheel.name)
        else:
            built = build_wheel(tmp / "wheels")
        from .run_models import stage_fold_files

        copies = [
            (f, tmp / "weights" / d.parent.name / d.name / f.name)
            for d in dirs
            for f in stage_fold_files(d, warn=False) + [d / n for n in STAGE_SIDE_FILES if (d / n).is_file()]
        ]
        for src, dst in show_progress(copies, label="kaggle-dataset: files copied", show=progress):
            dst.parent.mkdir(parents=True, exist_ok=True)
            copy_file(src, dst)
        manifest = _manifest(tmp, built, deps, dirs, __version__)
        write_json(tmp / "manifest.json", manifest)
        write_text(tmp / "README.md", _readme(manifest))
        _replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _check_out(out: Path, weights, *, wheel, dep_wheels, input_roots, overwrite: bool) -> None:
    """Rules 1 and 2 of :mod:`fatlib.guards`: ``out`` holds none of this command's inputs, and ``--force``
    replaces only a fatlib dataset (manifest.json and wheels/)."""
    weights = [weights] if isinstance(weights, (str, os.PathLike)) else list(weights or [])
    inputs = [*weights_inputs(weights), *[p for p in (wheel, dep_wheels) if p is not None], *input_roots]
    check_output_not_input(out, inputs=inputs, what="--out folder", folder=True)
    if overwrite:
        check_replaceable(out, marker=("manifest.json", "wheels"), inputs=inputs, what="--out folder")


def _manifest(root: Path, wheel: Path, deps: list[Path], dirs: list[Path], version: str) -> dict[str, Any]:
    from .checkpoint import read_metadata
    from .run_models import stage_fold_files

    stages = []
    for d in dirs:
        metas = [read_metadata(f) for f in stage_fold_files(d, warn=False)]
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
        "dependencies": {p.name.split("-")[0]: f"wheels/{p.name}" for p in deps},
        "install": "pip install --no-index --no-deps --find-links <dataset>/wheels fatlib "
                   + " ".join(DEPENDENCIES.values()) + "  (each only when not importable)",
        "stages": stages,
        "files": {p.relative_to(root).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files},
    }


def _readme(manifest: dict[str, Any]) -> str:
    lines = [
        "# fatlib offline bundle",
        "",
        f"fatlib {manifest['fatlib_version']} as a wheel, the wheels of the packages Kaggle's image may lack "
        f"({', '.join(DEPENDENCIES.values())})" + (", and trained weights" if manifest["stages"] else "")
        + ", for Kaggle sessions without internet.",
        "",
        "Attach this dataset as `fatlib` (so it is mounted at `../input/fatlib`); the setup cell of every fatlib "
        "notebook installs from its `wheels/` only what is not importable:",
        "",
        "```bash",
        "pip install --no-index --no-deps --find-links ../input/fatlib/wheels fatlib  # when fatlib is missing",
        f"pip install --no-index --no-deps --find-links ../input/fatlib/wheels {' '.join(DEPENDENCIES.values())}"
        "  # those missing",
        "```",
        "",
        "`--no-deps`: the Kaggle image already has torch, fastai, librosa and soundfile.",
    ]
    if manifest["stages"]:
        lines += [
            "",
            "```bash",
            "python -m fatlib predict --data ../input/freesound-audio-tagging-2019 \\",
            "    --weights ../input/fatlib/weights/<run> --tta windows --out submission.csv",
            "```",
            "",
            "| stage | folds | models | classes |",
            "| --- | --- | --- | --- |",
        ]
        lines += [f"| {s['path']} | {s['folds']} | {', '.join(s['models'])} | {s['n_classes']} |" for s in manifest["stages"]]
    return "\n".join(lines + ["", "manifest.json lists every file with its size and sha256 "
                              "(`fatlib.kaggle.verify_dataset` checks them).", ""])


def verify_dataset(folder: str | os.PathLike) -> dict[str, Any]:
    """Check every file ``manifest.json`` lists in ``folder``: present, same size, same sha256.

    Returns the manifest; a PackagingError names the first missing or damaged file (and how many more).
    """
    folder = Path(folder)
    path = folder / "manifest.json"
    fix = "Re-upload the dataset, or rebuild it with `python -m fatlib kaggle-dataset`."
    if not folder.is_dir():
        raise PackagingError(f"{folder}: no such folder. Attach the fatlib dataset (mounted at ../input/fatlib) "
                             "or set fatlib_dataset to where it is.")
    try:
        manifest = json.loads(path.read_text())
        files = dict(manifest["files"])
    except FileNotFoundError:
        raise PackagingError(f"{path}: not found, so {folder} cannot be checked. {fix}") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PackagingError(f"{path}: not a fatlib manifest ({type(e).__name__}: {e}). {fix}") from None
    bad = []
    for rel, info in sorted(files.items()):
        f = folder / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            bad.append(f"{path}: lists {rel!r}, outside the dataset")
        elif not f.is_file():
            bad.append(f"{f}: missing (manifest.json lists it)")
        elif f.stat().st_size != info.get("bytes"):
            bad.append(f"{f}: {f.stat().st_size} bytes, manifest.json says {info.get('bytes')} (truncated or damaged)")
        elif _sha256(f) != info.get("sha256"):
            bad.append(f"{f}: sha256 differs from manifest.json (damaged)")
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise PackagingError(f"{bad[0]}{more}. {fix}")
    return manifest


def install_missing(wheels: str | os.PathLike, *, progress: bool = True) -> list[str]:
    """Install, offline from the folder ``wheels`` (a fatlib dataset's ``wheels/``), each package of
    :data:`DEPENDENCIES` that is not importable (``pip install --no-index --no-deps``); returns the
    packages installed. A DependencyError names them and the fix when they cannot be installed."""
    missing = [package for module, package in DEPENDENCIES.items() if importlib.util.find_spec(module) is None]
    if not missing:
        return []
    wheels = Path(wheels)
    fix = (f"Attach the fatlib dataset (`python -m fatlib kaggle-dataset` puts their wheels in wheels/), or "
           f"`pip install {' '.join(missing)}` where there is internet.")
    if not wheels.is_dir():
        raise DependencyError(f"{', '.join(missing)} not installed, and {wheels} does not exist. {fix}")
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--quiet", "--no-index", "--no-deps",
           "--find-links", str(wheels), *missing]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    importlib.invalidate_caches()  # let this running process see the new packages
    still = [package for module, package in DEPENDENCIES.items() if importlib.util.find_spec(module) is None]
    if proc.returncode != 0 or still:
        said = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()][-1:] or ["no output"]
        raise DependencyError(f"{', '.join(still or missing)}: could not be installed from {wheels} "
                              f"(pip said {said[0].strip()!r}). {fix}")
    if progress:
        print(f"installed from {wheels}: {', '.join(missing)}")
    return missing


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
