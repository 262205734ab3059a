"""What a trained stage gets wrong: per-class out-of-fold lwlrap, the worst clips of a class (listen, look,
true labels and top-3 predicted), the most confused class pairs; and an ipywidgets error explorer.

Everything reads a finished stage's ``oof_curated.csv`` (each curated clip predicted by the fold model
that never trained on it), so the mistakes are honest ones. Pure functions first (:func:`class_table`,
:func:`worst_clips`, :func:`confused_pairs`), the picture and sound of clips (:func:`clips_html`), then
:func:`error_explorer` (a class dropdown and a count, above a rendering replaced in place, as
``fatlib.explore``'s explorer: a notebook executed headless keeps the first choice).
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from .display import LiveView, _png, audio_player
from .errors import DataError
from .explore import labels_text

__all__ = ["ErrorExplorer", "class_table", "clips_html", "confused_pairs", "error_explorer", "read_oof",
           "worst_clips"]


def read_oof(stage_dir, data) -> np.ndarray:
    """A finished stage's out-of-fold curated probabilities (n_curated, n_classes), columns in ``data.vocab``
    order, rows checked to be ``data.curated``'s clips."""
    path = Path(stage_dir) / "oof_curated.csv"
    if not path.is_file():
        raise DataError(f"{path}: not found; train that stage to completion first (fatlib.pipeline.warmup_stage).")
    df = pd.read_csv(path)
    if df["fname"].astype(str).tolist() != [str(f) for f in data.curated.fnames]:
        raise DataError(f"{path}: its clips are not this data set's curated split; pass the data the stage was "
                        "trained on.")
    missing = sorted(set(data.vocab) - set(df.columns))
    if missing:
        raise DataError(f"{path}: no column for the classes {missing[:5]}; pass the data the stage was trained on.")
    return df[list(data.vocab)].to_numpy(dtype=np.float64)


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1 + the number of classes scored above each (clip, class): 1 = ranked first."""
    return (scores[:, None, :] > scores[:, :, None]).sum(axis=2) + 1


def class_table(truth, scores, vocab) -> pd.DataFrame:
    """One row per class with labels: out-of-fold lwlrap (``metrics.per_class_lwlrap``), its share of all
    labels (its weight in the overall lwlrap), clips, and how often its clips rank it first; worst first."""
    from .metrics import per_class_lwlrap

    truth, scores = np.asarray(truth) > 0, np.asarray(scores, dtype=np.float64)
    values, weights = per_class_lwlrap(truth, scores)
    first = np.where(truth, _ranks(scores) == 1, False).sum(axis=0)
    clips = truth.sum(axis=0)
    table = pd.DataFrame({"class": list(vocab), "lwlrap": values, "label_share": weights, "clips": clips,
                          "ranked_first": np.where(clips > 0, first / np.maximum(clips, 1), np.nan)})
    table = table[clips > 0].sort_values(["lwlrap", "clips"], ascending=[True, False], kind="stable")
    return table.set_index("class").round(4)


def worst_clips(truth, scores, vocab, label: str, *, n: int = 3, fnames=None) -> pd.DataFrame:
    """The ``n`` clips labelled ``label`` whose scores rank it lowest: their row, fname, the rank of
    ``label`` (1 = first), its probability, the true labels and the top-3 predicted (with probabilities)."""
    if label not in vocab:
        raise DataError(f"unknown class {label!r}; choose one of the {len(vocab)} classes")
    truth, scores = np.asarray(truth) > 0, np.asarray(scores, dtype=np.float64)
    c = list(vocab).index(label)
    rows = np.flatnonzero(truth[:, c])
    rank = (scores[rows] > scores[rows, c][:, None]).sum(axis=1) + 1
    order = rows[np.lexsort((scores[rows, c], -rank))][:n]
    out = []
    for i in order:
        top = np.argsort(-scores[i], kind="stable")[:3]
        out.append({"row": int(i), "fname": str(fnames[i]) if fnames is not None else str(i),
                    "rank": int((scores[i] > scores[i, c]).sum() + 1), "probability": round(float(scores[i, c]), 4),
                    "true_labels": labels_text(truth[i], vocab),
                    "top3_predicted": ", ".join(f"{vocab[j]} {scores[i, j]:.2f}" for j in top)})
    return pd.DataFrame(out)


def confused_pairs(truth, scores, vocab, *, n: int = 10) -> pd.DataFrame:
    """The class pairs most often confused: for each clip whose top prediction is not one of its labels,
    each of its true classes paired with that prediction; counted over clips, most first (share: of the
    true class's clips)."""
    truth, scores = np.asarray(truth) > 0, np.asarray(scores, dtype=np.float64)
    top = scores.argmax(axis=1)
    counts: dict = {}
    for i in np.flatnonzero(~truth[np.arange(len(top)), top]):
        for t in np.flatnonzero(truth[i]):
            counts[(t, top[i])] = counts.get((t, top[i]), 0) + 1
    clips = truth.sum(axis=0)
    rows = [{"true": vocab[t], "predicted_instead": vocab[p], "clips": k, "share_of_true": round(k / clips[t], 4)}
            for (t, p), k in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]
    return pd.DataFrame(rows, columns=["true", "predicted_instead", "clips", "share_of_true"])


def clips_html(data, cfg, table: pd.DataFrame, *, max_seconds: float = 5.0) -> str:
    """HTML rows of :func:`worst_clips`: each clip's text, its player and its log-mel (first ``max_seconds``)."""
    from matplotlib.figure import Figure

    from .features import clip_wave, log_mel
    from .plots import plot_spectrogram

    cells = []
    paths = data.curated.paths()
    for r in table.itertuples():
        y = clip_wave(paths[r.row], cfg)[: int(max_seconds * cfg.sample_rate)]
        fig = Figure(figsize=(5, 2.2), layout="constrained")
        plot_spectrogram(log_mel(y, cfg), cfg, ax=fig.add_subplot())
        text = (f"<b>{html.escape(r.fname)}</b><br/>true: {html.escape(r.true_labels)}<br/>top-3 predicted: "
                f"{html.escape(r.top3_predicted)}<br/>the class ranked {r.rank} (probability {r.probability:.4f})")
        cells.append(f"<tr><td style='text-align:left'>{text}</td><td>"
                     f"{audio_player(y, sample_rate=cfg.sample_rate)._repr_html_()}</td>"
                     f"<td><img src='data:image/png;base64,{_png(fig)}'/></td></tr>")
    return "<table>" + "".join(cells) + "</table>"


def error_explorer(stage_dir, data, *, cfg=None, label: str | None = None, n: int = 3,
                   show: bool = True) -> ErrorExplorer:
    """An explorer of a finished stage's mistakes: a class dropdown (worst out-of-fold lwlrap first) and the
    number of clips, above the worst clips of that class (text, player, log-mel). ``cfg``: the MelConfig to
    show clips with (default: the stage's, from its ``config.json``); ``label`` None: the worst class."""
    ex = ErrorExplorer(stage_dir, data, cfg=cfg, label=label, n=n)
    if show:
        ex.show()
    return ex


class ErrorExplorer(LiveView):
    """The controls and the current choice (``clips``: the :func:`worst_clips` table, ``html``)."""

    def __init__(self, stage_dir, data, *, cfg, label, n):
        import ipywidgets as w

        self.data, self.stage_dir = data, Path(stage_dir)
        if cfg is None:
            from .train import StageConfig

            cfg = StageConfig.load(self.stage_dir / "config.json").mel_config()
        self.cfg = cfg
        self.scores = read_oof(stage_dir, data)
        self.truth = np.asarray(data.curated.targets) > 0
        self.table = class_table(self.truth, self.scores, data.vocab)
        options = [(f"{c} (lwlrap {v:.4f}, {int(k)} clips)", c)
                   for c, v, k in zip(self.table.index, self.table["lwlrap"], self.table["clips"])]
        if label is not None and label not in self.table.index:
            raise DataError(f"error_explorer: no curated clip is labelled {label!r}; choose one of "
                            f"{list(self.table.index)[:5]}...")
        self.label = w.Dropdown(options=options, value=label or options[0][1], description="class",
                                layout=w.Layout(width="520px"))
        self.n = w.IntSlider(value=n, min=1, max=10, description="clips", continuous_update=False)
        self.label.observe(lambda _: self.render(), "value")
        self.n.observe(lambda _: self.render(), "value")
        self.widget = w.HBox([self.label, self.n])
        self.render()

    def compute(self) -> str:
        label = self.label.value
        self.clips = worst_clips(self.truth, self.scores, self.data.vocab, label, n=int(self.n.value),
                                 fnames=self.data.curated.fnames)
        row = self.table.loc[label]
        head = (f"<p><b>{html.escape(label)}</b>: out-of-fold lwlrap {row['lwlrap']:.4f} over {int(row['clips'])} "
                f"curated clips, ranked first in {100 * row['ranked_first']:.0f}% of them; its "
                f"{len(self.clips)} worst (the class ranked lowest):</p>")
        return head + clips_html(self.data, self.cfg, self.clips)
