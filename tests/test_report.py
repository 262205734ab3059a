"""fatlib.report: the tables and figures the notebooks show (no training: hand-written stage outputs)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest


def test_dataset_overview_and_class_counts(tiny_dataset):
    from fatlib.data import FatData
    from fatlib.report import class_counts, dataset_overview, plot_class_counts

    data = FatData.from_dir(tiny_dataset)
    table = dataset_overview(data)
    per_clip = data.curated.targets.sum(axis=1)
    assert table.loc["curated", "clips"] == 48
    assert table.loc["curated", "multi_label_share"] == pytest.approx((per_clip >= 2).mean())
    assert table.loc["test", "labelled"] == int((data.test_targets.sum(axis=1) > 0).sum())
    counts = class_counts(data)
    assert list(counts.index) == data.vocab and counts["noisy"].tolist() == data.noisy.targets.sum(0).tolist()
    assert len(plot_class_counts(data).axes[0].patches) == 2 * len(data.vocab)


def test_training_batch_and_log_mel_comparison(tiny_dataset, tiny_mel, tmp_path):
    from fatlib.cache import FeatureCache
    from fatlib.data import FatData
    from fatlib.errors import DataError
    from fatlib.report import compare_log_mel, training_batch

    data = FatData.from_dir(tiny_dataset)
    cache = FeatureCache.build(data.curated.paths(), tiny_mel, cache_dir=tmp_path, name="curated", n_jobs=1,
                               progress=False)
    x, y = training_batch(cache, data.curated.targets, tiny_mel, batch_size=8, seed=3)
    assert x.shape == (8, tiny_mel.channels, 32, 32) and y.shape == (8, len(data.vocab))
    # each row's targets are the labels of some curated clip (real clips, not zeros)
    assert all(any(np.array_equal(r, t) for t in data.curated.targets) for r in y.numpy())
    x2, _ = training_batch(cache, data.curated.targets, tiny_mel, batch_size=8, seed=3)
    assert np.array_equal(x.numpy(), x2.numpy())
    with pytest.raises(DataError, match="target rows"):
        training_batch(cache, data.noisy.targets[:5], tiny_mel)
    cmp = compare_log_mel(data.curated.paths()[0], tiny_mel)
    assert cmp["librosa"].shape[0] == 32 and cmp["max_abs_diff_db"] <= 0.01


def _fake_stage(stage_dir, vocab, selected=None):
    stage_dir.mkdir(parents=True)
    (stage_dir / "metrics.json").write_text(json.dumps({
        "cv_lwlrap_curated": 0.7, "cv_lwlrap_noisy": 0.5, "fold_lwlrap_curated": [0.6, 0.8],
        "fold_lwlrap_noisy": [0.4, 0.6], "per_class_lwlrap_curated": dict.fromkeys(vocab, 0.7),
        "class_weight_curated": dict.fromkeys(vocab, 1 / len(vocab))}))
    if selected is not None:
        selected.to_csv(stage_dir / "selected.csv", index=False)


def test_stage_table_and_selection(tmp_path):
    from fatlib.errors import DataError
    from fatlib.report import plot_selection, plot_stage_per_class, selection_counts, stage_table

    vocab = ["A", "B", "C"]
    sel = pd.DataFrame({"fname": ["x", "y", "z"], "labels": ["A", "A,C", "C"], "score": [1.0, 0.6, 0.9],
                        "fold": [0, 1, 1]})
    _fake_stage(tmp_path / "stage3", vocab, sel)
    table = stage_table(tmp_path / "stage3")
    assert table.index.tolist() == ["0", "1", "all (OOF)"] and table.loc["all (OOF)", "lwlrap_curated"] == 0.7
    counts = selection_counts(tmp_path / "stage3", vocab)
    assert counts.loc["A"].tolist() == [1, 1, 2] and counts.loc["B", "total"] == 0 and counts.loc["C", "total"] == 2
    assert plot_selection(tmp_path / "stage3", vocab) is not None
    assert plot_stage_per_class(tmp_path / "stage3") is not None
    with pytest.raises(DataError, match="metrics.json: not found"):
        stage_table(tmp_path / "stage9")
    _fake_stage(tmp_path / "stage1", vocab)
    with pytest.raises(DataError, match="only stage3 and stage4 select"):
        selection_counts(tmp_path / "stage1", vocab)


def test_runs_ensemble_needs_the_same_folds(tiny_dataset, tmp_path):
    from fatlib.data import FatData
    from fatlib.errors import DataError
    from fatlib.metrics import lwlrap
    from fatlib.report import runs_ensemble_cv

    data = FatData.from_dir(tiny_dataset)
    rng = np.random.default_rng(0)
    mats = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        mats.append(rng.random((len(data.curated.fnames), len(data.vocab))))
        df = pd.DataFrame(mats[-1], columns=data.vocab)
        df.insert(0, "fname", data.curated.fnames)
        df.to_csv(tmp_path / run / "oof_ensemble_curated.csv", index=False)
        (tmp_path / run / "folds_curated.csv").write_text("fname,fold\nx,0\n")
    cv = runs_ensemble_cv(data, [tmp_path / "a", tmp_path / "b"])
    assert cv == pytest.approx(lwlrap(data.curated.targets, (mats[0] + mats[1]) / 2))
    (tmp_path / "b" / "folds_curated.csv").write_text("fname,fold\nx,1\n")
    with pytest.raises(DataError, match="curated folds differ"):
        runs_ensemble_cv(data, [tmp_path / "a", tmp_path / "b"])
