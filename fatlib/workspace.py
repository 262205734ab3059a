"""Where a run's files are when its stages live in different sessions (one Kaggle session per notebook).

A Kaggle session starts empty: its working folder (``/kaggle/working``, the current directory) is the
only place it writes, and the outputs of earlier sessions are attached read-only under
``../input/<name>/``. Each such *input root* mirrors a working folder: the same relative paths
(``weights/<run>/<stage>/``, ``cache/``). :class:`Roots` looks a path up in the working folder first,
then under each input root in order. Nothing is ever written into an input root; the only copies go
the other way, into the working folder, and only for what a stage resumes from
(:meth:`Roots.adopt_stage`: the run's fold files and the stage's own finished folds), so a stage that
did not fit in one session carries on in the next from the previous session's output.

Absolute paths outside the working folder are used as they are (no input root mirrors them).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .atomic import atomic_path
from .errors import DataError, WeightsError

RUN_FILES = ("folds_curated.csv", "folds_noisy.csv")  # shared by every stage of a run: copied forward
KAGGLE_INPUT = Path("../input")
MARKERS = ("weights", "cache")  # an earlier session's output holds at least one of these
_FOLD_FILE = re.compile(r"^fold(\d+)[._]")


def discover_input_roots(parent: str | os.PathLike = KAGGLE_INPUT) -> list[Path]:
    """Every folder directly under ``parent`` holding ``weights/`` or ``cache/``, by name: on Kaggle,
    the outputs of earlier notebooks (and a fatlib dataset with weights) attached to this one."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir() if p.is_dir() and any((p / m).is_dir() for m in MARKERS))


def finished_folds(stage_dir: str | os.PathLike) -> list[int]:
    """Folds of a stage folder with their weights and ``fold{k}.done`` marker (written last)."""
    stage_dir = Path(stage_dir)
    if not stage_dir.is_dir():
        return []
    done = [int(m.group(1)) for p in stage_dir.glob("fold*.done") if (m := _FOLD_FILE.match(p.name))]
    return sorted(k for k in done if (stage_dir / f"fold{k}.safetensors").is_file())


