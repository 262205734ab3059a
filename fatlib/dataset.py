"""FSDKaggle2019-format data: vocabulary, label CSVs -> multi-hot targets, validation, folds.

Layout of a data directory (Kaggle's, or one written by ``fatlib.synth``)::

    train_curated/*.wav  train_noisy/*.wav  test/*.wav
    train_curated.csv  train_noisy.csv      # fname,labels ("A,B": one quoted field)
    sample_submission.csv                   # fname + one column per class: vocabulary and test order
    test_labels.csv | test_post_competition.csv   # optional: fname,labels,usage (Public/Private)

Every problem found in a file (unknown labels, duplicate fnames, empty labels, missing audio) is
reported together in one ``DataError`` naming the file, the rows, a few examples and the fix.

What real CSV files carry is accepted (:func:`read_table`): a UTF-8 byte order mark, spaces around
header names, a trailing comma (an empty last column), blank lines. A row with more fields than the
header is refused, naming its line (an unquoted ``A,B`` labels field would otherwise lose ``B``), unless
the extra fields are empty. A clip whose file name on disk is another Unicode normalisation of its CSV
name (NFD on disk, NFC in the CSV: macOS copies) is found under its name on disk.
"""
from __future__ import annotations

import csv
import os
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import write_csv
from .errors import DataError

__all__ = [
    "KAGGLE_DATA_DIR", "LOCAL_DATA_DIR", "SPLIT_NAMES", "TEST_LABEL_FILES", "find_data_dir",
    "load_vocabulary", "parse_labels", "labels_to_multihot", "read_split", "Split", "FatData",
    "make_folds", "load_or_make_folds",
]

KAGGLE_DATA_DIR = Path("../input/freesound-audio-tagging-2019")
LOCAL_DATA_DIR = Path("input")
SPLIT_NAMES = ("curated", "noisy", "test")
TEST_LABEL_FILES = ("test_labels.csv", "test_post_competition.csv")  # first one present wins
_MARKERS = ("train_curated.csv", "sample_submission.csv")
_N_EXAMPLES = 5
_HOW_TO_GET_DATA = ("put the Kaggle data in input/ (see input/README.md) or make a synthetic set with "
                    "`python -m fatlib synth input/`")


def _looks_like_data_dir(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in _MARKERS)


def find_data_dir(data_dir=None) -> Path:
    """The data directory: ``data_dir`` when given, else ``input/``, else Kaggle's input path.

    An explicit ``data_dir`` that does not hold the data is an error (never silently replaced).
    """
    if data_dir is not None:
        path = Path(data_dir)
        if not _looks_like_data_dir(path):
            raise DataError(f"data_dir {str(path)!r} holds neither {' nor '.join(_MARKERS)}; "
                            f"pass the folder with the FSDKaggle2019 layout, or {_HOW_TO_GET_DATA}")
        return path
    for path in (LOCAL_DATA_DIR, KAGGLE_DATA_DIR):
        if _looks_like_data_dir(path):
            return path
    looked = ", ".join(str(p.resolve()) for p in (LOCAL_DATA_DIR, KAGGLE_DATA_DIR))
    raise DataError(f"no data directory found (looked in {looked}); pass data_dir, or {_HOW_TO_GET_DATA}")


def parse_labels(labels: str) -> list[str]:
    """``"A,B"`` -> ``["A", "B"]`` (whitespace around names dropped; ``""`` -> ``[]``)."""
    return [name.strip() for name in str(labels).split(",") if name.strip()]


def _read_rows(path: Path, *, columns) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each row of a CSV (BOM stripped, blank lines dropped); DataError when it
    cannot be read."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; {_HOW_TO_GET_DATA}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows = [(reader.line_num, row) for row in reader if row]
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV ({e}); save it as UTF-8 text with a header row "
                        f"with columns {', '.join(columns)}") from e
    if not rows:
        raise DataError(f"{path}: empty file; it must have a header row with columns {', '.join(columns)}")
    return rows


