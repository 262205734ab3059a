"""What a command may write, checked before its work: rules that keep what the user made.

Each rule is enforced here, in one place; the commands call these with one line each.

1. :func:`check_replaceable`: ``--force`` replaces only a folder that carries fatlib's own marker for
   that kind of output (a Kaggle dataset's ``manifest.json``, a run's ``config.json``...), never any
   other folder or a file, and never one that holds an input of the same command.
2. :func:`check_output_not_input`: no output path falls on an input (a file of the data set, a
   ``--weights`` or ``--input-roots`` source, a selection CSV, a cache); for a folder output, no input
   lies in it. Refused before the work, naming both paths.
3. :func:`check_plain_name`: run, stage and recipe names are plain folder names (no path separator,
   not ``.``/``..``, not absolute, no control characters), so that every output stays inside
   ``--weights``.

Also: :func:`check_replaceable_file` (rule 1 for a file output: it replaces only a CSV of its kind),
:func:`check_folder_slot` (an output folder's path must not be a file), :func:`clean_stale_temps`
(temporary folders of killed runs are removed by the next run), and the inputs of a data set
(:func:`data_inputs`) and of weights folders (:func:`weights_inputs`).
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Iterable, Sequence

from .errors import DataError, OutputError

PathLike = "str | os.PathLike"  # annotations only


def _real(path: PathLike) -> Path:
    """The absolute path with symlinks resolved (also for paths that do not exist yet)."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def _real_cached(path: PathLike, parents: dict) -> Path:
    """:func:`_real`, with each parent folder resolved once (a data set lists thousands of clips per folder)."""
    path = os.path.abspath(os.fspath(path))
    head, name = os.path.split(path)
    if head not in parents:
        parents[head] = _real(head)
    joined = parents[head] / name
    return _real(joined) if name in ("", ".", "..") or os.path.islink(joined) else joined


# ------------------------------------------------------------------------------------------ names
def check_plain_name(name, *, what: str, source: str | None = None) -> str:
    """``name`` if it is a plain folder name, else a DataError naming it, where it came from and the fix."""
    problem = None
    if not isinstance(name, str) or not name.strip():
        problem = "is not a non-empty text"
    elif name in (".", ".."):
        problem = "is '.' or '..', which names a folder above or at the run's own"
    elif "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        problem = "holds a path separator, so its outputs would go to another folder"
    elif os.path.isabs(name) or re.match(r"^[A-Za-z]:", name):
        problem = "is an absolute path"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "holds a control character"
    if problem is None:
        return name
    where = f"{source}: " if source else ""
    raise DataError(f"{where}{what} {name!r} {problem}; use a plain folder name such as 'stage1' or 'my_run' "
                    "(letters, digits, '_', '-', '.'; no '/').")


# ----------------------------------------------------------------------------------------- inputs
# the CSVs of an FSDKaggle2019-format data set (fatlib.dataset reads them; synth writes noisy_truth.csv)
DATA_SET_CSVS = ("train_curated.csv", "train_noisy.csv", "sample_submission.csv", "test_labels.csv",
                 "test_post_competition.csv", "noisy_truth.csv", "vocabulary.csv")


def data_inputs(data) -> list[Path]:
    """The inputs of a data set (a :class:`fatlib.dataset.FatData`): its folder, its CSVs (:data:`DATA_SET_CSVS`;
    other files there, e.g. a submission written with ``--data .``, are not inputs), its audio folders and
    every clip its CSVs list."""
    root = Path(data.root)
    out = [root, *(root / name for name in DATA_SET_CSVS)]
    for split in (data.curated, data.noisy, data.test):
        audio = _real(split.audio_dir)
        out.append(audio)
        out += [audio / f for f in split.fnames]
    return out


def weights_inputs(folders: Iterable[PathLike]) -> list[Path]:
    """Weights folders (stage or run folders) given as inputs, and every file in them."""
    out: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        out.append(folder)
        if folder.is_dir():
            out += sorted(p for p in folder.rglob("*") if p.is_file())
    return out


def check_output_not_input(out: PathLike, *, inputs: Iterable[PathLike], what: str, folder: bool = False,
                           within: Sequence[PathLike] = ()) -> Path:
    """Refuse (OutputError naming both paths) when the output ``out`` is one of ``inputs`` (files or
    folders), or, for a ``folder`` output, holds one of them; or lies inside one of ``within``
    (read-only input roots). Returns ``out``. Paths are compared with symlinks resolved."""
    target = _real(out)
    parents: dict[str, Path] = {}
    for p in inputs:
        real = _real_cached(p, parents)
        if real == target or (folder and target in real.parents):
            if real != target:
                how = f"holds {p}, an input of this command"
            else:
                how = "is an input of this command" + (f" ({p})" if os.path.normpath(p) != os.path.normpath(out) else "")
            raise OutputError(f"{out}: the {what} {how}, which fatlib never writes on. Choose another {what} "
                              "(a new path outside the data set and the weights this command reads).")
    for root in within:
        real = _real(root)
        if real == target or real in target.parents:
            raise OutputError(f"{out}: the {what} lies in the input root {root}, which is read-only input "
                              f"(--input-roots); choose another {what} in the working folder.")
    return Path(out)


