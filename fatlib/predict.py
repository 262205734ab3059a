"""Inference: every clip's probabilities with test-time augmentation (:func:`predict_clips`), the test
split through fold/stage/model ensembles into ``submission.csv`` (:func:`predict_test`) and the
``predict`` command.

The parts live in their own modules and are importable from here too: crop plans in
:mod:`fatlib.tta`, feature sources in :mod:`fatlib.sources`, weights loading in
:mod:`fatlib.run_models`, the writer in :mod:`fatlib.submission`, evaluation in :mod:`fatlib.evaluation`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .batching import length_batches
from .errors import DataError, WeightsError
from .evaluation import evaluate
from .features import MelConfig, to_model_input
from .preflight import check_device
from .run_models import LoadedModel, find_models, weight_files
from .sources import CacheSource, WaveSource, make_source
from .submission import write_submission
from .tta import (
    DEFAULT_QUANTUM_FRAMES,
    DEFAULT_STEP_FRAMES,
    TTA_SCHEMES,
    check_positive,
    check_scheme,
    clip_crops,
    crop_plan,
    extend_frames,
    full_frames,
    sequential_starts,
    window_starts,
)

FEATURE_FRAMES_PER_PASS = 4096  # log-mel frames per feature pass (~0.15 GB of STFT at n_fft 2560)

__all__ = [
    "predict_clips", "predict_test", "ensemble_scores", "input_groups", "crop_probabilities", "default_device",
    "TTA_SCHEMES", "DEFAULT_STEP_FRAMES", "DEFAULT_QUANTUM_FRAMES", "crop_plan", "extend_frames", "full_frames",
    "sequential_starts", "window_starts", "LoadedModel", "find_models", "weight_files", "write_submission",
    "evaluate", "CacheSource", "WaveSource",
]


# --------------------------------------------------------------------------- prediction
def default_device(device=None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is not None:
        try:
            dev = torch.device(device)
        except RuntimeError as e:
            raise DataError(f"device={device!r} is not a torch device ({e}); use 'cpu', 'cuda' or 'cuda:0'.") from e
        return check_device(dev)  # one line when it is not available here (fatlib.preflight)
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
    frames in all); feature passes hold at most ``batch_size`` clips and, padded to their longest,
    at most ``FEATURE_FRAMES_PER_PASS`` frames (a longer clip is computed alone, its STFT in parts),
    so memory stays bounded whatever the clip lengths. ``sort_by_length``: process clips shortest first so
    that batches hold similar lengths (length bucketing, :func:`fatlib.batching.length_batches`).
    ``reduce="mean"`` returns (n_clips, n_classes), the mean over ``models``; ``reduce=None`` returns
    (n_models, n_clips, n_classes) for :mod:`fatlib.ensemble`. The models are moved to ``device``
    and set to eval mode, and run under ``torch.inference_mode`` (with float16 autocast on CUDA).
    """
    from .progress import progress as show_progress

    check_scheme(tta)
    check_positive(step_frames=step_frames, length_quantum_frames=length_quantum_frames, batch_size=batch_size)
    if reduce not in ("mean", None):
        raise DataError(f"reduce={reduce!r}: use 'mean' or None (then combine with fatlib.ensemble).")
    models = [models] if isinstance(models, torch.nn.Module) else list(models)
    if not models:
        raise WeightsError("predict_clips: no models given. Load them with fatlib.predict.find_models.")
    device = default_device(device)
    budget_frames = batch_size * cfg.crop_frames  # frames per forward pass
    feature_frames = min(budget_frames, FEATURE_FRAMES_PER_PASS)  # frames per feature pass (STFT memory)
    source = make_source(paths_or_cache, cfg, device, num_workers, frames_per_pass=feature_frames)
    n = len(source)
    if n == 0:
        raise DataError("predict_clips: no clips to predict; check the test split / file list.")
    groups = length_batches(source.frames(), max_items=batch_size, max_frames=feature_frames, sort=sort_by_length)
    sums = torch.zeros(len(models), n, 0)
    counts = torch.zeros(n)
    for m in models:
        m.to(device).eval()
    chunks = source.batches(groups)
    chunks = show_progress(chunks, total=len(groups), label="predict: batches of clips", show=progress)
    with torch.inference_mode():
        for idx, specs in chunks:
            crops = clip_crops(idx, specs, cfg, tta=tta, step_frames=step_frames, quantum_frames=length_quantum_frames)
            for _, clip_ids, probs in crop_probabilities(models, crops, cfg, batch_size=batch_size,
                                                         budget_frames=budget_frames, device=device):
                if sums.shape[-1] == 0:
                    sums = torch.zeros(len(models), n, probs.shape[-1])
                sums.index_add_(1, clip_ids, probs)
                counts.index_add_(0, clip_ids, torch.ones(len(clip_ids)))
    scores = (sums / counts.view(1, -1, 1)).numpy()
    return scores.mean(axis=0) if reduce == "mean" else scores