def _header(path: Path, row: list[str], *, columns) -> list[str]:
    """Header names stripped of spaces; an empty last name (a trailing comma) dropped."""
    header = [c.strip() for c in row]
    while header and header[-1] == "":
        header.pop()
    blank = [i + 1 for i, c in enumerate(header) if not c]
    dups = sorted({c for c in header if header.count(c) > 1})
    if blank or dups:
        raise DataError(f"{path}: the header has " + ("; ".join(
            ([f"no name in column(s) {blank[:_N_EXAMPLES]}"] if blank else [])
            + ([f"duplicated column(s) {dups[:_N_EXAMPLES]}"] if dups else [])))
            + f"; the header must name each column once (including {', '.join(columns)})")
    return header


def read_table(path, *, columns) -> pd.DataFrame:
    """A data CSV as strings (no NaN: empty fields are ``""``), with the quirks of real files accepted
    (module doc) and the ``columns`` required. ``fname`` values are stripped of spaces.

    A DataError names the file and what is wrong: missing file or columns, no header, a row with more
    non-empty fields than the header (its CSV line; quote fields holding commas: ``"A,B"``)."""
    path = Path(path)
    rows = _read_rows(path, columns=columns)
    header = _header(path, rows[0][1], columns=columns)
    n = len(header)
    long = [(line, row) for line, row in rows[1:] if any(c.strip() for c in row[n:])]
    if long:
        raise DataError(
            f"{path}: {len(long)} row(s) have more fields than the header's {n} ({', '.join(header)}) (CSV lines "
            f"{[line for line, _ in long[:_N_EXAMPLES]]}: {', '.join(','.join(r) for _, r in long[:2])}); quote a "
            'field that holds commas ("A,B") or add the column to the header'
        )
    df = pd.DataFrame([row[:n] + [""] * (n - len(row)) for _, row in rows[1:]], columns=header, dtype=str)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing} (has {list(df.columns)}); "
                        f"the header must include {', '.join(columns)}")
    if "fname" in df.columns:
        df["fname"] = df["fname"].str.strip()
    return df


_read_csv = read_table


def _train_label_csvs(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "train_curated.csv", data_dir / "train_noisy.csv") if p.is_file()]


def load_vocabulary(data_dir) -> list[str]:
    """Class names in submission order: ``sample_submission.csv`` columns after ``fname``, else the
    sorted union of the labels in ``train_curated.csv`` / ``train_noisy.csv``."""
    data_dir = Path(data_dir)
    sub = data_dir / "sample_submission.csv"
    if sub.is_file():
        columns = _header(sub, _read_rows(sub, columns=("fname", "<classes>"))[0][1], columns=("fname", "<classes>"))
        vocab = columns[1:]
        if not columns or columns[0] != "fname" or not vocab:
            raise DataError(f"{sub}: the header must be fname followed by each class name once "
                            f"(got {columns[:4]}...); use Kaggle's sample_submission.csv or regenerate the data set")
        return vocab
    csvs = _train_label_csvs(data_dir)
    if not csvs:
        raise DataError(f"{data_dir}: neither sample_submission.csv nor train_curated.csv/train_noisy.csv; "
                        f"cannot tell the classes; {_HOW_TO_GET_DATA}")
    names = set()
    for path in csvs:
        for labels in _read_csv(path, columns=("fname", "labels"))["labels"]:
            names.update(parse_labels(labels))
    if not names:
        raise DataError(f"{', '.join(map(str, csvs))}: no labels at all; fill the labels column")
    return sorted(names)


def _multihot(label_lists, vocab) -> tuple[np.ndarray, dict[int, list[str]]]:
    """(float32 (N, C), {row: unknown names})."""
    index = {name: i for i, name in enumerate(vocab)}
    out = np.zeros((len(label_lists), len(vocab)), dtype=np.float32)
    unknown: dict[int, list[str]] = {}
    for row, names in enumerate(label_lists):
        for name in names:
            col = index.get(name)
            if col is None:
                unknown.setdefault(row, []).append(name)
            else:
                out[row, col] = 1.0
    return out, unknown


