"""Inference: test-time augmentation (TTA) over a clip's log-mel, batched features, fold/stage/model
ensembles, ``submission.csv`` and evaluation against known test labels.

TTA schemes (each clip's log-mel is (n_mels, frames); ``width`` = the training crop, ``cfg.crop_frames``):

- ``windows`` (12th place): crops of ``width`` frames every ``step_frames`` (48) frames, plus one
  aligned to the clip's end so the whole clip is covered; probabilities averaged.
- ``sequential`` (95th place): every non-overlapping crop; the last partial crop is aligned to the
  clip's end (it overlaps its neighbour) instead of wrapping to the start, so no frame of the start is
  counted twice.
- ``full`` (3rd place): the whole clip at once, cut (centred) to a multiple of ``length_quantum_frames``
  so that clips of similar length share a batch (length bucketing). The cut depends only on the
  clip, never on the batch, so batched and one-by-one scores agree.

Clips shorter than ``width`` frames are extended per the preset (``cfg.min_length``): the waveform
path extends the audio with :func:`fatlib.features.clip_wave`, like the cache; a shorter cached
spectrogram is tiled ("repeat") or centred between frames at the clip's own floor ("pad": the value
zero-padded audio takes after the 80 dB clamp).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .errors import AudioError, DataError, WeightsError
from .features import MelConfig, clip_wave, normalize, to_model_input

TTA_SCHEMES = ("windows", "sequential", "full")
DEFAULT_STEP_FRAMES = 48  # 12th place: one window every 48 frames
DEFAULT_QUANTUM_FRAMES = 16  # "full": lengths cut to a multiple of this (~0.25 s at hop 694)


# --------------------------------------------------------------------------- crop plans (pure)
def window_starts(n_frames: int, *, width_frames: int, step_frames: int = DEFAULT_STEP_FRAMES) -> np.ndarray:
    """Start frames of the ``windows`` scheme: every ``step_frames`` plus one ending at the clip's end.

    A clip of at most ``width_frames`` frames gets the single start 0 (it is extended to the width).
    """
    _check_positive(n_frames=n_frames, width_frames=width_frames, step_frames=step_frames)
    last = n_frames - width_frames
    if last <= 0:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, last + 1, step_frames, dtype=np.int64)
    return starts if starts[-1] == last else np.append(starts, last)


def sequential_starts(n_frames: int, *, width_frames: int) -> np.ndarray:
    """Start frames of the ``sequential`` scheme: 0, width, 2*width, ... and, when frames remain, one
    crop aligned to the clip's end. Every frame is covered once except the end crop's overlap."""
    _check_positive(n_frames=n_frames, width_frames=width_frames)
    full_crops = max(n_frames // width_frames, 1)
    starts = np.arange(full_crops, dtype=np.int64) * width_frames
    last = n_frames - width_frames
    return starts if last <= starts[-1] else np.append(starts, last)


def full_frames(n_frames: int, *, width_frames: int, quantum_frames: int = DEFAULT_QUANTUM_FRAMES) -> int:
    """Frames the ``full`` scheme feeds the model: ``n_frames`` cut down to a multiple of
    ``quantum_frames``, at least ``width_frames`` (shorter clips are extended to the width)."""
    _check_positive(n_frames=n_frames, width_frames=width_frames, quantum_frames=quantum_frames)
    return max(width_frames, n_frames - n_frames % quantum_frames)


def crop_plan(
    n_frames: int,
    *,
    tta: str,
    width_frames: int,
    step_frames: int = DEFAULT_STEP_FRAMES,
    quantum_frames: int = DEFAULT_QUANTUM_FRAMES,
) -> list[tuple[int, int]]:
    """The crops ``(start, length)`` in frames that scheme ``tta`` takes from a clip of ``n_frames``
    frames (after extension to ``width_frames``). Their probabilities are averaged with equal weight."""
    _check_tta(tta)
    n = max(n_frames, width_frames)
    if tta == "windows":
        return [(int(s), width_frames) for s in window_starts(n, width_frames=width_frames, step_frames=step_frames)]
    if tta == "sequential":
        return [(int(s), width_frames) for s in sequential_starts(n, width_frames=width_frames)]
    length = full_frames(n, width_frames=width_frames, quantum_frames=quantum_frames)
    return [((n - length) // 2, length)]


def extend_frames(spec: torch.Tensor, *, width_frames: int, mode: str) -> torch.Tensor:
    """Extend a (n_mels, frames) dB spectrogram to ``width_frames`` frames: "repeat" tiles it,
    "pad" centres it between frames at its own minimum (what silence becomes after the 80 dB clamp)."""
    n = spec.shape[-1]
    if n >= width_frames:
        return spec
    if mode == "repeat":
        return spec.repeat(1, -(-width_frames // n))[:, :width_frames]
    left = (width_frames - n) // 2
    out = spec.new_full((spec.shape[0], width_frames), float(spec.min()))
    out[:, left : left + n] = spec
    return out


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise DataError(f"{name} must be a positive integer (frames), got {v!r}")


def _check_tta(tta: str) -> None:
    if tta not in TTA_SCHEMES:
        raise DataError(f"TTA scheme {tta!r} is unknown: use one of {', '.join(TTA_SCHEMES)}.")


# --------------------------------------------------------------------------- feature sources
def _audio_seconds(path: Path) -> float:
    import soundfile as sf

    if not path.is_file():
        raise AudioError(f"{path}: no such audio file; check the path and the data directory")
    try:
        return float(sf.info(str(path)).duration)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{path}: cannot read the audio header ({e}); re-encode it as WAV or drop it") from e


class _WaveSource:
    """Log-mels computed in batches with :class:`fatlib.features.LogMel` on ``device``; waveforms are
    decoded by ``num_workers`` threads, one chunk ahead of the model."""

    def __init__(self, paths: Sequence, cfg: MelConfig, device: torch.device, num_workers: int):
        from .features import LogMel

        self.paths = [Path(p) for p in paths]
        self.cfg = cfg
        self.device = device
        self.mel = LogMel(cfg).to(device)
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.paths)

    def sizes(self) -> np.ndarray:
        return np.array([_audio_seconds(p) for p in self.paths])

    def chunks(self, order: np.ndarray, chunk_size: int) -> Iterator[tuple[np.ndarray, list[torch.Tensor]]]:
        groups = [order[i : i + chunk_size] for i in range(0, len(order), chunk_size)]
        with ThreadPoolExecutor(max_workers=self.num_workers) as pool:
            pending = [pool.submit(clip_wave, self.paths[i], self.cfg) for i in groups[0]] if groups else []
            for k, idx in enumerate(groups):
                waves = [f.result() for f in pending]
                if k + 1 < len(groups):
                    pending = [pool.submit(clip_wave, self.paths[i], self.cfg) for i in groups[k + 1]]
                yield idx, self._log_mels(waves)

    def _log_mels(self, waves: list[np.ndarray]) -> list[torch.Tensor]:
        # zero-padding the end changes no frame of a shorter clip (the STFT pads with zeros too)
        longest = max(len(w) for w in waves)
        batch = torch.zeros(len(waves), longest)
        for i, w in enumerate(waves):
            batch[i, : len(w)] = torch.from_numpy(w)
        specs = self.mel(batch.to(self.device))
        return [specs[i, :, : 1 + len(w) // self.cfg.hop_length] for i, w in enumerate(waves)]


class _CacheSource:
    """Log-mels read from a :class:`fatlib.cache.FeatureCache` built with the same MelConfig."""

    def __init__(self, cache, cfg: MelConfig, device: torch.device):
        if cache.cfg.to_dict() != cfg.to_dict():
            diff = {k: (v, cfg.to_dict()[k]) for k, v in cache.cfg.to_dict().items() if cfg.to_dict()[k] != v}
            raise DataError(
                f"feature cache {getattr(cache, 'index_path', '')} was built with other settings (cache, models): {diff}. "
                "Rebuild the cache with the models' MelConfig or predict from the audio files."
            )
        self.cache = cache
        self.device = device

    def __len__(self) -> int:
        return len(self.cache)

    def sizes(self) -> np.ndarray:
        return np.asarray(self.cache.lengths, dtype=np.float64)

    def chunks(self, order: np.ndarray, chunk_size: int) -> Iterator[tuple[np.ndarray, list[torch.Tensor]]]:
        for i in range(0, len(order), chunk_size):
            idx = order[i : i + chunk_size]
            yield idx, [torch.from_numpy(np.asarray(self.cache[j], dtype=np.float32)).to(self.device) for j in idx]


# --------------------------------------------------------------------------- prediction
def default_device(device=None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is not None:
        try:
            return torch.device(device)
        except RuntimeError as e:
            raise DataError(f"device={device!r} is not a torch device ({e}); use 'cpu', 'cuda' or 'cuda:0'.") from e
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def predict_clips(
    models: torch.nn.Module | Sequence[torch.nn.Module],
    paths_or_cache,
    cfg: MelConfig,
    *,
    tta: str = "windows",
    step_frames: int = DEFAULT_STEP_FRAMES,
    length_quantum_frames: int = DEFAULT_QUANTUM_FRAMES,
    sort_by_length: bool = True,
    batch_size: int = 64,
    device=None,
    num_workers: int | None = None,
    reduce: str | None = "mean",
    progress: bool = True,
) -> np.ndarray:
    """Sigmoid probabilities of every clip, in input order.

    ``paths_or_cache``: audio file paths (features computed here in batches with LogMel on ``device``)
    or a FeatureCache built with ``cfg``. ``tta``: "windows" | "sequential" | "full" (module doc).
    ``batch_size``: crops of the training width per forward pass (longer ``full`` crops: as many
    frames in all), and clips per feature batch. ``sort_by_length``: process
    clips shortest first so that batches hold similar lengths (length bucketing).
    ``reduce="mean"`` returns (n_clips, n_classes), the mean over ``models``; ``reduce=None`` returns
    (n_models, n_clips, n_classes) for :mod:`fatlib.ensemble`. The models are moved to ``device``
    and set to eval mode, and run under ``torch.inference_mode`` (with float16 autocast on CUDA).
    """
    from fastprogress.fastprogress import progress_bar

    _check_tta(tta)
    _check_positive(step_frames=step_frames, length_quantum_frames=length_quantum_frames, batch_size=batch_size)
    if reduce not in ("mean", None):
        raise DataError(f"reduce={reduce!r}: use 'mean' or None (then combine with fatlib.ensemble).")
    models = [models] if isinstance(models, torch.nn.Module) else list(models)
    if not models:
        raise WeightsError("predict_clips: no models given. Load them with fatlib.predict.find_models.")
    device = default_device(device)
    source = _make_source(paths_or_cache, cfg, device, num_workers)
    n = len(source)
    if n == 0:
        raise DataError("predict_clips: no clips to predict; check the test split / file list.")
    order = np.argsort(source.sizes(), kind="stable") if sort_by_length else np.arange(n)
    sums = torch.zeros(len(models), n, 0)
    counts = torch.zeros(n)
    for m in models:
        m.to(device).eval()
    chunks = source.chunks(order, batch_size)
    if progress:
        chunks = progress_bar(chunks, total=-(-n // batch_size))
    in_cfg = cfg.replace(normalize="none") if cfg.normalize == "clip" else cfg  # clips normalised in _crops
    with torch.inference_mode():
        for idx, specs in chunks:
            crops = _crops(specs, idx, cfg, tta=tta, step_frames=step_frames, quantum_frames=length_quantum_frames)
            for clip_ids, batch in _batches_by_length(crops, batch_size, width_frames=cfg.crop_frames):
                probs = _forward(models, to_model_input(batch, in_cfg), device)  # (n_models, B, C)
                if sums.shape[-1] == 0:
                    sums = torch.zeros(len(models), n, probs.shape[-1])
                sums.index_add_(1, clip_ids, probs)
                counts.index_add_(0, clip_ids, torch.ones(len(clip_ids)))
    scores = (sums / counts.view(1, -1, 1)).numpy()
    return scores.mean(axis=0) if reduce == "mean" else scores


def _make_source(paths_or_cache, cfg: MelConfig, device: torch.device, num_workers: int | None):
    if not isinstance(cfg, MelConfig):
        raise DataError(f"cfg must be a fatlib.features.MelConfig, got {type(cfg).__name__}.")
    if hasattr(paths_or_cache, "lengths") and hasattr(paths_or_cache, "cfg"):
        return _CacheSource(paths_or_cache, cfg, device)
    if isinstance(paths_or_cache, (str, os.PathLike)):
        raise DataError(f"{paths_or_cache}: give a list of audio paths or a FeatureCache, not a single path.")
    workers = num_workers or min(4, os.cpu_count() or 1)
    return _WaveSource(list(paths_or_cache), cfg, device, workers)


def _crops(specs, idx, cfg: MelConfig, *, tta, step_frames, quantum_frames) -> list[tuple[int, torch.Tensor]]:
    out = []
    for clip, spec in zip(idx, specs):
        if cfg.normalize == "clip":  # whole-clip statistics, then crops (model input then uses "none")
            spec = normalize(spec, cfg)
        spec = extend_frames(spec, width_frames=cfg.crop_frames, mode=cfg.min_length)
        plan = crop_plan(
            spec.shape[-1], tta=tta, width_frames=cfg.crop_frames, step_frames=step_frames,
            quantum_frames=quantum_frames,
        )
        out.extend((int(clip), spec[:, s : s + length]) for s, length in plan)
    return out


def _batches_by_length(crops, batch_size: int, *, width_frames: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Crops of equal length stacked into batches of at most ``batch_size * width_frames`` frames in
    all (so a batch of long ``full`` clips holds fewer clips and needs no more memory than one of windows)."""
    by_length: dict[int, list] = {}
    for clip, crop in crops:
        by_length.setdefault(crop.shape[-1], []).append((clip, crop))
    for length, group in by_length.items():
        per_batch = max(1, batch_size * width_frames // length)
        for i in range(0, len(group), per_batch):
            part = group[i : i + per_batch]
            yield torch.tensor([c for c, _ in part]), torch.stack([x for _, x in part])


def _forward(models, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    outs = []
    for m in models:
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=device.type == "cuda"):
            logits = m(x.to(device))
        outs.append(torch.sigmoid(logits.float()).cpu())
    return torch.stack(outs)


# --------------------------------------------------------------------------- weights
@dataclass
class LoadedModel:
    """A model built from a weights file, with where it came from."""

    model: torch.nn.Module
    meta: dict[str, Any]
    path: Path
    stage: str

    @property
    def mel_config(self) -> MelConfig:
        return MelConfig.from_dict(self.meta["mel_config"])

    @property
    def group(self) -> str:
        """Ensemble group: the stage and the model name (its folds are averaged first)."""
        return f"{self.stage}/{self.meta['model_name']}"


def weight_files(weights: str | os.PathLike | Sequence, *, stages: Sequence[str] | None = None) -> list[Path]:
    """Every ``fold*.safetensors`` under ``weights``: stage folders, or run folders (then their stage
    sub-folders, only ``stages`` when given). WeightsError when a folder or stage has none."""
    roots = [Path(weights)] if isinstance(weights, (str, os.PathLike)) else [Path(w) for w in weights]
    files: list[Path] = []
    for root in roots:
        if not root.is_dir():
            raise WeightsError(f"{root}: no such weights folder. Pass weights/<run> or weights/<run>/<stage>.")
        if sorted(root.glob("fold*.safetensors")):
            files += sorted(root.glob("fold*.safetensors"))
            continue
        available = sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("fold*.safetensors")))
        wanted = list(stages) if stages else available
        missing = [s for s in wanted if s not in available]
        if missing or not wanted:
            raise WeightsError(
                f"{root}: no fold*.safetensors for stage(s) {missing or '(any)'}; stages with weights here: "
                f"{available or 'none'}. Train them first or fix --weights/--stages."
            )
        for s in wanted:
            files += sorted((root / s).glob("fold*.safetensors"))
    return files


