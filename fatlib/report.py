"""Tables and figures the notebooks show: the data set, a stage's results, a selection, a training batch.

Each function reads what the pipeline wrote (``weights/<run>/<stage>/``, see ``weights/README.md``) or
a ``FatData``, so a notebook cell is one call; figures are ``matplotlib.figure.Figure`` objects (shown
inline in a notebook), built on :mod:`fatlib.plots` where it already draws the picture.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .errors import DataError


# ----------------------------------------------------------------------------------------- data set
def dataset_overview(data) -> pd.DataFrame:
    """One row per split: clips, labelled clips, multi-label share (labelled clips with >= 2 labels),
    mean labels per labelled clip. Test labels count when the data set has them."""
    rows = []
    for name, targets in (("curated", data.curated.targets), ("noisy", data.noisy.targets),
                          ("test", data.test_targets)):
        n = len(data.split(name).fnames)
        if targets is None or len(targets) == 0:
            rows.append({"split": name, "clips": n, "labelled": 0, "multi_label_share": np.nan,
                         "labels_per_clip": np.nan})
            continue
        per_clip = np.asarray(targets).sum(axis=1)
        labelled = per_clip > 0
        rows.append({"split": name, "clips": n, "labelled": int(labelled.sum()),
                     "multi_label_share": float((per_clip[labelled] >= 2).mean()) if labelled.any() else np.nan,
                     "labels_per_clip": float(per_clip[labelled].mean()) if labelled.any() else np.nan})
    return pd.DataFrame(rows).set_index("split")


def class_counts(data) -> pd.DataFrame:
    """Clips per class (index: vocabulary order) in the curated and noisy splits."""
    return pd.DataFrame({"curated": np.asarray(data.curated.targets).sum(axis=0).astype(int),
                         "noisy": np.asarray(data.noisy.targets).sum(axis=0).astype(int)}, index=list(data.vocab))


def _bars(ax, counts: pd.DataFrame) -> None:
    pos = np.arange(len(counts))[::-1]
    height = 0.8 / len(counts.columns)
    for j, col in enumerate(counts.columns):
        ax.barh(pos - j * height, counts[col].to_numpy(), height=height, label=col)
    ax.set_yticks(pos - height * (len(counts.columns) - 1) / 2, list(counts.index), fontsize=7)
    ax.set_xlabel("clips")
    ax.legend(fontsize=8)


def plot_class_counts(data) -> Figure:
    """Horizontal bars of :func:`class_counts` (curated and noisy side by side)."""
    counts = class_counts(data)
    fig = Figure(figsize=(7, 0.6 + 0.22 * len(counts)), layout="constrained")
    _bars(fig.add_subplot(), counts)
    return fig


def training_batch(cache, targets, cfg, *, batch_size: int = 16, seed: int = 0):
    """One training batch as a stage sees it: random ``cfg.crop_frames`` crops of random cache rows,
    normalised (``fatlib.datasets.CropDataset``). Returns (x (B, channels, n_mels, crop), y (B, n_classes))."""
    import torch

    from .datasets import CropDataset

    targets = np.asarray(targets, dtype=np.float32)
    if len(targets) != len(cache):
        raise DataError(f"training_batch: {len(targets)} target rows for a cache of {len(cache)} clips; "
                        "pass the targets of the split the cache was built from")
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(cache), size=min(batch_size, len(cache)), replace=False)
    np.random.seed(seed)  # CropDataset draws its crop offsets from numpy's global generator
    ds = CropDataset(cache, rows, targets[rows], cfg=cfg, train=True)
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack([torch.as_tensor(x) for x in xs]), torch.stack([torch.as_tensor(y) for y in ys])


def compare_log_mel(path, cfg) -> dict:
    """A clip's log-mel from librosa (``features.log_mel``) and from torch (``features.LogMel``), same
    waveform (``features.clip_wave``); returns both (n_mels, frames) dB and their max |difference| in dB."""
    import torch

    from .features import LogMel, clip_wave, log_mel

    y = clip_wave(path, cfg)
    ref = log_mel(y, cfg)
    with torch.no_grad():
        mine = LogMel(cfg)(torch.from_numpy(y)[None])[0].numpy()
    frames = min(ref.shape[1], mine.shape[1])
    return {"librosa": ref, "torch": mine,
            "max_abs_diff_db": float(np.abs(ref[:, :frames] - mine[:, :frames]).max())}


def plot_examples(data, cache, cfg, *, n: int = 3, split: str = "curated") -> Figure:
    """The first ``n`` clips of ``split`` as log-mel spectrograms (from its FeatureCache), titled with their labels."""
    from .plots import plot_spectrogram

    part = data.split(split)
    if len(cache) != len(part.fnames):
        raise DataError(f"plot_examples: the cache has {len(cache)} clips, the {split} split {len(part.fnames)}; "
                        f"pass the cache built from data.{split}")
    n = min(n, len(cache))
    fig = Figure(figsize=(9, 2.8 * n), layout="constrained")
    for i, ax in enumerate(fig.subplots(n, 1, squeeze=False)[:, 0]):
        labels = ", ".join(data.vocab[j] for j in np.flatnonzero(part.targets[i])) if part.targets is not None else "?"
        plot_spectrogram(np.asarray(cache[i], dtype=np.float32), cfg, ax=ax, title=f"{part.fnames[i]}: {labels}")
    return fig


def plot_log_mel_comparison(comparison: dict, cfg) -> Figure:
    """librosa and torch log-mels of :func:`compare_log_mel` and their difference, one panel each."""
    from .plots import plot_spectrogram

    ref, mine = comparison["librosa"], comparison["torch"]
    frames = min(ref.shape[1], mine.shape[1])
    fig = Figure(figsize=(9, 8), layout="constrained")
    axes = fig.subplots(3, 1)
    plot_spectrogram(ref, cfg, ax=axes[0], title="librosa (features.log_mel)")
    plot_spectrogram(mine, cfg, ax=axes[1], title="torch (features.LogMel)")
    plot_spectrogram(mine[:, :frames] - ref[:, :frames], cfg, ax=axes[2], units="dB difference",
                     title=f"torch - librosa (max |difference| {comparison['max_abs_diff_db']:.4f} dB)")
    return fig


# ----------------------------------------------------------------------------------------- listening
def audio_player(y, *, sample_rate: int):
    """An ``IPython.display.Audio`` player of a mono float waveform at ``sample_rate`` Hz, at its own
    loudness: scaled to full range only when it goes beyond [-1, 1], which a WAV file cannot hold."""
    from IPython.display import Audio

    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1 or y.size == 0 or not np.isfinite(y).all():
        raise DataError(f"audio_player: expected a non-empty finite mono waveform, got shape {y.shape}; "
                        "load clips with fatlib.features.clip_wave")
    return Audio(y, rate=int(sample_rate), normalize=bool(np.abs(y).max() > 1.0))


def listen_rows(waves: dict, cfg, *, max_seconds: float | None = 8.0) -> list[dict]:
    """For each title -> mono waveform (``cfg.sample_rate`` Hz, at most ``max_seconds`` of it): the
    waveform, its :func:`audio_player` and the log-mel figure of those same samples (``features.log_mel``,
    dB, seconds and Hz axes), so what is heard is what is shown."""
    from .features import log_mel
    from .plots import plot_spectrogram

    rows = []
    for title, y in waves.items():
        y = np.asarray(y, dtype=np.float32)
        if max_seconds is not None:
            y = y[: int(round(max_seconds * cfg.sample_rate))]
        fig = Figure(figsize=(6, 2.2), layout="constrained")
        plot_spectrogram(log_mel(y, cfg), cfg, ax=fig.add_subplot())
        rows.append({"title": str(title), "wave": y, "audio": audio_player(y, sample_rate=cfg.sample_rate),
                     "figure": fig})
    return rows


def listen_table(rows: list[dict]):
    """An ``IPython.display.HTML`` table: each row's title, its audio player beside its spectrogram."""
    import base64
    import html
    import io

    from IPython.display import HTML

    cells = []
    for row in rows:
        png = io.BytesIO()
        row["figure"].savefig(png, format="png", dpi=80)
        image = base64.b64encode(png.getvalue()).decode("ascii")
        cells.append(f"<tr><td style='text-align:left'>{html.escape(row['title'])}</td>"
                     f"<td>{row['audio']._repr_html_()}</td><td><img src='data:image/png;base64,{image}'/></td></tr>")
    return HTML("<table><tr><th>clip</th><th>listen</th><th>log-mel (dB)</th></tr>" + "".join(cells) + "</table>")


