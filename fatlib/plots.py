"""Figures: log-mel spectrograms, augmentation grids, training curves, per-class bars.

Every function builds a :class:`matplotlib.figure.Figure` directly (no pyplot state, so it works under
the Agg backend, in threads and in notebooks, where a returned Figure displays inline) and returns it;
where a single panel makes sense it takes ``ax=None`` to draw into an existing Axes instead.
:func:`save_figure` writes a PNG atomically.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from fatlib.atomic import atomic_path
from fatlib.errors import DataError

__all__ = ["input_units", "plot_augmentations", "plot_per_class", "plot_spectrogram", "plot_training_curve", "save_figure"]


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically (a reader never sees a partial file)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)


def _new_axes(ax, *, figsize) -> tuple[Figure, object]:
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


# ------------------------------------------------------------------------------------- spectrogram
def _centred(values) -> dict:
    """A diverging colour map with limits symmetric about 0 (blue below, red above)."""
    limit = float(np.nanmax(np.abs(values))) or 1.0
    return {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}


def plot_spectrogram(spec, cfg, ax=None, title: str | None = None, *, units: str = "dB",
                     diverging: bool = False) -> Figure:
    """One log-mel ``(n_mels, frames)`` (or ``(channels, n_mels, frames)``: channel 0) with time in
    seconds (``frames * hop_length / sample_rate``) and mel-spaced frequency ticks in Hz, from ``cfg``
    (a ``fatlib.features.MelConfig``: sample_rate, hop_length, fmin, fmax, n_mels). ``units`` labels
    the colour bar ("dB" for raw log-mels; pass e.g. "std" for normalised input). ``diverging``: a
    difference, drawn in a diverging colour map centred on 0 (symmetric limits)."""
    import librosa.display

    spec = np.asarray(spec.detach().cpu() if hasattr(spec, "detach") else spec, dtype=np.float32)
    if spec.ndim == 3:
        spec = spec[0]
    if spec.ndim != 2 or spec.shape[0] != cfg.n_mels:
        raise DataError(f"plot_spectrogram: spec of shape {spec.shape} is not (n_mels={cfg.n_mels}, frames); "
                        "pass one clip's log-mel made with the same MelConfig")
    fig, ax = _new_axes(ax, figsize=(8, 3))
    img = librosa.display.specshow(spec, sr=cfg.sample_rate, hop_length=cfg.hop_length, x_axis="s",
                                   y_axis="mel", fmin=cfg.fmin, fmax=cfg.fmax, ax=ax,
                                   **(_centred(spec) if diverging else {"cmap": "magma"}))
    ax.set_xlabel("Time (s)")
    ax.set_ylabel("Frequency (Hz)")
    fig.colorbar(img, ax=ax, label=units)
    if title:
        ax.set_title(title)
    return fig


# ----------------------------------------------------------------------------------- augmentations
def _target_text(row: np.ndarray, vocab: Sequence[str], *, top: int = 3) -> str:
    order = [i for i in np.argsort(-row, kind="stable")[:top] if row[i] > 0]
    return "\n".join(f"{vocab[i]} {row[i]:.2f}" for i in order) or "(no label)"


def input_units(cfg=None) -> str:
    """What the values of a model-input spectrogram mean, from ``cfg.normalize`` (colour-bar label)."""
    kind = getattr(cfg, "normalize", None)
    if kind == "none":
        return "log-mel (dB)"
    if kind == "global":
        return "standardised log-mel: (dB - global mean) / global std"
    return "standardised log-mel: per-clip z-score of dB (no unit)"


def plot_augmentations(x, y, augments, vocab: Sequence[str], n: int = 4, *, cfg=None, seed: int = 0) -> Figure:
    """Grid: the first ``n`` clips of a batch ``x`` (B, C, M, T), ``y`` (B, n_classes) before (top row)
    and after each augmentation (one row each; the whole batch is augmented, so partners may be clips
    not shown), with each clip's resulting targets (full class names) written above it. ``augments``: names
    for ``fatlib.augment.get_augment`` (made with ``seed``; rows titled in words, ``explore.short_title``),
    callbacks, or a dict title -> name/callback.

    With ``cfg`` (the batch's MelConfig) the axes are time in seconds and mel-spaced frequency in Hz;
    without, frames and mel bins. One colour bar for the whole grid (same scale in every panel), in the
    batch's units: standardised log-mel for training input (:func:`input_units` of ``cfg``)."""
    import librosa.display
    import torch

    from fatlib.augment import apply_augment, check_batch, get_augment

    x, y = torch.as_tensor(x), torch.as_tensor(y)
    check_batch(x, y, where="plot_augmentations")
    if y.shape[1] != len(vocab):
        raise DataError(f"plot_augmentations: y has {y.shape[1]} classes but vocab has {len(vocab)}; "
                        "pass the vocabulary the targets were made with")
    if not 1 <= n <= x.shape[0]:
        raise DataError(f"plot_augmentations: n={n} must be between 1 and the batch size {x.shape[0]}")
    if cfg is not None and x.shape[2] != cfg.n_mels:
        raise DataError(f"plot_augmentations: x has {x.shape[2]} mel bands, cfg.n_mels={cfg.n_mels}; pass the "
                        "MelConfig the batch was made with (or cfg=None for frames and mel bins)")
    from fatlib.explore import short_title

    items = augments.items() if isinstance(augments, dict) else [
        (short_title(a) if isinstance(a, str) else type(a).__name__, a) for a in augments]
    rows = [("original", x, y)]
    for title, aug in items:
        cb = get_augment(aug, seed=seed) if isinstance(aug, str) else aug
        rows.append((title, *apply_augment(cb, x, y, training=True)))
    fig = Figure(figsize=(2.6 * n + 1.2, 2.4 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), n, squeeze=False, sharex=True, sharey=True)
    lo, hi = float(x[:n, 0].min()), float(x[:n, 0].max())
    where = (dict(sr=cfg.sample_rate, hop_length=cfg.hop_length, x_axis="s", y_axis="mel", fmin=cfg.fmin,
                  fmax=cfg.fmax) if cfg is not None else {})
    for r, (title, xs, ys) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            img = librosa.display.specshow(xs[c, 0].float().cpu().numpy(), ax=ax, cmap="magma", vmin=lo, vmax=hi,
                                           **where)
            ax.set_title(_target_text(ys[c].float().cpu().numpy(), vocab), fontsize=7)
            ax.set_xlabel("time (s)" if cfg is not None and r == len(rows) - 1 else
                          ("time (frames)" if r == len(rows) - 1 else ""))
            ax.set_ylabel(f"{title}\n" + ("frequency (Hz)" if cfg is not None else "mel bin") if c == 0 else "")
            ax.tick_params(labelsize=6)
            if cfg is None:
                ax.set_xticks(np.linspace(0, xs.shape[-1], 3))
                ax.set_yticks(np.linspace(0, xs.shape[-2], 3))
    fig.colorbar(img, ax=axes, label=input_units(cfg), shrink=0.6)
    return fig


# --------------------------------------------------------------------------------- training curves
def _history_frames(history) -> list:
    """Normalise a training history to one DataFrame per fold (columns train_loss, valid_loss, lwlrap).

    Accepts a DataFrame (optional ``fold`` column), a fastai-recorder dict ``{"epochs": [{...}, ...]}``
    as fatlib.train writes it, a dict of per-epoch lists, a dict int fold -> history, or a list of histories.
    """
    import pandas as pd

    if isinstance(history, pd.DataFrame):
        if "fold" in history.columns:
            return [g.drop(columns="fold").reset_index(drop=True) for _, g in history.groupby("fold", sort=True)]
        return [history.reset_index(drop=True)]
    if isinstance(history, (list, tuple)):
        return [f for h in history for f in _history_frames(h)]
    if isinstance(history, dict):
        if "epochs" in history:
            return [pd.DataFrame(history["epochs"])]
        if history and all(isinstance(k, (int, np.integer)) for k in history):     # fold id -> history
            return [f for _, h in sorted(history.items()) for f in _history_frames(h)]
        return [pd.DataFrame(history)]
    raise DataError(f"plot_training_curve: cannot read a history of type {type(history).__name__}; pass a "
                    "DataFrame, a dict of per-epoch lists, {'epochs': [...]}, or a list of those (one per fold)")


def plot_training_curve(history, ax=None, *, title: str | None = None) -> Figure:
    """Train/valid loss and lwlrap per epoch (epochs and folds numbered from 1, integer epoch ticks);
    several folds overlaid (one colour per fold).

    ``ax``: None (new figure with a loss panel and an lwlrap panel), one Axes (loss there, lwlrap on a
    twin right axis) or a pair of Axes (loss, lwlrap).
    """
    frames = _history_frames(history)
    if not frames or all(len(f) == 0 for f in frames):
        raise DataError("plot_training_curve: the history has no epochs; train at least one epoch first")
    if ax is None:
        fig = Figure(figsize=(10, 3.5), layout="constrained")
        loss_ax, metric_ax = fig.subplots(1, 2)
    elif isinstance(ax, (list, tuple, np.ndarray)):
        loss_ax, metric_ax = ax
        fig = loss_ax.figure
    else:
        loss_ax, metric_ax, fig = ax, ax.twinx(), ax.figure
    colors = [f"C{k % 10}" for k in range(len(frames))]
    for k, (df, color) in enumerate(zip(frames, colors)):
        epochs = np.arange(1, len(df) + 1)
        for col, style in (("train_loss", "-"), ("valid_loss", "--")):
            if col in df:
                loss_ax.plot(epochs, df[col].astype(float), style, color=color,
                             label=f"fold {k + 1} {col.split('_')[0]}")
        if "lwlrap" in df:
            metric_ax.plot(epochs, df["lwlrap"].astype(float), ":o", color=color, ms=3, label=f"fold {k + 1} lwlrap")
    from matplotlib.ticker import MaxNLocator

    for a in (loss_ax, metric_ax):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    metric_ax.set_xlabel("epoch")
    metric_ax.set_ylabel("lwlrap")
    loss_ax.legend(fontsize=7, ncol=2)
    if metric_ax.lines:
        metric_ax.legend(fontsize=7, loc="lower right")
    if title:
        (fig.suptitle if ax is None else loss_ax.set_title)(title)
    return fig


# ------------------------------------------------------------------------------------- per class
def plot_per_class(values, names: Sequence[str], weights=None, ax=None, *, xlabel: str = "lwlrap") -> Figure:
    """Horizontal bars of a per-class value, best at the top (NaN, e.g. classes without labels, last);
    ``weights`` (e.g. each class's share of positive labels) are written beside the bars in %."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or len(values) != len(names):
        raise DataError(f"plot_per_class: {values.shape} values for {len(names)} names; pass one value per class")
    if weights is not None:
        weights = np.asarray(weights, dtype=float)
        if weights.shape != values.shape:
            raise DataError(f"plot_per_class: weights {weights.shape} do not match values {values.shape}")
    order = np.argsort(np.where(np.isnan(values), np.inf, -values), kind="stable")
    fig, ax = _new_axes(ax, figsize=(6, 0.5 + 0.2 * len(values)))
    pos = np.arange(len(values))[::-1]                      # first in order at the top
    ax.barh(pos, np.nan_to_num(values[order]), color="C0")
    ax.set_yticks(pos, [names[i] for i in order], fontsize=7)
    ax.set_ylim(-0.6, len(values) - 0.4)
    ax.set_xlabel(xlabel + ("\n(beside each bar: the class's share of all labels, its weight in the overall lwlrap)"
                            if weights is not None else ""))
    for p, i in zip(pos, order):
        note = "n/a" if np.isnan(values[i]) else (f"{100 * weights[i]:.1f}%" if weights is not None else "")
        if note:
            ax.text(np.nan_to_num(values[i]), p, f" {note}", va="center", fontsize=6)
    return fig