def find_models(
    weights: str | os.PathLike | Sequence,
    *,
    vocab: Sequence[str],
    stages: Sequence[str] | None = None,
    model_name: str | None = None,
    mel_config: MelConfig | None = None,
) -> list[LoadedModel]:
    """Load every fold model under ``weights`` (see :func:`weight_files`) with
    :func:`fatlib.weights.build_model`, checking each file's vocabulary against ``vocab`` (the data's)
    and, when given, its model name and MelConfig. A mismatch raises WeightsError naming the file."""
    from .weights import build_model, check_compatible, read_metadata

    loaded = []
    for path in weight_files(weights, stages=stages):
        meta = read_metadata(path)
        check_compatible(
            path, meta, model_name=model_name, vocab=vocab,
            mel_config=mel_config.to_dict() if mel_config is not None else None,
        )
        try:
            MelConfig.from_dict(meta["mel_config"])
        except (TypeError, ValueError) as e:
            raise WeightsError(f"{path}: the stored feature settings are invalid ({e}); re-save the weights.") from e
        model, meta = build_model(path)
        loaded.append(LoadedModel(model=model.eval(), meta=meta, path=path, stage=path.parent.name))
    return loaded


# --------------------------------------------------------------------------- submission and evaluation
def write_submission(
    path: str | os.PathLike,
    fnames: Sequence[str],
    scores: np.ndarray,
    vocab: Sequence[str],
    sample_submission: str | os.PathLike | None,
) -> Path:
    """Write ``submission.csv`` in ``sample_submission``'s format: its fnames in its order, its columns.

    Raises DataError on a clip of the sample submission without scores (or scores for a clip it does
    not list), duplicate fnames, a vocabulary that is not its columns, NaN, or scores outside [0, 1].
    With ``sample_submission=None`` the columns are ``fname`` + ``vocab`` and the rows ``fnames``.
    """
    import pandas as pd

    from .io import write_csv

    fnames = [str(f) for f in fnames]
    vocab = list(vocab)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(fnames), len(vocab)):
        raise DataError(
            f"{path}: scores have shape {scores.shape}, expected ({len(fnames)} clips, {len(vocab)} classes)."
        )
    dupes = sorted({f for f in fnames if fnames.count(f) > 1}) if len(set(fnames)) < len(fnames) else []
    if dupes:
        raise DataError(f"{path}: clips predicted more than once: {dupes[:5]}; pass each test clip once.")
    bad = [fnames[i] for i in np.flatnonzero(~np.isfinite(scores).all(axis=1))]
    if bad:
        raise DataError(f"{path}: NaN or infinite scores for {len(bad)} clip(s), e.g. {bad[:5]}; fix the model or features.")
    if scores.size and (scores.min() < 0 or scores.max() > 1):
        raise DataError(
            f"{path}: scores range over [{scores.min():.4g}, {scores.max():.4g}], outside [0, 1]; "
            "submit sigmoid probabilities (predict_clips does), not logits."
        )
    if sample_submission is None:
        order, columns = list(range(len(fnames))), vocab
    else:
        from .data import read_table

        sample = read_table(sample_submission, columns=("fname",))  # BOM, spaces, a trailing comma: as the data
        columns = list(sample.columns[1:])
        if list(sample.columns[:1]) != ["fname"] or columns != vocab:
            raise DataError(
                f"{sample_submission}: columns are {list(sample.columns[:3])}... ({len(columns)} classes); "
                f"expected 'fname' + the {len(vocab)} classes of the vocabulary in its order. "
                "Predict with weights trained on this data set's vocabulary."
            )
        row = {f: i for i, f in enumerate(fnames)}
        missing = [f for f in sample["fname"] if f not in row]
        extra = sorted(set(fnames) - set(sample["fname"]))
        if missing or extra:
            raise DataError(
                f"{path}: {len(missing)} clip(s) of {sample_submission} have no scores (e.g. {missing[:5]}) and "
                f"{len(extra)} scored clip(s) are not in it (e.g. {extra[:5]}). Predict the whole test split."
            )
        order = [row[f] for f in sample["fname"]]
    df = pd.DataFrame(scores[order], columns=columns)
    df.insert(0, "fname", [fnames[i] for i in order])
    return write_csv(path, df)