def example_waves(data, cfg, *, n: int = 3, split: str = "curated") -> dict:
    """The first ``n`` clips of ``split`` as the model sees them (``features.clip_wave``: trimmed, padded),
    keyed "fname: labels"."""
    from .features import clip_wave

    part = data.split(split)
    waves = {}
    for i in range(min(n, len(part.fnames))):
        labels = ", ".join(data.vocab[j] for j in np.flatnonzero(part.targets[i])) if part.targets is not None else "?"
        waves[f"{part.fnames[i]}: {labels}"] = clip_wave(part.paths()[i], cfg)
    return waves


def effect_waves(path, cfg, *, effects=None, seed: int = 0, max_seconds: float | None = 5.0) -> dict:
    """One clip (``features.clip_wave``, its first ``max_seconds``) before and after each waveform
    effect of :mod:`fatlib.wave_augment` (``effects``: names, default all), each drawn from
    ``numpy.random.default_rng(seed)``: {"original": y, "pitch_shift": ..., ...}."""
    from .features import clip_wave
    from .wave_augment import EFFECTS

    names = list(EFFECTS) if effects is None else list(effects)
    unknown = sorted(set(names) - set(EFFECTS))
    if unknown:
        raise DataError(f"effect_waves: unknown effects {unknown}; choose from {sorted(EFFECTS)}")
    y = clip_wave(path, cfg)
    if max_seconds is not None:
        y = y[: int(round(max_seconds * cfg.sample_rate))]
    out = {"original": y}
    for name in names:
        out[name] = EFFECTS[name](y, sample_rate=cfg.sample_rate, rng=np.random.default_rng(seed)).astype(np.float32)
    return out