def check_folder_slot(path: PathLike, *, what: str) -> Path:
    """An output folder's path must be a folder or not exist yet: refuse a file there before anything
    else is written (the command would write its other outputs, then fail)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: the {what} would be made here, but a file has that name; move or delete "
                          "that file, or choose another --out.")
    return path


def check_replaceable(folder: PathLike, *, marker: str | Sequence[str], inputs: Iterable[PathLike] = (),
                      what: str, force_flag: str = "--force", doing: str | None = None) -> Path:
    """Before ``--force`` replaces ``folder``: it must be a folder fatlib made (it carries every one of
    ``marker``, paths relative to it, e.g. ``manifest.json``) and hold none of ``inputs``. An empty or
    absent folder is fine. OutputError naming the folder and the fix otherwise. ``doing``: what is refused
    (default "--force will not delete it")."""
    folder = Path(folder)
    markers = [marker] if isinstance(marker, str) else list(marker)
    if not folder.exists() and not folder.is_symlink():
        return folder
    if folder.is_symlink() or not folder.is_dir():
        raise OutputError(f"{folder}: not a folder fatlib made (a file or a link), so {force_flag} will not replace "
                          f"it; choose another {what} or move it away yourself.")
    if not any(folder.iterdir()):
        return folder
    missing = [m for m in markers if not (folder / m).exists()]
    if missing:
        doing = doing or f"{force_flag} will not delete it"
        raise OutputError(f"{folder}: not a {what} fatlib made (no {', '.join(missing)}), so {doing}; choose another "
                          f"{what} (a new or empty folder), or move the folder away yourself if you mean it.")
    check_output_not_input(folder, inputs=inputs, what=what, folder=True)
    return folder


def check_replaceable_file(path: PathLike, *, header: str = "fname", what: str = "--out file") -> Path:
    """A file output replaces only a file of its own kind: an existing ``path`` must be empty or a CSV whose
    first field is ``header`` (what fatlib's submissions and selections start with), else OutputError
    (rule 1: a user's other file is never replaced)."""
    path = Path(path)
    if not path.exists():
        return path
    if not path.is_file():
        raise OutputError(f"{path}: the {what} is a folder (or not a plain file); name a file, e.g. {path}/out.csv.")
    with open(path, "rb") as f:
        head = f.read(4096)
    first = head.lstrip(b"\xef\xbb\xbf").split(b"\n", 1)[0].split(b",", 1)[0].strip().strip(b'"')
    if head.strip() and first != header.encode():
        raise OutputError(f"{path}: exists and is not a CSV fatlib writes (its first line does not start with "
                          f"'{header},'), so the {what} will not replace it; choose another {what}, or move the file "
                          "away yourself if you mean it.")
    return path


# ----------------------------------------------------------------------------- temporary leftovers
def temp_prefix(name: str) -> str:
    """The prefix of the temporary folder a process builds ``name`` in (see :func:`clean_stale_temps`)."""
    return f".{name}.pid{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(parent: PathLike, *, name: str) -> list[Path]:
    """Remove the temporary folders ``.<name>.pid<PID>.*.tmp`` and ``.<name>.old-<PID>`` in ``parent`` whose
    process is gone (a run killed while building or replacing ``name``); those of a running process
    are left alone, and an old folder whose replacement never arrived (``name`` absent) is put back as
    ``name``. Returns what was removed."""
    parent = Path(parent)
    removed = []
    if not parent.is_dir():
        return removed
    head = f".{name}."
    for p in parent.iterdir():
        middle = p.name[len(head):]
        if not p.name.startswith(head) or not p.is_dir() or p.is_symlink():
            continue
        m = re.fullmatch(r"(?:pid(\d+)\.)?[A-Za-z0-9_]+\.tmp|old-(\d+)", middle)
        if m is None:
            continue
        pid = m.group(1) or m.group(2)
        if pid is not None and _alive(int(pid)):
            continue
        if m.group(2) is not None and not (parent / name).exists():
            os.replace(p, parent / name)  # killed between moving the old folder away and the new one in: put it back
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed
