"""Tag any audio with trained weights: :class:`Tagger` (``fatlib.Tagger``) and the ``tag`` command.

``Tagger(weights=..., stages=None, device=None)`` loads every fold model of a run (the vocabulary
and features travel with the weights); ``.tag(paths)`` gives each file's top labels and every class's
score, ``.timeline(path)`` the scores of each TTA window over time (:class:`Timeline`, with a picture).

One inference path: ``.tag`` is :func:`fatlib.predict.ensemble_scores`, what ``predict_test`` (the
``predict`` command, the Kaggle kernel) runs on the test split: the same features (long files decoded
in blocks, :mod:`fatlib.streaming`), TTA crops, fold averaging and ensemble. ``.timeline`` runs the
same crops through the same forward pass (:func:`fatlib.predict.crop_probabilities`) and keeps each
window's scores instead of their mean, so the mean of a file's windows is its tag score (windows TTA,
one input group, mean ensemble).

Settings (TTA scheme, step, stages, ensemble, rescale): a value given wins; otherwise the run's
``recipe.json`` ``predict`` table (written by ``python -m fatlib run``), otherwise predict's defaults;
the TTA step, when nowhere given, is each model's own (stored in its weights). :attr:`Tagger.sources`
says where each came from.

Files: every file named, and in folders (recursively) every file with an audio suffix
(:data:`AUDIO_SUFFIXES`: what soundfile reads, mp3 included; any rate, mono or multi-channel). A file
that cannot be read is skipped with one line naming it (``on_error="skip"``) or raises (``"raise"``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .errors import AudioError, DataError, WeightsError

PLOT_COLUMNS = 2000  # log-mel columns kept for the timeline picture (longer files: averaged in runs)
PREDICT_DEFAULTS = {"tta": "windows", "ensemble": "mean", "rescale": False, "step_frames": None, "stages": None}


def audio_suffixes() -> frozenset[str]:
    """File suffixes taken from folders: soundfile's formats (WAV, FLAC, OGG, MP3, AIFF, ...) and aliases."""
    import soundfile as sf

    return frozenset({f".{f.lower()}" for f in sf.available_formats()} | {".aif", ".oga", ".opus", ".wave"})


def find_audio(inputs: Sequence[str | os.PathLike] | str | os.PathLike) -> tuple[list[Path], list[str]]:
    """(audio files, problems): each file named is kept whatever its suffix; folders are searched
    recursively for files with an audio suffix (hidden files left out), in sorted order. A path that
    does not exist, or a folder without audio, is a problem line naming it."""
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    suffixes = audio_suffixes()
    files: list[Path] = []
    problems: list[str] = []
    for item in map(Path, inputs):
        if item.is_file():
            files.append(item)
        elif item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                           and not any(part.startswith(".") for part in p.relative_to(item).parts))
            if not found:
                problems.append(f"{item}: no audio file in this folder (suffixes {', '.join(sorted(suffixes))})")
            files += found
        else:
            problems.append(f"{item}: no such file or folder; check the path")
    return list(dict.fromkeys(files)), problems


def check_audio(path: Path) -> str | None:
    """None when ``path``'s header reads and it holds samples, else the problem (one line naming it)."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        return f"{path}: cannot read it as audio ({str(e).strip() or type(e).__name__}); re-encode it as WAV/FLAC or leave it out"
    if info.frames == 0:
        return f"{path}: the file holds 0 samples; leave it out"
    return None


def top_labels(scores: np.ndarray, vocab: Sequence[str], k: int) -> pd.DataFrame:
    """``label_1, score_1, ..., label_k, score_k``: each row's ``k`` best classes, best first."""
    k = min(k, len(vocab))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    cols: dict[str, Any] = {}
    for j in range(k):
        cols[f"label_{j + 1}"] = [vocab[i] for i in order[:, j]]
        cols[f"score_{j + 1}"] = np.take_along_axis(scores, order[:, j : j + 1], axis=1)[:, 0]
    return pd.DataFrame(cols)


