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

from .display import audio_player
from .errors import DataError


# ------------------------------------------------------------------------------------------- setup
def setup_notebook(fatlib_dataset, input_roots=None, *, installed=()):
    """The notebooks' setup once fatlib is importable: each dependency Kaggle's image lacks installed
    offline from ``<fatlib_dataset>/wheels`` (``fatlib.kaggle.install_missing``; ``installed``: what the
    cell installed before, named in the same line), the earlier sessions' outputs found
    (``fatlib.workspace.discover_input_roots`` when ``input_roots`` is None), and one line saying where fatlib
    and those outputs are. Returns the ``fatlib.workspace.Roots``."""
    import fatlib

    from .kaggle import install_missing
    from .workspace import Roots, discover_input_roots

    wheels = Path(fatlib_dataset) / "wheels"
    done = [*installed, *install_missing(wheels, progress=False)]
    if done:
        print(f"installed from {wheels}: {', '.join(done)}")
    roots = Roots(discover_input_roots() if input_roots is None else input_roots)
    print(f"fatlib {fatlib.__version__} from {Path(fatlib.__file__).parent}; earlier sessions read from "
          f"{[str(r) for r in roots.inputs] or 'nowhere'}")
    return roots


# ----------------------------------------------------------------------------------------- data set
def load_data(data_dir=None):
    """``fatlib.dataset.FatData.from_dir(data_dir)``, its warnings (e.g. no ``train_noisy.csv``: a curated-only
    data set) printed as plain "note:" lines instead of a notebook's warning boxes."""
    import warnings

    from .dataset import FatData

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = FatData.from_dir(data_dir)
    for w in caught:
        print(f"note: {w.message}")
    return data


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
    return pd.DataFrame(rows).set_index("split").round(4)


def feature_summary(cfg) -> str:
    """The log-mel settings in one line: "128 mels, hop 694 = 15.7 ms, 44.1 kHz, 2.0 s crops"."""
    hop_ms = 1000 * cfg.hop_length / cfg.sample_rate
    ffts = f", STFT sizes {'/'.join(map(str, cfg.n_ffts))}" if cfg.n_ffts else f", n_fft {cfg.n_fft}"
    return (f"{cfg.n_mels} mels, hop {cfg.hop_length} = {hop_ms:.1f} ms, {cfg.sample_rate / 1000:g} kHz, "
            f"{cfg.crop_frames * cfg.hop_length / cfg.sample_rate:.1f} s crops ({cfg.crop_frames} frames){ffts}, "
            f"{cfg.fmin:g}-{cfg.fmax:g} Hz")


def has_clips(data, split: str, *, needed_for: str = "") -> bool:
    """True when ``split`` ("curated", "noisy", "test") of ``data`` has clips; else prints one line saying
    what is skipped (``needed_for``) and returns False. A notebook cell runs what needs the split only then."""
    n = len(data.split(split).fnames)
    if n == 0 and needed_for:
        source = {"curated": "train_curated.csv", "noisy": "train_noisy.csv", "test": "sample_submission.csv"}[split]
        print(f"no {split} clips in {data.root} ({source} missing or empty): {needed_for} skipped")
    return n > 0


def splits_with_clips(data, splits: Sequence[str] = ("curated", "noisy"), *, needed_for: str = "") -> list[str]:
    """The names in ``splits`` whose split has clips (:func:`has_clips`; each empty one says so in one line)."""
    return [s for s in splits if has_clips(data, s, needed_for=needed_for and f"{needed_for} of {s}")]


def build_caches(data, cfg, *, cache_dir, splits: Sequence[str] = ("curated", "noisy"), n_jobs=None,
                 input_roots=()) -> dict:
    """The feature cache (``fatlib.cache.FeatureCache.build``) of each split in ``splits`` that has clips,
    {name: cache}; an empty split (a curated-only data set has no ``train_noisy.csv``) is skipped with one
    line, as a cache of no clips cannot exist."""
    from .cache import FeatureCache

    return {name: FeatureCache.build(data.split(name).paths(), cfg, cache_dir=cache_dir, name=name, n_jobs=n_jobs,
                                     input_roots=input_roots)
            for name in splits_with_clips(data, splits, needed_for="the feature cache")}