def evaluate(
    truth: np.ndarray,
    scores: np.ndarray,
    vocab: Sequence[str],
    *,
    usage: Sequence[str] | None = None,
    out_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """lwlrap of ``scores`` against multi-hot ``truth``: overall, per ``usage`` split (e.g. Public /
    Private) and per class. With ``out_dir``: ``evaluation.json`` and ``per_class_lwlrap.png``."""
    from .metrics import lwlrap, per_class_lwlrap

    truth, scores = np.asarray(truth), np.asarray(scores)
    if truth.shape != scores.shape or truth.shape[1:] != (len(vocab),):
        raise DataError(
            f"evaluate: truth {truth.shape} and scores {scores.shape} must both be (n_clips, {len(vocab)} classes)."
        )
    values, weights = per_class_lwlrap(truth, scores)
    result: dict[str, Any] = {
        "lwlrap": float(lwlrap(truth, scores)),
        "n_clips": int(len(truth)),
        # a class without positive labels has no lwlrap: None (JSON null), weight 0
        "per_class": {
            c: {"lwlrap": None if np.isnan(v) else float(v), "weight": float(w)}
            for c, v, w in zip(vocab, values, weights)
        },
    }
    if usage is not None:
        usage = np.asarray(usage).astype(str)
        if usage.shape != (len(truth),):
            raise DataError(f"evaluate: {usage.shape[0]} usage values for {len(truth)} clips; give one per clip.")
        result["by_usage"] = {
            u: float(lwlrap(truth[usage == u], scores[usage == u])) for u in sorted(set(usage.tolist()))
        }
    if out_dir is not None:
        from .io import write_json
        from .plots import plot_per_class, save_figure

        out_dir = Path(out_dir)
        write_json(out_dir / "evaluation.json", result)
        fig = plot_per_class(values, list(vocab), weights=weights, xlabel=f"lwlrap (overall {result['lwlrap']:.4f})")
        save_figure(fig, out_dir / "per_class_lwlrap.png")
    return result


# --------------------------------------------------------------------------- command line
def predict_test(
    data,
    weights,
    *,
    stages: Sequence[str] | None = None,
    tta: str = "windows",
    ensemble: str = "mean",
    rescale: bool = False,
    out: str | os.PathLike = "submission.csv",
    **predict_kw,
) -> dict[str, Any]:
    """Predict ``data.test`` (a FatData) with every fold model under ``weights`` and write ``out``.

    Folds of one stage and model are averaged, then the stage/model groups combined with ``ensemble``
    ("mean" | "geometric", optional per-class ``rescale``). Models with different MelConfigs get their
    own features. When the test labels are known, ``<out stem>_eval/`` holds the evaluation.
    Returns {"submission": path, "groups": [...], "evaluation": dict | None}.
    """
    from .ensemble import combine_groups

    if not data.test.fnames:
        listing = data.root / "sample_submission.csv"
        raise DataError(f"{listing if listing.is_file() else data.test.audio_dir}: lists no test clips (header only?), "
                        "so there is nothing to predict; use the data set's sample_submission.csv with one row per "
                        "test clip.")
    loaded = find_models(weights, vocab=data.vocab, stages=stages)
    by_cfg: dict[str, list[LoadedModel]] = {}
    for lm in loaded:
        by_cfg.setdefault(lm.mel_config.key(), []).append(lm)
    mats, groups = [], []
    for members in by_cfg.values():
        scores = predict_clips(
            [lm.model for lm in members], data.test.paths(), members[0].mel_config, tta=tta, reduce=None, **predict_kw
        )
        for lm, mat in zip(members, scores):
            _check_finite(mat, lm.path, fnames=data.test.fnames)
        mats += list(scores)
        groups += [lm.group for lm in members]
    combined, _ = combine_groups(mats, groups, method=ensemble, rescale=rescale)
    out = Path(out)
    sample = data.root / "sample_submission.csv"
    write_submission(out, data.test.fnames, combined, data.vocab, sample if sample.exists() else None)
    evaluation = None
    if data.test_targets is not None:
        evaluation = evaluate(
            data.test_targets, combined, data.vocab, usage=data.test_usage, out_dir=out.parent / f"{out.stem}_eval"
        )
    return {"submission": out, "groups": list(dict.fromkeys(groups)), "n_models": len(loaded), "evaluation": evaluation}


def _check_finite(scores: np.ndarray, path: Path, *, fnames: Sequence[str]) -> None:
    """WeightsError naming the weights file whose scores (n_clips, n_classes) hold NaN or infinity."""
    bad = np.flatnonzero(~np.isfinite(scores).all(axis=1))
    if len(bad):
        raise WeightsError(
            f"{path}: this model's scores are NaN or infinite for {len(bad)} of {len(fnames)} clips (e.g. "
            f"{[fnames[i] for i in bad[:3]]}); its weights are damaged or its training diverged. Retrain that "
            "fold, or leave its stage out (--stages)."
        )


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict the test split with trained folds (TTA, ensembles) and write submission.csv",
        description="Predict the test split with every fold*.safetensors of the chosen run/stages, "
        "average folds, combine stages/models, write submission.csv (and evaluate when test labels exist).",
    )
    p.add_argument("--data", default=None, help="data folder (default: input/, then the Kaggle path)")
    p.add_argument("--weights", required=True, nargs="+", help="weights/<run> or stage folders")
    p.add_argument("--stages", nargs="+", default=None, help="stage sub-folders of the run (default: all)")
    p.add_argument("--tta", choices=TTA_SCHEMES, default="windows",
                   help="test-time augmentation: windows every --step-frames (12th), sequential crops (95th), "
                   "full clip (3rd); default: windows")
    p.add_argument("--step-frames", type=int, default=DEFAULT_STEP_FRAMES, help="windows: frames between windows")
    p.add_argument("--batch-size", type=int, default=64, help="crops per forward pass")
    p.add_argument("--ensemble", choices=("mean", "geometric"), default="mean", help="across stages/models")
    p.add_argument("--rescale", action="store_true", help="rescale each class to [0, 1] before combining (9th place)")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    p.add_argument("--out", default="submission.csv",
                   help="submission CSV to write (default: submission.csv; evaluation beside it when labels exist)")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from .data import FatData
    from .kaggle import verify_shipped
    from .preflight import check_writable, submission_bytes
    from .runs import Roots

    default_device(args.device)  # a bad --device fails before any work
    data = FatData.from_dir(args.data)
    weights = Roots(args.input_roots).find_weights(args.weights, stages=args.stages)  # stage folders
    verify_shipped(weights)  # weights read from a fatlib dataset: its files against manifest.json first
    check_writable(Path(args.out).parent, expected_bytes=submission_bytes(len(data.test.fnames), len(data.vocab)),
                   what="--out folder")
    result = predict_test(
        data, weights, stages=None, tta=args.tta, ensemble=args.ensemble, rescale=args.rescale,
        out=args.out, step_frames=args.step_frames, batch_size=args.batch_size, device=args.device,
    )
    print(f"wrote {result['submission']} ({len(data.test.fnames)} clips, {result['n_models']} models, "
          f"groups {result['groups']})")
    if result["evaluation"] is not None:
        ev = result["evaluation"]
        print(f"test lwlrap {ev['lwlrap']:.4f}" + "".join(f", {k} {v:.4f}" for k, v in ev.get("by_usage", {}).items()))
    return 0