def labels_to_multihot(label_lists, vocab) -> np.ndarray:
    """Lists of class names -> float32 multi-hot (N, C) in ``vocab`` order; DataError on unknown names."""
    out, unknown = _multihot(label_lists, vocab)
    if unknown:
        names = sorted({n for names in unknown.values() for n in names})
        raise DataError(f"{len(unknown)} label list(s) name classes not in the vocabulary of {len(vocab)}: "
                        f"{names[:_N_EXAMPLES]}; fix the spelling or use the vocabulary the model was "
                        "trained with")
    return out


def _problem(what: str, rows: list[int], examples: list[str], fix: str) -> str:
    shown = ", ".join(examples[:_N_EXAMPLES]) + (", ..." if len(examples) > _N_EXAMPLES else "")
    return f"  - {len(rows)} row(s) {what} (CSV lines {[r + 2 for r in rows[:_N_EXAMPLES]]}: {shown}); {fix}"


def _check_fnames(fnames: list[str], *, audio_dir: Path, check_files: bool) -> tuple[list[str], dict[str, str]]:
    """(problems, {CSV name: name on disk} for files stored under another Unicode normalisation)."""
    problems, on_disk = [], {}
    series = pd.Series(fnames)
    empty = np.flatnonzero(series.str.strip() == "").tolist()
    if empty:
        problems.append(_problem("have an empty fname", empty, ["''"] * len(empty), "fill in the file names"))
    dup = np.flatnonzero(series.duplicated(keep=False) & (series != "")).tolist()
    if dup:
        problems.append(_problem("repeat an fname", dup, [fnames[r] for r in dup],
                                 "keep one row per clip (merge their labels into one field)"))
    if check_files:
        if not audio_dir.is_dir():
            problems.append(f"  - the audio folder {audio_dir} does not exist; put the wav files there "
                            "or pass check_files=False to read the labels only")
        else:
            present = {entry.name for entry in os.scandir(audio_dir)}
            absent = [f for f in fnames if f and f not in present]
            if absent:  # the same name in another normalisation (NFD on disk, NFC in the CSV, or the reverse)?
                by_nfc = {unicodedata.normalize("NFC", name): name for name in present}
                on_disk = {f: by_nfc[unicodedata.normalize("NFC", f)] for f in absent
                           if unicodedata.normalize("NFC", f) in by_nfc}
            missing = [r for r, f in enumerate(fnames) if f and f not in present and f not in on_disk]
            if missing:
                problems.append(_problem(f"name audio missing from {audio_dir}", missing,
                                         [fnames[r] for r in missing],
                                         "copy the missing wav files there or remove their rows"))
    return problems, on_disk


def _raise_problems(csv_path: Path, n_rows: int, problems: list[str]) -> None:
    if problems:
        raise DataError(f"{csv_path} ({n_rows} rows) has {len(problems)} problem(s):\n" + "\n".join(problems))


def _split_name(csv_path: Path) -> str:
    stem = csv_path.stem
    return stem[len("train_"):] if stem.startswith("train_") else stem


@dataclass
class Split:
    """One split: clip file names, their audio folder and float32 multi-hot targets (None if unlabelled)."""

    name: str
    audio_dir: Path
    fnames: list[str]
    targets: np.ndarray | None
    on_disk: dict[str, str] = field(default_factory=dict)  # fname -> file name, where they differ (NFD/NFC)

    def paths(self) -> list[Path]:
        return [self.audio_dir / self.on_disk.get(f, f) for f in self.fnames]

    def __len__(self) -> int:
        return len(self.fnames)