def class_counts(data) -> pd.DataFrame:
    """Clips per class in the curated and noisy splits (a split without clips left out), most clips first."""
    counts = {name: np.asarray(data.split(name).targets).sum(axis=0).astype(int)
              for name in ("curated", "noisy") if len(data.split(name).fnames)}
    table = pd.DataFrame(counts, index=list(data.vocab))
    table.index.name = "class"
    return table.assign(_total=table.sum(axis=1)).sort_values("_total", ascending=False, kind="stable").drop(
        columns="_total")


def _bars(ax, counts: pd.DataFrame) -> None:
    pos = np.arange(len(counts))[::-1]
    height = 0.8 / len(counts.columns)
    for j, col in enumerate(counts.columns):
        ax.barh(pos - j * height, counts[col].to_numpy(), height=height, label=col)
    ax.set_yticks(pos - height * (len(counts.columns) - 1) / 2, list(counts.index), fontsize=7)
    ax.set_xlabel("clips")
    ax.legend(fontsize=8)


def plot_class_counts(data) -> Figure:
    """Horizontal bars of :func:`class_counts` (curated and noisy side by side), most clips at the top."""
    counts = class_counts(data)
    fig = Figure(figsize=(7, 0.6 + 0.22 * len(counts)), layout="constrained")
    _bars(fig.add_subplot(), counts)
    return fig


def training_batch(cache, targets, cfg, *, batch_size: int = 16, seed: int = 0):
    """One training batch as a stage sees it: random ``cfg.crop_frames`` crops of random cache rows,
    normalised (``fatlib.loaders.CropDataset``). Returns (x (B, channels, n_mels, crop), y (B, n_classes))."""
    import torch

    from .loaders import CropDataset

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
    """A clip's log-mel from librosa (``features.log_mel``) and from torch (``logmel.LogMel``), same
    waveform (``features.clip_wave``); returns both (n_mels, frames) dB and their max |difference| in dB."""
    import torch

    from .features import clip_wave, log_mel
    from .logmel import LogMel

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
    plot_spectrogram(mine, cfg, ax=axes[1], title="torch (logmel.LogMel)")
    plot_spectrogram(mine[:, :frames] - ref[:, :frames], cfg, ax=axes[2], units="dB difference", diverging=True,
                     title=f"torch - librosa (max |difference| {comparison['max_abs_diff_db']:.4f} dB)")
    return fig


# ----------------------------------------------------------------------------------------- listening
def listen_rows(waves: dict, cfg, *, max_seconds: float | None = 8.0) -> list[dict]:
    """For each title -> mono waveform (``cfg.sample_rate`` Hz, at most ``max_seconds`` of it): the
    waveform, its :func:`audio_player` and a figure of those same samples: the waveform above their log-mel
    (``features.log_mel``, dB, seconds and Hz axes), so what is heard is what is shown."""
    from .features import log_mel
    from .plots import plot_spectrogram

    rows = []
    for title, y in waves.items():
        y = np.asarray(y, dtype=np.float32)
        if max_seconds is not None:
            y = y[: int(round(max_seconds * cfg.sample_rate))]
        fig = Figure(figsize=(6, 3.4), layout="constrained")
        wave_ax, spec_ax = fig.subplots(2, 1, height_ratios=(1, 2))
        plot_spectrogram(log_mel(y, cfg), cfg, ax=spec_ax)
        wave_ax.plot(np.arange(len(y)) / cfg.sample_rate, y, lw=0.4)
        wave_ax.set(xlim=(0, len(y) / cfg.sample_rate), ylabel="amplitude", xticklabels=[])
        fig.colorbar(spec_ax.collections[0], ax=wave_ax).remove()  # the same width as the spectrogram above
        rows.append({"title": str(title), "wave": y, "audio": audio_player(y, sample_rate=cfg.sample_rate),
                     "figure": fig})
    return rows