def run_settings(weights: Sequence[Path]) -> tuple[dict[str, Any], Path | None]:
    """The ``predict`` table of the first ``recipe.json`` beside ``weights`` (the run folder, or above a
    stage folder), and its path; ({}, None) when there is none."""
    for w in weights:
        for candidate in (w / "recipe.json", w.parent / "recipe.json"):
            if candidate.is_file():
                try:
                    table = json.loads(candidate.read_text()).get("predict") or {}
                except (ValueError, AttributeError) as e:
                    raise WeightsError(f"{candidate}: not a recipe.json ({e}); remove it or rerun the recipe") from e
                return {k: v for k, v in table.items() if k in PREDICT_DEFAULTS}, candidate
    return {}, None


@dataclass
class Timeline:
    """Per-window scores of one file: ``windows`` (start_s, end_s, top labels, every class), the log-mel
    for the picture (``log_mel``: (n_mels, columns) dB, averaged in runs for long files, spanning
    ``mel_seconds``), the vocabulary, and ``scores``: the file's (n_classes,) scores as :meth:`Tagger.tag`
    gives them for this file alone (each model's mean over its own windows, then the ensemble), from the
    same forward passes; ``member_scores`` (n_models, n_classes): each model's mean before the ensemble,
    of group ``member_groups[i]`` (:meth:`Tagger.timelines` combines them over all its files, as rescaling
    the ensemble needs)."""

    path: Path
    windows: pd.DataFrame
    log_mel: np.ndarray
    mel_seconds: tuple[float, float]
    vocab: list[str]
    scores: np.ndarray
    member_scores: np.ndarray
    member_groups: list

    def plot(self, *, labels: int = 8):
        """Figure: the log-mel with the top 3 labels' scores against time drawn over it, and below the
        scores of the ``labels`` classes that peak highest, as a heat map (time in seconds)."""
        from matplotlib.figure import Figure

        scores = self.windows[self.vocab].to_numpy()
        centres = ((self.windows["start_s"] + self.windows["end_s"]) / 2).to_numpy()
        best = np.argsort(-scores.max(axis=0), kind="stable")[: min(labels, len(self.vocab))]
        t0, t1 = self.mel_seconds
        fig = Figure(figsize=(11, 5.5), layout="constrained")
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
        top.imshow(self.log_mel, origin="lower", aspect="auto", cmap="magma", extent=(t0, t1, 0, self.log_mel.shape[0]))
        top.set_ylabel("mel band")
        over = top.twinx()
        for i, c in zip(best[:3], ("#00e5ff", "#7CFC00", "#ffffff")):
            over.plot(centres, scores[:, i], color=c, lw=1.6, label=self.vocab[i])
        over.set_ylim(0, 1)
        over.set_ylabel("score")
        over.legend(loc="upper right", fontsize=8, framealpha=0.6)
        top.set_title(f"{self.path.name}: " + ", ".join(f"{self.vocab[i]} {scores[:, i].mean():.2f}" for i in best[:3])
                      + " (mean over windows)", fontsize=10)
        ends = self.windows["end_s"].to_numpy()
        edges = np.append(self.windows["start_s"].to_numpy()[:1], (centres[1:] + centres[:-1]) / 2)
        edges = np.append(edges, ends[-1:])
        img = bottom.pcolormesh(edges, np.arange(len(best) + 1), scores[:, best].T, cmap="viridis", vmin=0, vmax=1)
        bottom.set_yticks(np.arange(len(best)) + 0.5, [self.vocab[i] for i in best], fontsize=8)
        bottom.invert_yaxis()
        bottom.set_xlabel("time (s)")
        bottom.set_xlim(min(t0, edges[0]), max(t1, edges[-1]))
        fig.colorbar(img, ax=bottom, label="score", pad=0.01)
        return fig

    def save_plot(self, path: str | os.PathLike, **kw) -> Path:
        """Write :meth:`plot` as a PNG atomically."""
        from .plots import save_figure

        return save_figure(self.plot(**kw), path)