def listen_examples(data, cfg, *, n: int = 3, split: str = "curated", max_seconds: float | None = 8.0):
    """HTML: the first ``n`` clips of ``split``, each playable beside its log-mel."""
    return listen_table(listen_rows(example_waves(data, cfg, n=n, split=split), cfg, max_seconds=max_seconds))


def listen_wave_effects(path, cfg, *, seed: int = 0, max_seconds: float | None = 5.0):
    """HTML: one clip before and after each waveform effect (pitch shift, speed, reverb, overdrive),
    each playable beside its log-mel."""
    return listen_table(listen_rows(effect_waves(path, cfg, seed=seed, max_seconds=max_seconds), cfg,
                                    max_seconds=None))


# --------------------------------------------------------------------------------------------- stages
def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: not found; train that stage to completion first (fatlib.pipeline.warmup_stage).")
    return json.loads(path.read_text())


def stage_table(stage_dir) -> pd.DataFrame:
    """CV lwlrap of a finished stage: one row per fold (curated = its validation fold, noisy = its
    out-of-fold noisy clips) and an "all (OOF)" row over all out-of-fold predictions."""
    m = _read_json(Path(stage_dir) / "metrics.json")
    rows = [{"fold": str(k), "lwlrap_curated": c, "lwlrap_noisy": n}
            for k, (c, n) in enumerate(zip(m["fold_lwlrap_curated"], m["fold_lwlrap_noisy"]))]
    rows.append({"fold": "all (OOF)", "lwlrap_curated": m["cv_lwlrap_curated"], "lwlrap_noisy": m["cv_lwlrap_noisy"]})
    return pd.DataFrame(rows).set_index("fold")


def stage_histories(stage_dir) -> list:
    """Per-fold training histories of a stage (``fold{k}.json``), for ``plots.plot_training_curve``."""
    stage_dir = Path(stage_dir)
    n_folds = len(_read_json(stage_dir / "metrics.json")["fold_lwlrap_curated"])
    return [_read_json(stage_dir / f"fold{k}.json")["history"] for k in range(n_folds)]


