"""``submission.csv``: scores of the test clips written in the sample submission's format, checked first."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import DataError


def write_submission(
    path: str | os.PathLike,
    fnames: Sequence[str],
    scores: np.ndarray,
    vocab: Sequence[str],
    sample_submission: str | os.PathLike | None,
) -> Path:
    """Write ``submission.csv`` in ``sample_submission``'s format: its fnames in its order, its columns.

    Raises DataError on a clip of the sample submission without scores (or scores for a clip it does
    not list), duplicate fnames, a vocabulary that is not its columns, NaN, or scores outside [0, 1].
    With ``sample_submission=None`` the columns are ``fname`` + ``vocab`` and the rows ``fnames``.
    """
    import pandas as pd

    from .atomic import write_csv

    fnames = [str(f) for f in fnames]
    vocab = list(vocab)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(fnames), len(vocab)):
        raise DataError(
            f"{path}: scores have shape {scores.shape}, expected ({len(fnames)} clips, {len(vocab)} classes)."
        )
    dupes = sorted({f for f in fnames if fnames.count(f) > 1}) if len(set(fnames)) < len(fnames) else []
    if dupes:
        raise DataError(f"{path}: clips predicted more than once: {dupes[:5]}; pass each test clip once.")
    bad = [fnames[i] for i in np.flatnonzero(~np.isfinite(scores).all(axis=1))]
    if bad:
        raise DataError(f"{path}: NaN or infinite scores for {len(bad)} clip(s), e.g. {bad[:5]}; fix the model or features.")
    if scores.size and (scores.min() < 0 or scores.max() > 1):
        raise DataError(
            f"{path}: scores range over [{scores.min():.4g}, {scores.max():.4g}], outside [0, 1]; "
            "submit sigmoid probabilities (predict_clips does), not logits."
        )
    if sample_submission is None:
        order, columns = list(range(len(fnames))), vocab
    else:
        from .dataset import read_table

        sample = read_table(sample_submission, columns=("fname",))  # BOM, spaces, a trailing comma: as the data
        columns = list(sample.columns[1:])
        if list(sample.columns[:1]) != ["fname"] or columns != vocab:
            raise DataError(
                f"{sample_submission}: columns are {list(sample.columns[:3])}... ({len(columns)} classes); "
                f"expected 'fname' + the {len(vocab)} classes of the vocabulary in its order. "
                "Predict with weights trained on this data set's vocabulary."
            )
        row = {f: i for i, f in enumerate(fnames)}
        missing = [f for f in sample["fname"] if f not in row]
        extra = sorted(set(fnames) - set(sample["fname"]))
        if missing or extra:
            raise DataError(
                f"{path}: {len(missing)} clip(s) of {sample_submission} have no scores (e.g. {missing[:5]}) and "
                f"{len(extra)} scored clip(s) are not in it (e.g. {extra[:5]}). Predict the whole test split."
            )
        order = [row[f] for f in sample["fname"]]
    df = pd.DataFrame(scores[order], columns=columns)
    df.insert(0, "fname", [fnames[i] for i in order])
    return write_csv(path, df)