def listen_table(rows: list[dict], *, caption: str = ""):
    """An ``IPython.display.HTML`` table: each row's title, its audio player beside its waveform and
    spectrogram (``caption`` above the table)."""
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
    head = f"<p>{html.escape(caption)}</p>" if caption else ""
    return HTML(head + "<table><tr><th>clip</th><th>listen</th><th>waveform and log-mel (dB)</th></tr>" + "".join(cells)
                + "</table>")


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
    effect of :mod:`fatlib.wave_augment` (``effects``: names, default all), the i-th of ``EFFECTS`` drawn
    from ``numpy.random.default_rng([seed, i])`` (its own draw, not the same quantile for all):
    {"original": y, "pitch_shift": ..., ...}."""
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
        rng = np.random.default_rng(effect_seed(name, seed))
        out[name] = EFFECTS[name](y, sample_rate=cfg.sample_rate, rng=rng).astype(np.float32)
    return out


def effect_seed(name: str, seed: int) -> list[int]:
    """The seed of effect ``name``'s draw in :func:`effect_waves`: ``[seed, its index in EFFECTS]``."""
    from .wave_augment import EFFECTS

    return [int(seed), list(EFFECTS).index(name)]


def listen_examples(data, cfg, *, n: int = 3, split: str = "curated", max_seconds: float | None = 8.0):
    """HTML: the first ``n`` clips of ``split``, each playable beside its log-mel."""
    return listen_table(listen_rows(example_waves(data, cfg, n=n, split=split), cfg, max_seconds=max_seconds))


def listen_wave_effects(path, cfg, *, seed: int = 0, max_seconds: float | None = 5.0):
    """HTML: one clip before and after each waveform effect (pitch shift, speed, reverb, overdrive),
    each playable beside its log-mel, titled with what the effect drew (cents, speed, ...)."""
    from .explore import describe_draws, wave_draws

    waves = effect_waves(path, cfg, seed=seed, max_seconds=max_seconds)
    titled = {}
    for name, y in waves.items():
        if name != "original":
            text = describe_draws(name, wave_draws(name, {}, sample_rate=cfg.sample_rate, seed=effect_seed(name, seed)),
                                  (), cfg)
            name = text if text.startswith(name) else f"{name}: {text}"
        titled[name] = y
    return listen_table(listen_rows(titled, cfg, max_seconds=None),
                        caption=f"{Path(path).name}: its first {len(waves['original']) / cfg.sample_rate:.1f} s, "
                                f"before and after each effect (seed {seed})")


# --------------------------------------------------------------------------------------------- stages
def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: not found; train that stage to completion first (fatlib.pipeline.warmup_stage).")
    return json.loads(path.read_text())


def stage_table(stage_dir) -> pd.DataFrame:
    """CV lwlrap of a finished stage (4 decimals): one row per fold, numbered from 1 as the training log
    does (curated = its validation fold, noisy = its out-of-fold noisy clips) and an "all (OOF)" row over
    all out-of-fold predictions."""
    m = _read_json(Path(stage_dir) / "metrics.json")
    rows = [{"fold": str(k + 1), "lwlrap_curated": c, "lwlrap_noisy": n}
            for k, (c, n) in enumerate(zip(m["fold_lwlrap_curated"], m["fold_lwlrap_noisy"]))]
    rows.append({"fold": "all (OOF)", "lwlrap_curated": m["cv_lwlrap_curated"], "lwlrap_noisy": m["cv_lwlrap_noisy"]})
    return pd.DataFrame(rows).set_index("fold").astype(float).round(4)


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


def explore_errors(stage_dir, data, *, cfg=None, label: str | None = None, n: int = 3, pairs: int = 10):
    """A finished stage's mistakes on curated (out-of-fold): the ``pairs`` most confused class pairs (a
    table), then ``fatlib.mistakes.error_explorer`` (the worst clips of a class: listen, look, true labels,
    top-3 predicted; the worst class first). Displays both; returns the explorer."""
    from IPython.display import display

    from .mistakes import confused_pairs, error_explorer

    ex = error_explorer(stage_dir, data, cfg=cfg, label=label, n=n, show=False)
    table = confused_pairs(ex.truth, ex.scores, data.vocab, n=pairs)
    print(f"{Path(stage_dir).name}: the class pairs most often confused (a clip's top prediction is not one of "
          "its labels)" if len(table) else f"{Path(stage_dir).name}: every curated clip's top prediction is one of "
          "its labels")
    if len(table):
        display(table.set_index(["true", "predicted_instead"]))
    ex.show()
    return ex


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