class Tagger:
    """Every fold model under ``weights`` (run folders or stage folders; ``stages``: sub-folders of a
    run) on ``device`` (default: CUDA when available, else CPU), ready to tag audio files.

    ``tta``, ``step_frames``, ``ensemble``, ``rescale`` as in ``predict`` (None: the run's recipe.json,
    else predict's defaults; see the module doc). ``batch_size``: crops per forward pass.
    """

    def __init__(self, weights, *, stages: Sequence[str] | None = None, device=None, tta: str | None = None,
                 step_frames: int | None = None, ensemble: str | None = None, rescale: bool | None = None,
                 batch_size: int = 64, progress: bool = False):
        from .checkpoint import read_metadata
        from .ensemble import METHODS
        from .predict import default_device
        from .run_models import find_models, weight_files
        from .tta import check_positive, check_scheme

        roots = [Path(weights)] if isinstance(weights, (str, os.PathLike)) else [Path(w) for w in weights]
        stored, recipe = run_settings(roots)
        given = {"tta": tta, "step_frames": step_frames, "ensemble": ensemble, "rescale": rescale,
                 "stages": list(stages) if stages else None}
        self.settings: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        for key, default in PREDICT_DEFAULTS.items():
            if given[key] is not None:
                self.settings[key], self.sources[key] = given[key], "given"
            elif stored.get(key) is not None:
                self.settings[key], self.sources[key] = stored[key], str(recipe)
            else:
                self.settings[key] = default
                self.sources[key] = "each model's own (weights)" if key == "step_frames" else "default"
        check_scheme(self.settings["tta"])
        check_positive(batch_size=batch_size)
        if self.settings["step_frames"] is not None:
            check_positive(step_frames=self.settings["step_frames"])
        if self.settings["ensemble"] not in METHODS:
            raise DataError(f"ensemble={self.settings['ensemble']!r}: use one of {', '.join(METHODS)}.")
        self.device = default_device(device)
        files = weight_files(roots, stages=self.settings["stages"])
        self.vocab: list[str] = list(read_metadata(files[0])["vocab"])
        self.models = find_models(roots, vocab=self.vocab, stages=self.settings["stages"])
        for lm in self.models:
            lm.model.to(self.device).eval()
        self.batch_size = batch_size
        self.progress = progress

    def __repr__(self) -> str:
        groups = list(dict.fromkeys(lm.group for lm in self.models))
        return (f"Tagger({len(self.models)} models: {groups}, {len(self.vocab)} classes, device={self.device}, "
                f"tta={self.settings['tta']}, ensemble={self.settings['ensemble']})")

    # ------------------------------------------------------------------------------------ tags
    def scores(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """(n_files, n_classes) ensemble scores of the given audio files (no folders, no skipping):
        :func:`fatlib.predict.ensemble_scores`, as ``predict`` computes the test split."""
        from .predict import ensemble_scores

        paths = [Path(p) for p in paths]
        return ensemble_scores(
            self.models, paths, tta=self.settings["tta"], step_frames=self.settings["step_frames"],
            ensemble=self.settings["ensemble"], rescale=bool(self.settings["rescale"]), fnames=[str(p) for p in paths],
            batch_size=self.batch_size, device=self.device, progress=self.progress,
        )

    def tag(self, paths, *, top_k: int = 3, on_error: str = "skip") -> pd.DataFrame:
        """One row per audio file of ``paths`` (files or folders, see :func:`find_audio`): ``path``, the
        ``top_k`` best ``label_i``/``score_i``, then every class's score. ``on_error="skip"``: files that
        cannot be read are left out and listed in ``df.attrs["skipped"]`` (one line each naming the file);
        ``"raise"``: the first raises AudioError."""
        good, skipped = _readable(paths, on_error)
        scores = None
        while good:
            try:
                scores = self.scores(good)
                break
            except AudioError as e:  # decoding failed past the header: name it, leave it out, redo the rest
                bad = next((f for f in good if str(e).startswith(f"{f}:")), None)
                if bad is None or on_error == "raise":
                    raise
                skipped.append(str(e))
                good.remove(bad)
        df = self.tag_table(good, scores, top_k=top_k)
        df.attrs["skipped"] = skipped
        return df

    def tag_table(self, paths: Sequence[str | os.PathLike], scores: np.ndarray | None, *, top_k: int = 3) -> pd.DataFrame:
        """The table of :meth:`tag` for ``paths`` and their (n_files, n_classes) ``scores`` (None: no files)."""
        scores = np.zeros((0, len(self.vocab)), np.float32) if scores is None else np.asarray(scores)
        return pd.concat([pd.DataFrame({"path": [str(f) for f in paths]}), top_labels(scores, self.vocab, top_k),
                          pd.DataFrame(scores, columns=self.vocab)], axis=1)

    def timelines(self, paths, *, top_k: int = 3, on_error: str = "skip") -> tuple[pd.DataFrame, list[Timeline]]:
        """:meth:`tag` and :meth:`timeline` of the files of ``paths`` from one forward pass per window: the
        table (``attrs["skipped"]`` as :meth:`tag`) and each tagged file's Timeline, in the table's order."""
        from .progress import progress as show_progress

        readable, skipped = _readable(paths, on_error)
        good, lines = [], []
        for f in show_progress(readable, total=len(readable), label="tag --timeline: files", show=self.progress):
            try:
                lines.append(self.timeline(f, top_k=top_k))
                good.append(f)
            except AudioError as e:  # decoding failed past the header: name it, leave it out
                if on_error == "raise":
                    raise
                skipped.append(str(e))
        scores = None
        if lines:  # each model's (n_files, n_classes) matrix, combined over the files at once (as tag)
            from .ensemble import combine_groups

            mats = list(np.stack([tl.member_scores for tl in lines], axis=1))
            scores, _ = combine_groups(mats, lines[0].member_groups, method=self.settings["ensemble"],
                                       rescale=bool(self.settings["rescale"]))
        df = self.tag_table(good, scores, top_k=top_k)
        df.attrs["skipped"] = skipped
        return df, lines

    # -------------------------------------------------------------------------------- timeline
    def timeline(self, path: str | os.PathLike, *, top_k: int = 3) -> Timeline:
        """Each TTA window's scores over time for one file (``windows`` or ``sequential`` TTA): the
        crops :meth:`tag` averages, with start/end seconds in the file (trimmed silence and padding
        accounted for). The file is decoded in blocks (:func:`fatlib.streaming.stream_log_mel`), so an
        hour-long recording needs its log-mel in memory, not its waveform. Input groups with other
        windows (another hop or crop) are taken at the nearest window of the first group."""
        import torch

        from .ensemble import combine_groups
        from .logmel import LogMel
        from .predict import check_finite_scores, crop_probabilities, input_groups
        from .streaming import stream_log_mel
        from .tta import DEFAULT_QUANTUM_FRAMES, clip_crops, crop_plan

        path = Path(path)
        problem = check_audio(path) if path.is_file() else f"{path}: no such audio file; check the path"
        if problem:
            raise AudioError(problem)
        tta = self.settings["tta"]
        if tta == "full":
            raise DataError("a timeline needs windows: use tta 'windows' or 'sequential' (--tta), not 'full'.")
        mats, groups, whole = [], [], []  # whole: each model's mean over its own windows (as predict_clips)
        ref = None  # (starts_s, ends_s) of the first group's windows
        for (_, step), members in input_groups(self.models, step_frames=self.settings["step_frames"]).items():
            cfg = members[0].mel_config
            spec, offset, n_samples = stream_log_mel(path, cfg, LogMel(cfg).to(self.device))
            crops = clip_crops([0], [spec], cfg, tta=tta, step_frames=step, quantum_frames=DEFAULT_QUANTUM_FRAMES)
            plan = crop_plan(max(spec.shape[-1], cfg.crop_frames), tta=tta, width_frames=cfg.crop_frames,
                             step_frames=step)
            probs = torch.zeros(len(members), len(crops), len(self.vocab))
            with torch.inference_mode():
                for pos, _, p in crop_probabilities([lm.model for lm in members], crops, cfg, batch_size=self.batch_size,
                                                    budget_frames=self.batch_size * cfg.crop_frames, device=self.device):
                    probs[:, torch.as_tensor(pos)] = p
            del crops
            hop, sr, seconds = cfg.hop_length, cfg.sample_rate, n_samples / cfg.sample_rate
            starts = np.clip((offset + np.array([s for s, _ in plan]) * hop) / sr, 0, seconds)
            ends = np.clip((offset + np.array([s + w for s, w in plan]) * hop) / sr, 0, seconds)
            pick = slice(None)
            if ref is None:
                ref = (starts, ends)
                mel_image = _pooled(spec[: cfg.n_mels].float().cpu().numpy())
                mel_seconds = (offset / sr, (offset + spec.shape[-1] * hop) / sr)
            else:  # another window grid: the window whose centre is nearest each reference window's centre
                centres, ref_centres = (starts + ends) / 2, (ref[0] + ref[1]) / 2
                pick = np.abs(ref_centres[:, None] - centres[None, :]).argmin(axis=1)
            del spec
            for lm, mat in zip(members, probs.numpy()):
                check_finite_scores(mat, lm.path, fnames=[f"{path} window {i}" for i in range(len(mat))])
                mats.append(mat[pick])
                whole.append(mat.mean(axis=0, keepdims=True))
                groups.append(lm.group)
        combined, _ = combine_groups(mats, groups, method=self.settings["ensemble"],
                                     rescale=bool(self.settings["rescale"]))
        file_scores, _ = combine_groups(whole, groups, method=self.settings["ensemble"],
                                        rescale=bool(self.settings["rescale"]))
        windows = pd.concat([pd.DataFrame({"start_s": ref[0], "end_s": ref[1]}), top_labels(combined, self.vocab, top_k),
                             pd.DataFrame(combined, columns=self.vocab)], axis=1)
        return Timeline(path=path, windows=windows, log_mel=mel_image, mel_seconds=mel_seconds, vocab=self.vocab,
                        scores=file_scores[0], member_scores=np.concatenate(whole), member_groups=groups)


def _readable(paths, on_error: str) -> tuple[list[Path], list[str]]:
    """The audio files of ``paths`` whose headers read (:func:`find_audio`, :func:`check_audio`) and one line
    per file left out; ``on_error="raise"``: the first such line raises AudioError."""
    if on_error not in ("skip", "raise"):
        raise DataError(f"on_error={on_error!r}: use 'skip' or 'raise'.")
    files, skipped = find_audio(paths)
    good = []
    for f in files:
        problem = check_audio(f)
        if problem is None:
            good.append(f)
        else:
            skipped.append(problem)
    if skipped and on_error == "raise":
        raise AudioError(skipped[0])
    return good, skipped


def _pooled(spec: np.ndarray, columns: int = PLOT_COLUMNS) -> np.ndarray:
    """(rows, frames) averaged over runs of frames to at most ``columns`` columns (for a picture)."""
    step = -(-spec.shape[-1] // columns)
    if step <= 1:
        return spec
    n = spec.shape[-1] // step * step
    pooled = spec[:, :n].reshape(spec.shape[0], -1, step).mean(axis=-1)
    if n < spec.shape[-1]:
        pooled = np.concatenate([pooled, spec[:, n:].mean(axis=-1, keepdims=True)], axis=1)
    return pooled
