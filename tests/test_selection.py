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


# FSDKaggle2019's single-label noisy clips per class (train_noisy.csv, 80 classes, sorted): 16,566 in all
NOISY_SINGLE_LABEL = [
    28, 41, 41, 50, 85, 88, 92, 98, 100, 118, 121, 122, 135, 141, 144, 151, 167, 172, 173, 175, 175, 176, 184, 189,
    192, 195, 200, 200, 201, 209, 209, 211, 217, 219, 221, 221, 224, 224, 225, 225, 229, 231, 234, 235, 238, 239,
    245, 246, 246, 248, 248, 248, 248, 249, 249, 250, 251, 251, 251, 254, 255, 256, 257, 258, 259, 259, 261, 263,
    263, 264, 265, 266, 266, 269, 269, 272, 272, 275, 277, 291]


@pytest.mark.parametrize("selection,n_best", [("selected_m3", 5000), ("selected15k_m2", 15000)])
def test_9th_place_selections_reach_their_size_on_80_classes(selection, n_best):
    """The 9th recipe's "curated + 5k best" and "15k best" selections keep n_best clips on a noisy set with
    FSDKaggle2019's per-class counts (REFERENCE.md's cap of 50 per class would stop at 3,960)."""
    from fatlib.recipes import load_recipe

    table = load_recipe("9th_place").selection[selection]
    assert table["n_best"] == n_best
    counts = np.array(NOISY_SINGLE_LABEL)
    classes = np.repeat(np.arange(80), counts)
    y = np.zeros((len(classes) + 500, 80), dtype=np.float32)
    y[np.arange(len(classes)), classes] = 1
    y[len(classes):, :2] = 1  # 500 multi-label clips: never selected
    rng = np.random.default_rng(0)
    p = np.clip(y * rng.uniform(0.3, 1, y.shape) + rng.uniform(0, 0.2, y.shape), 0, 1)
    folds = np.arange(len(y)) % 5
    sel = select_by_logloss(p, targets=y, folds=folds, n_best=table["n_best"], max_per_class=table["max_per_class"])
    assert len(sel) == n_best and (sel.targets.sum(axis=1) == 1).all()
    assert sel.targets.sum(axis=0).max() <= table["max_per_class"]
    assert np.all(np.diff(sel.score) >= 0)  # lowest log loss first
    loss = sel.score
    rest = np.setdiff1d(np.flatnonzero(y.sum(axis=1) == 1), sel.indices)
    full = sel.targets.sum(axis=0) >= table["max_per_class"]  # a clip left out is worse, or its class is full
    from fatlib.selection import log_loss_per_clip

    left = log_loss_per_clip(p[rest], y[rest])
    assert np.all((left >= loss.max()) | full[y[rest].argmax(axis=1)])
    capped = select_by_logloss(p, targets=y, folds=folds, n_best=5000, max_per_class=50)
    assert len(capped) == 3960  # REFERENCE.md's <= 50 per class: short of the write-up's 5k


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
