"""Plots: PNG files written atomically, axes in seconds/Hz, grids, curves and bars with real content."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fatlib.errors import DataError
from fatlib.plots import (
    plot_augmentations,
    plot_per_class,
    plot_spectrogram,
    plot_training_curve,
    save_figure,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000
    assert not list(path.parent.glob(".*.tmp"))             # no temporary left behind


def test_spectrogram_axes_in_seconds_and_hz(tmp_path, tiny_mel):
    frames = 40
    spec = np.random.default_rng(0).normal(-40, 10, (tiny_mel.n_mels, frames)).astype(np.float32)
    fig = plot_spectrogram(spec, tiny_mel, title="clip")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Time (s)" and ax.get_ylabel() == "Frequency (Hz)" and ax.get_title() == "clip"
    assert ax.get_xlim()[1] == pytest.approx(frames * tiny_mel.hop_length / tiny_mel.sample_rate, rel=0.02)
    assert ax.get_yscale() == "symlog"                     # librosa mel axis: Hz values, mel-like spacing
    assert tiny_mel.fmax <= ax.get_ylim()[1] <= 1.15 * tiny_mel.fmax      # top mel band reaches fmax
    _assert_png(save_figure(fig, tmp_path / "spec.png"))
    with pytest.raises(DataError, match="n_mels"):
        plot_spectrogram(spec[:5], tiny_mel)


def test_augmentation_grid_shows_each_augmentation_with_targets_units_and_a_colour_bar(tmp_path, tiny_mel):
    g = torch.Generator().manual_seed(0)
    frames = 40
    x = torch.randn(6, 3, tiny_mel.n_mels, frames, generator=g)
    y = torch.eye(6)[:, :4].clone()
    y[4, 0] = y[5, 1] = 1.0
    vocab = ["Bark", "Accelerating_and_revving_and_vroom", "Drip", "Hiss"]  # a long name is shown whole
    fig = plot_augmentations(x, y, ["specmix", "specaugment"], vocab, n=3, cfg=tiny_mel)
    assert len(fig.axes) == 3 * 3 + 1                        # the panels and one colour bar
    panels, bar = fig.axes[:9], fig.axes[9]
    assert [panels[r * 3].get_ylabel() for r in range(3)] == [
        "original\nfrequency (Hz)", "SpecMix\nfrequency (Hz)", "SpecAugment\nfrequency (Hz)"]  # readable names
    assert [panels[6 + c].get_xlabel() for c in range(3)] == ["time (s)"] * 3
    assert panels[0].get_title() == "Bark 1.00"
    assert all(panels[i].get_title() for i in range(9))
    assert panels[1].get_title() == "Accelerating_and_revving_and_vroom 1.00"
    for ax in panels:                                       # every panel: seconds across, Hz (mel-spaced) up
        assert ax.get_xlim()[1] == pytest.approx(frames * tiny_mel.hop_length / tiny_mel.sample_rate, rel=0.02)
        assert ax.get_yscale() == "symlog" and tiny_mel.fmax <= ax.get_ylim()[1] <= 1.15 * tiny_mel.fmax
    fig.canvas.draw()
    lo, hi = panels[6].get_xlim()
    shown = [(t.get_position()[0], t.get_text()) for t in panels[6].get_xticklabels() if lo <= t.get_position()[0] <= hi]
    assert len(shown) >= 3 and all(float(text) == pytest.approx(pos) for pos, text in shown)  # labels: seconds
    assert bar.get_ylabel() == "standardised log-mel: per-clip z-score of dB (no unit)"
    assert bar.get_ylim() == pytest.approx((float(x[:3, 0].min()), float(x[:3, 0].max())))  # one scale for all
    _assert_png(save_figure(fig, tmp_path / "aug.png"))

    plain = plot_augmentations(x, y, ["mixup"], vocab, n=2)   # no MelConfig: frames and mel bins, still a colour bar
    assert plain.axes[0].get_ylabel() == "original\nmel bin" and plain.axes[3].get_xlabel() == "time (frames)"
    assert "z-score" in plain.axes[-1].get_ylabel()
    raw = plot_augmentations(x, y, [], vocab, n=1, cfg=tiny_mel.replace(normalize="none"))
    assert raw.axes[-1].get_ylabel() == "log-mel (dB)"
    with pytest.raises(DataError, match="vocab has 3"):
        plot_augmentations(x, y, ["mixup"], vocab[:3])
    with pytest.raises(DataError, match="n_mels"):
        plot_augmentations(x[:, :, :8], y, ["mixup"], vocab, cfg=tiny_mel)


def test_training_curve_overlays_folds_from_train_history_format(tmp_path):
    folds = [{"batch_loss": [0.9, 0.8], "epochs": [
        {"train_loss": 0.7 - 0.1 * e - 0.01 * k, "valid_loss": 0.6 - 0.05 * e, "lwlrap": 0.3 + 0.1 * e}
        for e in range(3)]} for k in range(2)]
    fig = plot_training_curve(folds, title="stage1")
    loss_ax, metric_ax = fig.axes
    assert loss_ax.get_ylabel() == "loss" and metric_ax.get_ylabel() == "lwlrap"
    assert len(loss_ax.lines) == 4 and len(metric_ax.lines) == 2
    assert list(metric_ax.lines[1].get_ydata()) == pytest.approx([0.3, 0.4, 0.5])
    assert [line.get_label() for line in metric_ax.lines] == ["fold 1 lwlrap", "fold 2 lwlrap"]  # from 1, as the log
    fig.canvas.draw()
    for ax in (loss_ax, metric_ax):  # whole epochs only: 1, 2, 3 (no 1.2, 1.4, ...)
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks == [1, 2, 3]
    _assert_png(save_figure(fig, tmp_path / "curve.png"))


def test_training_curve_accepts_dataframe_with_fold_column_and_single_axes():
    df = pd.DataFrame({"fold": [0, 0, 1, 1], "train_loss": [1, 0.5, 1, 0.4], "valid_loss": [1, 0.6, 1, 0.7]})
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    assert plot_training_curve(df, ax=ax) is fig
    assert len(ax.lines) == 4
    with pytest.raises(DataError, match="cannot read"):
        plot_training_curve("history.csv")


def test_per_class_bars_sorted_best_first_with_nan_last(tmp_path):
    values = np.array([0.5, np.nan, 0.9, 0.1])
    names = ["a", "b", "c", "d"]
    fig = plot_per_class(values, names, weights=np.array([0.25, 0.0, 0.5, 0.25]))
    ax = fig.axes[0]
    height = {t.get_text(): t.get_position()[1] for t in ax.get_yticklabels()}
    top_to_bottom = sorted(height, key=height.get, reverse=True)
    assert top_to_bottom == ["c", "a", "d", "b"]
    assert ax.get_xlabel().startswith("lwlrap\n") and "share of all labels" in ax.get_xlabel()  # the % explained
    assert any(t.get_text().strip() == "n/a" for t in ax.texts)
    assert any(t.get_text().strip() == "50.0%" for t in ax.texts)
    _assert_png(save_figure(fig, tmp_path / "per_class.png"))
    with pytest.raises(DataError, match="one value per class"):
        plot_per_class(values, names[:3])