def crop_probabilities(models: Sequence[torch.nn.Module], crops: Sequence[tuple[int, torch.Tensor]], cfg: MelConfig, *,
                       batch_size: int, budget_frames: int, device: torch.device,
                       ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """The models' sigmoid probabilities of ``crops`` ((clip id, dB log-mel crop), from
    :func:`fatlib.tta.clip_crops`): (positions in ``crops``, clip ids, (n_models, B, n_classes)) per
    batch of equal-length crops. The one forward path of ``predict_clips`` and ``Tagger.timeline``;
    call it under ``torch.inference_mode`` with the models in eval mode on ``device``."""
    in_cfg = cfg.replace(normalize="none") if cfg.normalize == "clip" else cfg  # clips normalised in clip_crops
    for part, clip_ids, batch in _stacked_batches(crops, batch_size, budget_frames=budget_frames):
        yield part, clip_ids, _forward(models, to_model_input(batch, in_cfg), device)


def _stacked_batches(crops, batch_size: int, *, budget_frames: int) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """Crops of equal length stacked into batches of at most ``budget_frames`` frames in all (so a
    batch of long ``full`` clips holds fewer clips and needs no more memory than one of windows)."""
    lengths = [crop.shape[-1] for _, crop in crops]
    for part in length_batches(lengths, max_items=batch_size, max_frames=budget_frames, equal_lengths=True):
        yield part, torch.tensor([crops[i][0] for i in part]), torch.stack([crops[i][1] for i in part])


def _forward(models, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    outs = []
    for m in models:
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=device.type == "cuda"):
            logits = m(x.to(device))
        outs.append(torch.sigmoid(logits.float()).cpu())
    return torch.stack(outs)


# --------------------------------------------------------------------------- command line
def predict_test(
    data,
    weights,
    *,
    stages: Sequence[str] | None = None,
    tta: str = "windows",
    step_frames: int | None = None,
    ensemble: str = "mean",
    rescale: bool = False,
    out: str | os.PathLike = "submission.csv",
    **predict_kw,
) -> dict[str, Any]:
    """Predict ``data.test`` (a FatData) with every fold model under ``weights`` and write ``out``.

    Folds of one stage and model are averaged, then the stage/model groups combined with ``ensemble``
    ("mean" | "geometric", optional per-class ``rescale``). Models with different MelConfigs get their
    own features. ``step_frames`` (windows TTA): None uses each model's own, the step of its
    out-of-fold predictions stored in its weights (``DEFAULT_STEP_FRAMES`` for weights without it).
    When the test labels are known, ``<out stem>_eval/`` holds the evaluation.
    Returns {"submission": path, "groups": [...], "evaluation": dict | None}.
    """
    if not data.test.fnames:
        listing = data.root / "sample_submission.csv"
        raise DataError(f"{listing if listing.is_file() else data.test.audio_dir}: lists no test clips (header only?), "
                        "so there is nothing to predict; use the data set's sample_submission.csv with one row per "
                        "test clip.")
    loaded = find_models(weights, vocab=data.vocab, stages=stages)
    combined = ensemble_scores(loaded, data.test.paths(), tta=tta, step_frames=step_frames, ensemble=ensemble,
                               rescale=rescale, fnames=data.test.fnames, **predict_kw)
    groups = [lm.group for members in input_groups(loaded, step_frames=step_frames).values() for lm in members]
    out = Path(out)
    sample = data.root / "sample_submission.csv"
    write_submission(out, data.test.fnames, combined, data.vocab, sample if sample.exists() else None)
    evaluation = None
    if data.test_targets is not None:
        evaluation = evaluate(
            data.test_targets, combined, data.vocab, usage=data.test_usage, out_dir=out.parent / f"{out.stem}_eval"
        )
    return {"submission": out, "groups": list(dict.fromkeys(groups)), "n_models": len(loaded), "evaluation": evaluation}


def input_groups(loaded: Sequence[LoadedModel], *, step_frames: int | None = None,
                 ) -> dict[tuple[str, int], list[LoadedModel]]:
    """The loaded models by (MelConfig key, TTA step): each group shares its features and crops.
    ``step_frames`` None: each model's own (stored in its weights; ``DEFAULT_STEP_FRAMES`` for older ones)."""
    by_input: dict[tuple[str, int], list[LoadedModel]] = {}
    for lm in loaded:
        step = step_frames if step_frames is not None else lm.tta_step_frames or DEFAULT_STEP_FRAMES
        by_input.setdefault((lm.mel_config.key(), step), []).append(lm)
    return by_input


def ensemble_scores(
    loaded: Sequence[LoadedModel],
    paths_or_cache,
    *,
    tta: str = "windows",
    step_frames: int | None = None,
    ensemble: str = "mean",
    rescale: bool = False,
    fnames: Sequence[str] | None = None,
    **predict_kw,
) -> np.ndarray:
    """(n_clips, n_classes) scores of the loaded fold models (:func:`find_models`): :func:`predict_clips`
    per input group (:func:`input_groups`), each model's scores checked (:func:`check_finite_scores`,
    naming ``fnames``), folds of one stage and model averaged, then the groups combined with
    ``ensemble`` and ``rescale`` (:func:`fatlib.ensemble.combine_groups`). The one inference path of
    ``predict_test`` (the ``predict`` command, the Kaggle kernel) and :class:`fatlib.tagger.Tagger`."""
    from .ensemble import combine_groups

    mats, groups = [], []
    for (_, step), members in input_groups(loaded, step_frames=step_frames).items():
        scores = predict_clips(
            [lm.model for lm in members], paths_or_cache, members[0].mel_config, tta=tta, step_frames=step,
            reduce=None, **predict_kw,
        )
        for lm, mat in zip(members, scores):
            check_finite_scores(mat, lm.path, fnames=fnames)
        mats += list(scores)
        groups += [lm.group for lm in members]
    combined, _ = combine_groups(mats, groups, method=ensemble, rescale=rescale)
    return combined


def check_submission_out(out, data, weights, *, input_roots=()) -> None:
    """``out`` and its evaluation folder fall on no input (the data set, the weights' stage folders, an
    input root), and the evaluation folder's path is not a file: checked before anything is written."""
    from .guards import (
        check_folder_slot,
        check_output_not_input,
        check_replaceable_file,
        data_inputs,
        weights_inputs,
    )

    inputs = [*data_inputs(data), *weights_inputs(weights)]
    check_output_not_input(out, inputs=inputs, what="--out file", within=input_roots)
    check_replaceable_file(out)
    if data.test_targets is not None:
        eval_dir = Path(out).parent / f"{Path(out).stem}_eval"
        check_folder_slot(eval_dir, what="evaluation folder of --out")
        check_output_not_input(eval_dir, inputs=inputs, what="evaluation folder of --out", folder=True)


def check_finite_scores(scores: np.ndarray, model_path, *, fnames: Sequence[str] | None = None) -> None:
    """WeightsError naming the weights file whose scores (n_clips, n_classes) hold NaN or infinity."""
    bad = np.flatnonzero(~np.isfinite(scores).all(axis=-1))
    if len(bad):
        which = f" (e.g. {[fnames[i] for i in bad[:3]]})" if fnames is not None else ""
        raise WeightsError(
            f"{model_path}: this model's scores are NaN or infinite for {len(bad)} of {len(scores)} clips{which}; "
            "its weights are damaged or its training diverged. Retrain that fold, or leave its stage out (--stages)."
        )