def stage_finished(stage_dir: str | os.PathLike) -> bool:
    """True when every fold of the stage folder (``n_folds`` of its config.json) is done and its metrics are written."""
    stage_dir = Path(stage_dir)
    if not (stage_dir / "config.json").is_file() or not (stage_dir / "metrics.json").is_file():
        return False
    try:
        n_folds = int(json.loads((stage_dir / "config.json").read_text())["n_folds"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{stage_dir / 'config.json'}: cannot read n_folds ({e}); delete the stage folder to retrain it.") from e
    return set(range(n_folds)) <= set(finished_folds(stage_dir))


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _absolute(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(path))


class Roots:
    """The working folder (``work_dir``, default the current directory: the only place written) and
    read-only ``input_roots`` (earlier sessions' outputs), searched in that order.

    ``input_roots=None`` or ``()``: the working folder alone (everything behaves as without sessions).
    """

    def __init__(self, input_roots: Sequence[str | os.PathLike] | None = (), *, work_dir: str | os.PathLike | None = None):
        self.work_dir = _absolute(work_dir if work_dir is not None else os.getcwd())
        roots = []
        for r in input_roots or ():
            if not Path(r).is_dir():
                raise DataError(f"input root {r}: no such folder. Attach the earlier notebook's output (Kaggle: "
                                "Add data > Notebook output) or fix --input-roots / input_roots.")
            if _inside(self.work_dir, _absolute(r)):
                raise DataError(f"input root {r}: it holds the working folder {self.work_dir}, which is written to; "
                                "pass earlier sessions' output folders, not the current one or a parent of it.")
            if Path(r) not in roots:
                roots.append(Path(r))
        self.inputs = tuple(roots)

    def __repr__(self) -> str:
        return f"Roots(work_dir={str(self.work_dir)!r}, inputs={[str(r) for r in self.inputs]})"

    # --------------------------------------------------------------------------------- lookups
    def mirrors(self, path: str | os.PathLike) -> list[Path]:
        """``path`` itself, then the same path under each input root (when it lies in the working folder)."""
        path = Path(path)
        try:
            rel = _absolute(path).relative_to(self.work_dir)
        except ValueError:
            return [path]
        return [path, *(r / rel for r in self.inputs)]

    def find(self, path: str | os.PathLike) -> Path | None:
        """The first of :meth:`mirrors` that exists, else None."""
        return next((p for p in self.mirrors(path) if p.exists()), None)

    def find_stage(self, stage_dir: str | os.PathLike) -> Path | None:
        """Where to read a stage from: the first mirror where it is finished, else the first that is a
        folder (an unfinished stage: the caller says what is missing), else None."""
        dirs = [p for p in self.mirrors(stage_dir) if p.is_dir()]
        return next((p for p in dirs if stage_finished(p)), dirs[0] if dirs else None)

    def find_weights(self, weights, *, stages: Sequence[str] | None = None) -> list[Path]:
        """Stage folders with ``fold*.safetensors`` for ``weights`` (run folders or stage folders, as
        :func:`fatlib.predict.weight_files` takes them): each stage is looked up on its own, so a run's
        stages may come from different roots. A path found nowhere is returned as given (weight_files
        then names it); a run folder without the wanted ``stages`` is a WeightsError naming them."""
        out: list[Path] = []
        for w in [weights] if isinstance(weights, (str, os.PathLike)) else weights:
            dirs = [p for p in self.mirrors(w) if p.is_dir()]
            stage_dir = next((p for p in dirs if any(p.glob("fold*.safetensors"))), None)
            if stage_dir is not None or not dirs:
                out.append(stage_dir or Path(w))
                continue
            have = {s.name: s for d in reversed(dirs) for s in d.iterdir() if any(s.glob("fold*.safetensors"))}
            wanted = list(stages) if stages else sorted(have)
            missing = [s for s in wanted if s not in have]
            if missing:
                raise WeightsError(
                    f"{w}: no fold*.safetensors for stage(s) {missing} in {[str(d) for d in dirs]}; stages with "
                    f"weights there: {sorted(have) or 'none'}. Train them first, attach the session that trained "
                    "them (--input-roots), or fix --weights/--stages."
                )
            out += [have[s] for s in wanted] if wanted else [Path(w)]
        return out

    # --------------------------------------------------------------------------------- writing
    def check_writable(self, path: str | os.PathLike) -> Path:
        """``path`` itself; a DataError when it lies inside an input root (those are read-only)."""
        for r in self.inputs:
            if _inside(_absolute(path), _absolute(r)):
                raise DataError(f"{path}: inside the read-only input root {r}; write under the working folder "
                                f"{self.work_dir} (e.g. weights/, cache/) instead.")
        return Path(path)

    def adopt_stage(self, stage_dir: str | os.PathLike) -> list[int]:
        """Copy into the writable ``stage_dir`` what it resumes from: the run's fold files
        (``RUN_FILES`` of its parent) and, from the input root holding most of them, the stage's
        finished folds this folder lacks (with the stage's other files it lacks: config.json,
        selected.csv, ...). Each file is copied atomically, a fold's ``.done`` marker last. Returns
        the folds copied."""
        stage_dir = self.check_writable(stage_dir)
        for name in RUN_FILES:
            target = stage_dir.parent / name
            src = self.find(target)
            if src is not None and src != target:
                _copy(src, target)
        sources = [p for p in self.mirrors(stage_dir)[1:] if p.is_dir()]
        if not sources:
            return []
        best = max(sources, key=lambda p: len(finished_folds(p)))  # the first one on a tie
        new = sorted(set(finished_folds(best)) - set(finished_folds(stage_dir)))
        if not new:
            return []
        files = sorted((p for p in best.iterdir() if p.is_file()), key=lambda p: (p.suffix == ".done", p.name))
        for src in files:
            m = _FOLD_FILE.match(src.name)
            fold = int(m.group(1)) if m else None
            if (fold is None and not (stage_dir / src.name).exists()) or fold in new:
                _copy(src, stage_dir / src.name)
        return new


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)  # contents only: the read-only mode of an input stays behind


@dataclass(frozen=True)
class Workspace:
    """Where a session works, passed as one object instead of four loose parameters: ``weights`` (the
    working folder's runs, ``<weights>/<run>/``: written), ``cache`` (the feature caches), ``input_roots``
    (earlier sessions' outputs, read-only, :class:`Roots`) and ``progress`` (bars, or plain lines only)."""

    weights: Path = Path("weights")
    cache: Path = Path("cache")
    input_roots: tuple = ()
    progress: bool = True

    def __post_init__(self):
        object.__setattr__(self, "weights", Path(self.weights))
        object.__setattr__(self, "cache", Path(self.cache))
        object.__setattr__(self, "input_roots", tuple(Path(r) for r in self.input_roots or ()))

    @property
    def roots(self) -> Roots:
        """The working folder and the input roots, for lookups (:class:`Roots`)."""
        return Roots(self.input_roots)

    def run_dir(self, run: str) -> Path:
        return self.weights / run

