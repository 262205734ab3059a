"""A run's folds and its selection CSVs: what training, selection and the pipeline all read.

- :func:`curated_folds`, :func:`noisy_folds`: the fold of every clip of a split, made once per run
  and kept in ``<run_dir>/folds_<split>.csv`` (fatlib.dataset.load_or_make_folds), so that every stage of
  the run, and the selection between stages, uses the same folds;
- :func:`read_selection`: a selection CSV (``fname,labels,score,fold``, written by
  fatlib.selection.Selection.write) as rows into the noisy split, multi-hot targets and folds.

fatlib.train and fatlib.selection both import this module; it imports neither.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .dataset import load_or_make_folds, parse_labels
from .errors import DataError

SELECTION_COLUMNS = ["fname", "labels", "score", "fold"]


def curated_folds(data, *, run_dir, n_folds: int, seed: int) -> np.ndarray:
    """The fold of every curated clip of ``data`` (a FatData), read from or written to the run folder."""
    return load_or_make_folds(Path(run_dir) / "folds_curated.csv", data.curated.fnames, data.curated.targets,
                              n_folds=n_folds, seed=seed)


def noisy_folds(data, *, run_dir, n_folds: int, seed: int) -> np.ndarray:
    """The fold of every noisy clip of ``data`` (an empty array without a noisy split)."""
    if len(data.noisy.fnames) == 0:
        return np.zeros(0, dtype=np.int64)
    return load_or_make_folds(Path(run_dir) / "folds_noisy.csv", data.noisy.fnames, data.noisy.targets,
                              n_folds=n_folds, seed=seed)


def read_selection(path, *, vocab: Sequence[str], noisy_fnames: Sequence[str]):
    """Read a selection CSV. Returns (rows into the noisy split, float32 multi-hot targets, folds)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: selection CSV not found. Run `python -m fatlib select` first or fix the path.")
    df = pd.read_csv(path, keep_default_na=False)
    missing = [c for c in SELECTION_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; a selection CSV has {SELECTION_COLUMNS}.")
    pos = {n: i for i, n in enumerate(noisy_fnames)}
    col = {c: j for j, c in enumerate(vocab)}
    unknown = [n for n in df["fname"] if n not in pos][:5]
    bad = sorted({lab for s in df["labels"] for lab in parse_labels(s) if lab not in col})[:5]
    if unknown or bad:
        raise DataError(
            f"{path}: " + (f"clips not in the noisy split {unknown}; " if unknown else "")
            + (f"labels not in the vocabulary {bad}; " if bad else "")
            + "make the selection from this data set's noisy split."
        )
    rows = np.array([pos[n] for n in df["fname"]], dtype=int)
    y = np.zeros((len(df), len(vocab)), dtype=np.float32)
    for i, s in enumerate(df["labels"]):
        for lab in parse_labels(s):
            y[i, col[lab]] = 1.0
    return rows, y, df["fold"].to_numpy(dtype=int)
