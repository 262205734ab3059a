"""Selection rules on hand-made arrays."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fatlib.errors import DataError
from fatlib.folds import read_selection
from fatlib.selection import (
    select_by_agreement,
    select_by_logloss,
    select_pseudo_labels,
    stage3_score,
)

VOCAB = ["a", "b", "c"]


def onehot(labels):
    y = np.zeros((len(labels), 3), dtype=np.float32)
    for i, ls in enumerate(labels):
        for j in ls:
            y[i, j] = 1
    return y


def test_stage3_threshold_and_nan():
    s = stage3_score([1.0, 0.25, 0.5, np.nan], [0.25, 1.0, 0.49, 1.0])
    assert s[0] == pytest.approx(0.5) and s[1] == pytest.approx(0.5)
    assert s[2] < 0.5 and np.isnan(s[3])
    sel = select_by_agreement(s, targets=onehot([[0], [1], [0], []]), folds=[0, 0, 0, 0])
    assert sorted(sel.indices.tolist()) == [0, 1]


def test_cap_per_fold_per_label():
    # 8 clips of label 0: 4 in fold 0, 4 in fold 1; scores decreasing with index
    y = onehot([[0]] * 8)
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    score = np.linspace(1.0, 0.6, 8)
    sel = select_by_agreement(score, targets=y, folds=folds, threshold=0.5, max_per_fold_label=2)
    assert sel.indices.tolist() == [0, 1, 4, 5]  # best two of each fold
    assert np.all(np.diff(sel.score) <= 0)


def test_cap_counts_every_label_of_a_multilabel_clip():
    y = onehot([[0, 1], [1], [0]])
    sel = select_by_agreement([0.9, 0.8, 0.7], targets=y, folds=[0, 0, 0], max_per_fold_label=1)
    assert sel.indices.tolist() == [0]  # labels 0 and 1 both used up by clip 0


def test_stage4_equal_one_rule():
    lw3 = np.array([1.0, 0.999, 1.0, 0.5])
    sel = select_by_agreement(lw3, targets=onehot([[0]] * 4), folds=[0, 1, 0, 1], threshold=1.0,
                              max_per_fold_label=None)
    assert sorted(sel.indices.tolist()) == [0, 2]


def test_logloss_single_label_best_n_cap_per_class():
    y = onehot([[0], [0], [0], [1], [0, 1], [2]])
    p = np.array([
        [0.9, 0.1, 0.1],   # good
        [0.8, 0.1, 0.1],   # good
        [0.7, 0.1, 0.1],   # third-best of class a: capped
        [0.1, 0.95, 0.1],  # best
        [0.99, 0.99, 0.01],  # multi-label: never
        [0.5, 0.5, 0.1],   # poor
    ])
    sel = select_by_logloss(p, targets=y, folds=np.arange(6) % 2, n_best=3, max_per_class=2)
    assert sel.indices.tolist() == [3, 0, 1]
    assert np.all(np.diff(sel.score) >= 0)
    assert sel.folds.tolist() == [1, 0, 1]


def test_pseudo_label_rounds_then_relabel():
    y = onehot([[0], [1], [2], [0, 1]])
    p = np.array([
        [0.9, 0.2, 0.1],  # agrees, mean 0.9
        [0.3, 0.6, 0.1],  # agrees, mean 0.6
        [0.8, 0.1, 0.2],  # disagrees (top is a)
        [0.7, 0.8, 0.1],  # top-2 = {a, b}: agrees, mean 0.75
    ])
    r1 = select_pseudo_labels(p, targets=y, folds=[0, 1, 0, 1], round_index=1, round_size=1)
    assert r1.indices.tolist() == [0]
    r2 = select_pseudo_labels(p, targets=y, folds=[0, 1, 0, 1], round_index=2, round_size=1)
    assert r2.indices.tolist() == [0, 3]
    r9 = select_pseudo_labels(p, targets=y, folds=[0, 1, 0, 1], round_index=3, round_size=1, max_rounds=2,
                              threshold=0.65)
    assert len(r9) == 4 and r9.indices.tolist()[:2] == [0, 3]  # the kept clips first, as in round 2
    relabel = dict(zip(r9.indices.tolist(), r9.targets.tolist()))
    assert relabel[2] == [1, 0, 0]  # noisy label c replaced by the prediction a
    assert relabel[3] == [1, 1, 0]
    assert relabel[1] == [0, 1, 0]  # nothing >= 0.65: top class kept
    low = select_pseudo_labels(p, targets=y, folds=[0, 1, 0, 1], round_index=3, round_size=1, max_rounds=2,
                               threshold=0.15)
    relabel = dict(zip(low.indices.tolist(), low.targets.tolist()))
    assert relabel[0] == [1, 0, 0]  # kept in the rounds: keeps its noisy label (prediction: a and b)
    assert relabel[1] == [1, 1, 0] and relabel[2] == [1, 0, 1]  # the others: thresholded predictions


def test_write_and_read_roundtrip(tmp_path):
    y = onehot([[0], [1, 2]])
    sel = select_by_agreement([0.9, 0.8], targets=y, folds=[3, 4], max_per_fold_label=None)
    fnames = ["x.wav", "y.wav"]
    out = sel.write(tmp_path / "sel.csv", fnames=fnames, vocab=VOCAB)
    df = pd.read_csv(out)
    assert list(df.columns) == ["fname", "labels", "score", "fold"]
    assert df["labels"].tolist() == ["a", "b,c"]
    rows, targets, folds = read_selection(out, vocab=VOCAB, noisy_fnames=fnames)
    assert rows.tolist() == [0, 1] and folds.tolist() == [3, 4]
    np.testing.assert_array_equal(targets, y)
    with pytest.raises(DataError, match="not in the noisy split"):
        read_selection(out, vocab=VOCAB, noisy_fnames=["x.wav"])


def test_bad_shapes_name_the_argument():
    with pytest.raises(DataError, match="folds"):
        select_by_agreement([0.9, 0.8], targets=onehot([[0], [1]]), folds=[0])