def read_split(csv_path, vocab, *, audio_dir, check_files=True, allow_empty_labels=False) -> Split:
    """Read a ``fname,labels`` CSV into a Split with multi-hot targets in ``vocab`` order.

    All problems (unknown labels, duplicate or empty fnames, empty label fields unless
    ``allow_empty_labels``, audio files missing from ``audio_dir`` when ``check_files``) are
    reported together in one DataError.
    """
    csv_path, audio_dir = Path(csv_path), Path(audio_dir)
    df = _read_csv(csv_path, columns=("fname", "labels"))
    fnames = df["fname"].str.strip().tolist()
    label_lists = [parse_labels(s) for s in df["labels"]]
    targets, unknown = _multihot(label_lists, vocab)
    problems, on_disk = _check_fnames(fnames, audio_dir=audio_dir, check_files=check_files)
    if unknown:
        rows = sorted(unknown)
        problems.append(_problem(f"name classes not in the vocabulary of {len(vocab)}", rows,
                                 [f"{fnames[r]}: {unknown[r]}" for r in rows],
                                 "fix the spelling (names are case-sensitive, e.g. 'Bathtub_(filling_or_washing)') "
                                 "or add the class to sample_submission.csv"))
    if not allow_empty_labels:
        empty = [r for r, names in enumerate(label_lists) if not names]
        if empty:
            problems.append(_problem("have an empty labels field", empty, [fnames[r] for r in empty],
                                     "give every training clip at least one label or remove the row"))
    _raise_problems(csv_path, len(df), problems)
    return Split(_split_name(csv_path), audio_dir, fnames, targets, on_disk)


def _read_test(root: Path, vocab: list[str], *, check_files: bool):
    """(test Split without targets, test targets or None, usage or None)."""
    label_csv = next((root / n for n in TEST_LABEL_FILES if (root / n).is_file()), None)
    sub = root / "sample_submission.csv"
    audio_dir = root / "test"
    labelled = None
    if label_csv is not None:
        labelled = read_split(label_csv, vocab, audio_dir=audio_dir, check_files=False, allow_empty_labels=True)
        frame = _read_csv(label_csv, columns=("fname", "labels"))
        usage = frame["usage"].to_numpy(dtype=object) if "usage" in frame.columns else None  # optional
    if sub.is_file():
        fnames = _read_csv(sub, columns=("fname",))["fname"].str.strip().tolist()
    elif labelled is not None:
        fnames = labelled.fnames
    else:
        fnames = []
    problems, on_disk = _check_fnames(fnames, audio_dir=audio_dir, check_files=check_files and bool(fnames))
    _raise_problems(sub if sub.is_file() else audio_dir, len(fnames), problems)
    test = Split("test", audio_dir, fnames, None, on_disk)
    if labelled is None:
        return test, None, None
    row = {f: i for i, f in enumerate(labelled.fnames)}
    absent = [i for i, f in enumerate(fnames) if f not in row]
    if absent:
        raise DataError(_problem(f"of {sub} have no row in {label_csv}", absent, [fnames[i] for i in absent],
                                 f"use the {label_csv.name} that belongs to this test set or delete it"))
    take = np.array([row[f] for f in fnames], dtype=np.int64)
    return test, labelled.targets[take], None if usage is None else usage[take]