def plot_stage(stage_dir) -> Figure:
    """Training curves of every fold of a stage (loss and lwlrap per epoch)."""
    from .plots import plot_training_curve

    return plot_training_curve(stage_histories(stage_dir), title=Path(stage_dir).name)


def plot_stage_per_class(stage_dir) -> Figure:
    """Per-class out-of-fold lwlrap on curated of a stage, with each class's share of the labels."""
    from .plots import plot_per_class

    m = _read_json(Path(stage_dir) / "metrics.json")
    names = list(m["per_class_lwlrap_curated"])
    values = [np.nan if v is None else v for v in m["per_class_lwlrap_curated"].values()]
    weights = [m["class_weight_curated"][c] for c in names]
    return plot_per_class(values, names, weights=weights,
                          xlabel=f"{Path(stage_dir).name} lwlrap (overall {m['cv_lwlrap_curated']:.4f})")


def read_selected(stage_dir) -> pd.DataFrame:
    """A stage's ``selected.csv`` (fname, labels, score, fold)."""
    path = Path(stage_dir) / "selected.csv"
    if not path.is_file():
        raise DataError(f"{path}: not found; only stage3 and stage4 select (run their warmup_stage first).")
    return pd.read_csv(path, keep_default_na=False)


def selection_counts(stage_dir, vocab: Sequence[str]) -> pd.DataFrame:
    """Selected noisy clips per class (vocabulary order) and per fold."""
    sel = read_selected(stage_dir)
    labels = sel.assign(label=sel["labels"].astype(str).str.split(",")).explode("label")
    labels = labels[labels["label"] != ""]
    table = pd.crosstab(labels["label"], labels["fold"]) if len(labels) else pd.DataFrame()
    table = table.reindex(index=list(vocab), fill_value=0)
    table.columns = [f"fold {c}" for c in table.columns]
    table["total"] = table.sum(axis=1)
    return table


def plot_selection(stage_dir, vocab: Sequence[str]) -> Figure:
    """Selected clips per class and the histogram of their selection scores."""
    sel = read_selected(stage_dir)
    counts = selection_counts(stage_dir, vocab)[["total"]].rename(columns={"total": "selected"})
    fig = Figure(figsize=(11, 0.8 + 0.22 * len(counts)), layout="constrained")
    bars, hist = fig.subplots(1, 2, width_ratios=(2, 1))
    _bars(bars, counts)
    hist.hist(sel["score"].to_numpy(dtype=float), bins=20, range=(0.0, 1.0), color="C1")
    hist.set_xlabel("selection score (per-clip lwlrap)")
    hist.set_ylabel("clips")
    fig.suptitle(f"{Path(stage_dir).name}: {len(sel)} noisy clips selected")
    return fig


def runs_ensemble_cv(data, run_dirs: Sequence) -> float:
    """CV lwlrap on curated of the mean of several runs' stage ensembles (``oof_ensemble_curated.csv``);
    the runs must share the curated folds (same n_folds and folds_seed), as the 12th place's CNN + VGG16."""
    from .metrics import lwlrap

    mats, folds = [], []
    for run_dir in map(Path, run_dirs):
        folds.append((run_dir / "folds_curated.csv").read_text() if (run_dir / "folds_curated.csv").is_file() else None)
        if folds[-1] != folds[0]:
            raise DataError(f"{run_dir}: its curated folds differ from {Path(run_dirs[0])}'s; out-of-fold predictions "
                            "of runs combine only with the same n_folds and folds_seed.")
        path = run_dir / "oof_ensemble_curated.csv"
        if not path.is_file():
            raise DataError(f"{path}: not found; run that run's stage ensemble (fatlib.pipeline.stage_ensemble) first.")
        df = pd.read_csv(path)
        if df["fname"].astype(str).tolist() != list(map(str, data.curated.fnames)):
            raise DataError(f"{path}: its clips are not this data set's curated split.")
        mats.append(df[list(data.vocab)].to_numpy(dtype=np.float64))
    return float(lwlrap(data.curated.targets, np.mean(mats, axis=0)))


# ------------------------------------------------------------------------------------ run report
def _fmt(v) -> str:
    return "-" if v is None or v != v else f"{v:.4f}"
