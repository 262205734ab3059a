"""fatlib.report: the tables and figures the notebooks show (no training: hand-written stage outputs)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def test_dataset_overview_and_class_counts(tiny_dataset):
    from fatlib.dataset import FatData
    from fatlib.report import class_counts, dataset_overview, plot_class_counts

    data = FatData.from_dir(tiny_dataset)
    table = dataset_overview(data)
    per_clip = data.curated.targets.sum(axis=1)
    assert table.loc["curated", "clips"] == 48
    assert table.loc["curated", "multi_label_share"] == pytest.approx((per_clip >= 2).mean(), abs=5e-5)  # 4 decimals
    assert table.loc["test", "labelled"] == int((data.test_targets.sum(axis=1) > 0).sum())
    counts = class_counts(data)
    assert sorted(counts.index) == sorted(data.vocab) and list(counts.columns) == ["curated", "noisy"]
    assert counts.loc[data.vocab, "noisy"].tolist() == data.noisy.targets.sum(0).tolist()
    total = counts.sum(axis=1).to_numpy()
    assert (np.diff(total) <= 0).all() and total[0] > total[-1]  # most clips first
    ax = plot_class_counts(data).axes[0]
    assert len(ax.patches) == 2 * len(data.vocab)
    top = max(ax.get_yticklabels(), key=lambda t: t.get_position()[1])
    assert top.get_text() == counts.index[0]  # the largest class at the top


def test_training_batch_and_log_mel_comparison(tiny_dataset, tiny_mel, tmp_path):
    from fatlib.cache import FeatureCache
    from fatlib.dataset import FatData
    from fatlib.errors import DataError
    from fatlib.report import compare_log_mel, plot_log_mel_comparison, training_batch

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
    (mesh,) = plot_log_mel_comparison(cmp, tiny_mel).axes[2].collections  # the difference: diverging, centred on 0
    lo, hi = mesh.get_clim()
    assert mesh.get_cmap().name == "RdBu_r" and lo == -hi and hi == pytest.approx(cmp["max_abs_diff_db"], rel=1e-3)


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
    assert table.index.tolist() == ["1", "2", "all (OOF)"] and table.loc["all (OOF)", "lwlrap_curated"] == 0.7
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
    from fatlib.dataset import FatData
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


def _decoded(player):
    """The samples and rate an IPython Audio player will play (its WAV bytes, decoded)."""
    import io

    import soundfile as sf

    samples, rate = sf.read(io.BytesIO(player.data), dtype="float32")
    return samples, rate


def test_clips_play_beside_their_spectrograms(tiny_dataset, tiny_mel):
    from fatlib.dataset import FatData
    from fatlib.features import clip_wave
    from fatlib.report import example_waves, listen_examples, listen_rows

    data = FatData.from_dir(tiny_dataset)
    waves = example_waves(data, tiny_mel, n=2)
    first = data.curated.fnames[0]
    labels = ", ".join(data.vocab[j] for j in np.flatnonzero(data.curated.targets[0]))
    assert list(waves)[0] == f"{first}: {labels}" and len(waves) == 2
    rows = listen_rows(waves, tiny_mel, max_seconds=1.5)
    expected = clip_wave(data.curated.paths()[0], tiny_mel)[: int(1.5 * tiny_mel.sample_rate)]
    samples, rate = _decoded(rows[0]["audio"])
    assert rate == tiny_mel.sample_rate == 44100
    assert len(samples) == len(expected) and np.abs(samples - expected).max() <= 2 / 32767  # 16-bit WAV, not rescaled
    wave_ax, ax = rows[0]["figure"].axes[:2]  # the waveform and spectrogram of the very samples played
    assert ax.get_xlabel() == "Time (s)" and ax.get_ylabel() == "Frequency (Hz)"
    assert ax.get_xlim()[1] == pytest.approx(1.5, abs=2 * tiny_mel.hop_length / tiny_mel.sample_rate)
    np.testing.assert_array_equal(wave_ax.lines[0].get_ydata(), expected)
    assert wave_ax.get_xlim()[1] == pytest.approx(1.5, abs=1e-3)
    assert [a.get_ylabel() for a in rows[0]["figure"].axes].count("dB") == 1  # its colour bar
    html = listen_examples(data, tiny_mel, n=2, max_seconds=1.5).data
    assert html.count("<audio") == 2 and html.count("data:image/png;base64,") == 2 and first in html


def test_waveform_effects_heard_before_and_after(tiny_dataset, tiny_mel):
    from fatlib.dataset import FatData
    from fatlib.errors import DataError
    from fatlib.features import clip_wave
    from fatlib.report import audio_player, effect_waves, listen_wave_effects
    from fatlib.wave_augment import EFFECTS

    data = FatData.from_dir(tiny_dataset)
    path = data.curated.paths()[1]
    waves = effect_waves(path, tiny_mel, seed=3, max_seconds=1.0)
    assert list(waves) == ["original", *EFFECTS]
    original = clip_wave(path, tiny_mel)[: tiny_mel.sample_rate]
    np.testing.assert_array_equal(waves["original"], original)
    for i, (name, fn) in enumerate(EFFECTS.items()):  # each effect as WaveAugment applies it, its own draw
        expected = fn(original, sample_rate=tiny_mel.sample_rate, rng=np.random.default_rng([3, i]))
        np.testing.assert_allclose(waves[name], expected, atol=1e-6)
        assert not np.allclose(waves[name][: len(original)], original[: len(waves[name])]) or name == "speed"
    loud = waves["original"] * 4  # beyond [-1, 1]: the player rescales instead of failing
    samples, rate = _decoded(audio_player(loud, sample_rate=22050))
    assert rate == 22050 and np.abs(samples).max() == pytest.approx(1.0, abs=1e-3)
    samples, _ = _decoded(audio_player(waves["overdrive"], sample_rate=tiny_mel.sample_rate))
    np.testing.assert_allclose(samples, waves["overdrive"], atol=2 / 32767)  # its own loudness (16-bit WAV)
    html = listen_wave_effects(path, tiny_mel, seed=3, max_seconds=1.0).data
    assert html.count("<audio") == 1 + len(EFFECTS) and Path(path).name in html  # says which clip it plays
    assert re.search(r">pitch_shift: [+-]\d+ cents<", html) and re.search(r">speed x\d\.\d{3}<", html)
    assert re.search(r">reverb: RT60 \d\.\d\d s, wet \d\.\d\d<", html) and ">overdrive: gain " in html
    with pytest.raises(DataError, match="unknown effects"):
        effect_waves(path, tiny_mel, effects=["chorus"])
    with pytest.raises(DataError, match="finite mono"):
        audio_player(np.array([0.0, np.nan]), sample_rate=44100)


@pytest.fixture(scope="module")
def tiny_stage(tiny_dataset, tmp_path_factory):
    """A finished 2-fold, 1-epoch curated stage of a tiny model (as tests/test_train.py trains one)."""
    from fatlib.dataset import FatData
    from fatlib.train import StageConfig, train_stage

    data = FatData.from_dir(tiny_dataset)
    root = tmp_path_factory.mktemp("errors")
    cfg = StageConfig(name="stage2", train_on="curated", model="cnn_model_1", model_kwargs={"width_mult": 0.125},
                      preset="cnn128", mel=dict(n_mels=32, n_fft=2048, hop_length=1024, crop_frames=32), epochs=1,
                      n_folds=2, batch_size=24, augment=[], tta_step_frames=32, cache_jobs=1, auto_scale=False,
                      n_workers=0)
    res = train_stage(cfg, data, run_dir=root / "run", cache_dir=root / "cache", progress=False)
    return data, res.stage_dir


def test_mistakes_of_a_trained_stage(tiny_stage):
    """Per-class OOF lwlrap (worst first), the worst clips of a class with their true and top-3 labels, the
    most confused pairs, and the error explorer driven headless (another class: other clips and sounds)."""
    pytest.importorskip("ipywidgets")
    from fatlib.metrics import lwlrap, per_class_lwlrap
    from fatlib.mistakes import class_table, confused_pairs, read_oof, worst_clips
    from fatlib.report import explore_errors

    data, stage_dir = tiny_stage
    scores, truth = read_oof(stage_dir, data), data.curated.targets
    table = class_table(truth, scores, data.vocab)
    values, weights = per_class_lwlrap(truth, scores)
    assert list(table["lwlrap"]) == sorted(table["lwlrap"])  # worst first
    assert table.loc[data.vocab[0], "lwlrap"] == pytest.approx(values[0], abs=1e-4)
    assert np.nansum(table["lwlrap"] * table["label_share"]) == pytest.approx(lwlrap(truth, scores), abs=1e-3)
    label = table.index[0]
    worst = worst_clips(truth, scores, data.vocab, label, n=3, fnames=data.curated.fnames)
    c = data.vocab.index(label)
    ranks = [(scores[i] > scores[i, c]).sum() + 1 for i in np.flatnonzero(truth[:, c])]
    assert len(worst) == 3 and worst["rank"].tolist() == sorted(ranks, reverse=True)[:3]
    for r in worst.itertuples():
        assert label in r.true_labels.split(", ") and data.curated.fnames[r.row] == r.fname
        top = [t.rsplit(" ", 1)[0] for t in r.top3_predicted.split(", ")]
        assert top == [data.vocab[j] for j in np.argsort(-scores[r.row], kind="stable")[:3]]
    pairs = confused_pairs(truth, scores, data.vocab, n=5)
    wrong = int((~(truth[np.arange(len(truth)), scores.argmax(1)] > 0)).sum())
    assert (pairs["clips"].diff().dropna() <= 0).all() and (wrong == 0) == pairs.empty
    assert all(t != p for t, p in zip(pairs["true"], pairs["predicted_instead"]))

    ex = explore_errors(stage_dir, data, n=2)
    assert ex.label.value == label and ex.html.count("<audio") == 2 and ex.html.count("data:image/png") == 2
    assert worst.loc[0, "fname"] in ex.html and "top-3 predicted" in ex.html
    html, other = ex.html, table.index[1]
    ex.label.value = other
    assert ex.html != html and f"<b>{other}</b>" in ex.html and set(ex.clips["fname"]) <= set(data.curated.fnames)
    ex.n.value = 3
    assert ex.html.count("<audio") == 3