@dataclass
class FatData:
    """The whole data set: vocabulary, the curated/noisy/test splits and test labels when known."""

    root: Path
    vocab: list[str]
    curated: Split
    noisy: Split
    test: Split
    test_targets: np.ndarray | None = None
    test_usage: np.ndarray | None = None

    @property
    def n_train_clips(self) -> int:
        """Training clips (curated + noisy): the data set size auto scaling goes by."""
        return len(self.curated.fnames) + len(self.noisy.fnames)

    @classmethod
    def from_dir(cls, data_dir=None, *, check_files=True) -> FatData:
        """Load and validate a data directory (see the module docstring for the layout).

        A missing ``train_noisy.csv`` gives an empty noisy split (with a warning): curated-only
        training. Problems in several files are reported together in one DataError.
        """
        root = find_data_dir(data_dir)
        vocab = load_vocabulary(root)
        splits, problems = {}, []
        for name in ("curated", "noisy"):
            csv = root / f"train_{name}.csv"
            if name == "noisy" and not csv.is_file():
                warnings.warn(f"{csv} not found: the noisy split is empty (curated-only training)", stacklevel=2)
                splits[name] = Split(name, root / "train_noisy", [], np.zeros((0, len(vocab)), np.float32))
                continue
            try:
                splits[name] = read_split(csv, vocab, audio_dir=root / f"train_{name}", check_files=check_files)
            except DataError as e:  # collected, re-raised below together with the other files' problems
                problems.append(str(e))
        try:
            test, test_targets, test_usage = _read_test(root, vocab, check_files=check_files)
        except DataError as e:
            problems.append(str(e))
        if problems:
            raise DataError(f"data directory {root} is not usable:\n" + "\n".join(problems))
        return cls(root, vocab, splits["curated"], splits["noisy"], test, test_targets, test_usage)

    def split(self, name) -> Split:
        if name not in SPLIT_NAMES:
            raise DataError(f"unknown split {name!r}; use one of {', '.join(SPLIT_NAMES)}")
        return getattr(self, name)


def make_folds(targets, *, n_folds=5, seed=42) -> np.ndarray:
    """Fold id (0..n_folds-1) per row: iterstrat MultilabelStratifiedKFold, shuffled with ``seed``."""
    from .errors import require

    stratifiers = require("iterstrat.ml_stratifiers", needed_by="make_folds (multi-label stratified folds)")

    targets = np.asarray(targets)
    if targets.ndim != 2:
        raise DataError(f"make_folds: targets must be (n_clips, n_classes), got shape {targets.shape}")
    if not 2 <= n_folds <= len(targets):
        raise DataError(f"make_folds: n_folds={n_folds} must be between 2 and the number of clips ({len(targets)})")
    folds = np.full(len(targets), -1, dtype=np.int64)
    splitter = stratifiers.MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, valid) in enumerate(splitter.split(np.zeros((len(targets), 1)), (targets > 0).astype(int))):
        folds[valid] = k
    return folds


def load_or_make_folds(path, fnames, targets, *, n_folds, seed) -> np.ndarray:
    """Folds from the ``fname,fold`` CSV at ``path`` if it exists, else made and saved there (atomically).

    An existing file is reused only if it lists exactly ``fnames`` with ``n_folds`` folds; otherwise a
    DataError asks to delete it. It is never regenerated silently: a later stage must validate on the
    same folds as the earlier ones, or out-of-fold scores leak. ``seed`` only matters when making it.
    """
    path = Path(path)
    fnames = list(fnames)
    if not path.is_file():
        folds = make_folds(targets, n_folds=n_folds, seed=seed)
        write_csv(path, pd.DataFrame({"fname": fnames, "fold": folds}))
        return folds
    df = _read_csv(path, columns=("fname", "fold"))
    saved = dict(zip(df["fname"], df["fold"]))
    fix = f"delete {path} to make new folds (earlier stages' out-of-fold outputs then no longer match)"
    if len(saved) != len(df) or set(saved) != set(fnames) or len(fnames) != len(set(fnames)):
        extra, absent = set(saved) - set(fnames), set(fnames) - set(saved)
        raise DataError(f"{path}: its {len(df)} fnames do not match the {len(fnames)} clips given "
                        f"({len(absent)} not in the file, e.g. {sorted(absent)[:3]}; {len(extra)} extra, "
                        f"e.g. {sorted(extra)[:3]}); {fix}")
    try:
        folds = np.array([int(saved[f]) for f in fnames], dtype=np.int64)
    except ValueError as e:
        raise DataError(f"{path}: the fold column must hold integers ({e}); {fix}") from e
    if set(folds.tolist()) != set(range(n_folds)):
        raise DataError(f"{path}: holds folds {sorted(set(folds.tolist()))}, not 0..{n_folds - 1}; {fix}")
    return folds
