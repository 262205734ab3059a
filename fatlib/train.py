"""One training stage over K folds: ``StageConfig`` and ``train_stage``.

For each fold k a fastai Learner is trained (``fit_one_cycle``) on the stage's training set minus
fold k, validated on curated fold k with the whole-epoch lwlrap, and used to predict out-of-fold
probabilities (windowed TTA) for curated fold k and noisy fold k. Folds are made once per run
(``weights/<run>/folds_curated.csv``, ``folds_noisy.csv``) and reused by every stage, so "fold k's
model never saw fold k" holds across stages (``init_from`` starts fold k from the earlier stage's
fold k). Output layout: ``weights/README.md``. A finished fold (``fold{k}.done``) is skipped on rerun;
an interrupted one restarts from scratch.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import distrib
from .distrib import is_main_process
from .errors import DataError
from .folds import curated_folds, noisy_folds, read_selection
from .io import save_npy, write_csv, write_json, write_text

TRAIN_ON = ("noisy", "curated", "curated+selected")
KEEP = ("last", "best")
# learning-rate schedules: fastai's one-cycle; linear warm-up over pct_start then cosine to 0 (9th place);
# constant lr cut by fastai's ReduceLROnPlateau when the validation loss stalls (fine-tuning)
SCHEDULES = ("one_cycle", "warmup_cosine", "plateau")
# fields that may change between runs of a stage without making its finished folds stale
RUNTIME_FIELDS = ("n_workers", "cache_jobs", "mixed_precision", "fold_parallel", "channels_last")
MAX_WORKERS = 8


def default_n_workers() -> int:
    """DataLoader worker processes by default: one per usable CPU core, at most :data:`MAX_WORKERS`;
    0 (load in the training process) on a single core."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if n <= 1 else min(MAX_WORKERS, n)


@dataclass
class StageConfig:
    """Everything that defines a stage. Units: ``lr`` peak learning rate of the one-cycle schedule,
    ``wd`` decoupled weight decay, ``epochs`` passes over the training split, ``batch_size`` clips,
    ``tta_step_frames`` frames between TTA windows (None: 3/8 of the crop, 48 for 128),
    ``pct_start`` share of the steps spent warming the learning rate up, ``grad_clip`` maximum
    gradient norm (None: no clipping), ``schedule`` one of :data:`SCHEDULES` ("warmup_cosine": a
    linear warm-up over ``pct_start`` of the steps, then cosine decay to 0, the 9th place's 10 % warm-up;
    "plateau": ``lr`` held and divided by 10 by fastai's ``ReduceLROnPlateau`` after an epoch without a
    lower validation loss). ``wave_effects``: effect -> probability for the on-the-fly waveform
    effects (``fatlib.wave_augment``; empty: WaveAugment's defaults), ``wave_p`` the share of clips
    that get any effect.

    ``auto_scale`` (default): ``batch_size``, ``lr`` and ``epochs`` are the recipe's values for a data
    set the size of FSDKaggle2019, and are scaled to the data at hand (fewer clips: smaller batches,
    at least ``min_steps`` optimizer steps per fold, a narrower model when ``model_kwargs`` does not
    set ``width_mult``; see :mod:`fatlib.autoscale`); what was chosen is printed and logged.
    ``init_bias``: the output layer's bias starts at the log-odds of each class's share of the
    training clips (a model that starts out knowing which classes are rare; not with ``init_from``).
    ``keep``: the weights of the "last" epoch, or of the "best" by validation lwlrap.
    ``sound_mix_p``: share of training clips mixed, as sounds (power sum of the two log-mels, at
    -6..+6 dB), with 1..``sound_mix_max`` other clips of the same part, the labels joined: teaches
    overlapping sounds (fatlib's addition, not in the write-ups; feature-cache path; 0: off)."""

    name: str
    model: str = "cnn_model_1"
    model_kwargs: dict = field(default_factory=dict)
    preset: str = "cnn128"
    mel: dict = field(default_factory=dict)  # MelConfig overrides of the preset
    loss: str = "bce"
    augment: list = field(default_factory=lambda: ["specmix"])
    epochs: int = 10
    lr: float = 1e-3
    wd: float = 1e-2
    batch_size: int = 64
    n_folds: int = 5
    folds_seed: int = 42
    train_on: str = "curated"
    selection_csv: str | None = None
    init_from: str | None = None  # a stage folder: its fold{k}.safetensors starts fold k
    mixed_precision: bool = True  # fastai to_fp16, on CUDA only
    seed: int = 0
    wave_augment: bool = False  # True: on-the-fly waveforms + WaveAugment, log-mels on the device
    n_workers: int = field(default_factory=default_n_workers)  # DataLoader processes (0: in this one)
    cache_jobs: int | None = None  # processes building the feature cache (None: every core)
    tta_step_frames: int | None = None
    auto_scale: bool = True
    min_steps: int = 600
    init_bias: bool = True
    keep: str = "last"
    pct_start: float = 0.25
    grad_clip: float | None = None
    sound_mix_p: float = 0.5
    sound_mix_max: int = 1
    fold_parallel: bool = False  # launched as W processes: process r trains folds r, r+W, ... (fatlib.distrib)
    schedule: str = "one_cycle"
    wave_effects: dict = field(default_factory=dict)
    wave_p: float = 0.75
    channels_last: bool = False  # model and inputs in channels-last memory format on GPUs (always on CPUs: faster there)

    def __post_init__(self):
        self.validate()

    def validate(self) -> StageConfig:
        def bad(what, fix):
            raise DataError(f"StageConfig {self.name!r}: {what}; {fix}")

        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            bad(f"name={self.name!r}", "use a non-empty folder name without '/'")
        if self.train_on not in TRAIN_ON:
            bad(f"train_on={self.train_on!r}", f"use one of {TRAIN_ON}")
        if (self.train_on == "curated+selected") != (self.selection_csv is not None):
            bad("selection_csv must be given exactly when train_on='curated+selected'",
                "make one with `python -m fatlib select`")
        for name in ("epochs", "batch_size", "n_folds"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < (2 if name == "n_folds" else 1):
                bad(f"{name}={v!r}", f"use an integer >= {2 if name == 'n_folds' else 1}")
        if not (self.lr > 0 and self.wd >= 0 and self.n_workers >= 0):
            bad(f"lr={self.lr}, wd={self.wd}, n_workers={self.n_workers}", "need lr > 0, wd >= 0, n_workers >= 0")
        if self.keep not in KEEP:
            bad(f"keep={self.keep!r}", f"use one of {KEEP}")
        if not 0 <= self.pct_start < 1 or (self.grad_clip is not None and not self.grad_clip > 0):
            bad(f"pct_start={self.pct_start}, grad_clip={self.grad_clip}", "need 0 <= pct_start < 1 and grad_clip > 0 or None")
        if not 0 <= self.sound_mix_p <= 1:
            bad(f"sound_mix_p={self.sound_mix_p}", "use a share in [0, 1] (0: off)")
        if isinstance(self.sound_mix_max, bool) or not isinstance(self.sound_mix_max, int) or self.sound_mix_max < 1:
            bad(f"sound_mix_max={self.sound_mix_max!r}", "use a whole number of other clips >= 1")
        if self.schedule not in SCHEDULES:
            bad(f"schedule={self.schedule!r}", f"use one of {SCHEDULES}")
        if not 0 <= self.wave_p <= 1:
            bad(f"wave_p={self.wave_p}", "use a probability in [0, 1]")
        if not isinstance(self.min_steps, int) or self.min_steps < 1:
            bad(f"min_steps={self.min_steps!r}", "use an integer >= 1")
        if not isinstance(self.fold_parallel, bool):
            bad(f"fold_parallel={self.fold_parallel!r}", "use True or False")
        if isinstance(self.augment, str):
            self.augment = [self.augment]
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> StageConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DataError(f"stage config: unknown fields {unknown}; valid fields: {sorted(known)}.")
        return cls(**d)

    def save(self, path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path) -> StageConfig:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: cannot read the stage config ({e}); pass a JSON file of StageConfig fields.") from e

    def replace(self, **changes) -> StageConfig:
        return StageConfig.from_dict({**self.to_dict(), **changes})

    def mel_config(self):
        from .features import get_preset

        try:
            return get_preset(self.preset, **self.mel)
        except (KeyError, ValueError) as e:
            raise DataError(f"StageConfig {self.name!r}: preset {self.preset!r} with {self.mel}: {e}") from e

    @property
    def step_frames(self) -> int:
        return self.tta_step_frames or max(1, self.mel_config().crop_frames * 3 // 8)


@dataclass
class StageResult:
    stage_dir: Path
    cv_curated: float
    cv_noisy: float
    fold_curated: list
    fold_noisy: list
    oof_curated: np.ndarray
    oof_noisy: np.ndarray


# ------------------------------------------------------------------------------------ environment
def _device() -> torch.device:
    return distrib.device()


def _tune_cpu(device: torch.device) -> None:
    if device.type != "cpu":
        return
    try:
        from .sysalloc import tune_malloc
    except ModuleNotFoundError as e:
        if e.name != "fatlib.sysalloc":
            raise
        return
    tune_malloc()


def _check_config(stage_dir: Path, cfg: StageConfig) -> None:
    """A stage folder belongs to one config: rerunning with another (beyond runtime fields) is an error."""
    path = stage_dir / "config.json"
    if path.exists():
        old = StageConfig.load(path).to_dict()
        new = cfg.to_dict()
        diff = {k: (old[k], new[k]) for k in new if k not in RUNTIME_FIELDS and old.get(k) != new[k]}
        if diff:
            raise DataError(
                f"{path}: stage {cfg.name!r} was started with other settings (old, new): {diff}. "
                "Use another stage name, or delete the folder to retrain it."
            )
    cfg.save(path)


# ------------------------------------------------------------------------------------ prediction
def predict_rows(model, cache, rows, *, cfg, step_frames: int, batch_size: int = 64) -> np.ndarray:
    """Sigmoid probabilities (len(rows), n_classes) of ``cache`` rows: windows every ``step_frames``
    frames over each whole clip, averaged (12th-place TTA, ``fatlib.predict.predict_clips``)."""
    from .datasets import CacheSubset
    from .predict import predict_clips

    return predict_clips(model, CacheSubset(cache, rows), cfg, tta="windows", step_frames=step_frames,
                         batch_size=batch_size, device=next(model.parameters()).device, progress=False)


# -------------------------------------------------------------------------------------- training
@dataclass
class _Inputs:
    """Everything a fold needs, made once per stage."""

    cfg: StageConfig
    mel: Any
    vocab: list
    cur_cache: Any
    noisy_cache: Any
    cur_paths: list
    noisy_paths: list
    cur_y: np.ndarray
    noisy_y: np.ndarray
    cur_folds: np.ndarray
    noisy_folds: np.ndarray
    sel_rows: np.ndarray
    sel_y: np.ndarray
    sel_folds: np.ndarray


def _train_parts(inp: _Inputs, k: int):
    """(source, rows, targets) parts of fold k's training split and the fnames for the record."""
    cache_mode = not inp.cfg.wave_augment
    cur_src = inp.cur_cache if cache_mode else inp.cur_paths
    noisy_src = inp.noisy_cache if cache_mode else inp.noisy_paths
    parts, cur_rows, noisy_rows = [], np.zeros(0, int), np.zeros(0, int)
    if inp.cfg.train_on == "noisy":
        noisy_rows = np.flatnonzero(inp.noisy_folds != k)
        parts.append((noisy_src, noisy_rows, inp.noisy_y[noisy_rows]))
    else:
        cur_rows = np.flatnonzero(inp.cur_folds != k)
        parts.append((cur_src, cur_rows, inp.cur_y[cur_rows]))
    if inp.cfg.train_on == "curated+selected":
        keep = inp.sel_folds != k
        noisy_rows = inp.sel_rows[keep]
        if len(noisy_rows):
            parts.append((noisy_src, noisy_rows, inp.sel_y[keep]))
    return parts, cur_rows, noisy_rows


def _n_train(inp: _Inputs) -> int:
    """Training clips of an average fold (the pool minus one fold's share)."""
    k = inp.cfg.n_folds
    pool = len(inp.noisy_y) if inp.cfg.train_on == "noisy" else len(inp.cur_y) + len(inp.sel_rows)
    return max(1, round(pool * (k - 1) / k))


def effective_config(cfg: StageConfig, *, n_train: int, n_dataset: int, given=None) -> tuple[StageConfig, str]:
    """The settings a stage trains with: with ``cfg.auto_scale``, batch size, learning rate, epochs
    and (when unset) width scaled to ``n_train`` clips per fold in a data set of ``n_dataset`` clips
    (:mod:`fatlib.autoscale`), except the fields somebody gave: ``given`` maps those field names to where
    they were given ("--epochs", "--config c.json", ...), and they are used as given.
    Returns (config, one line saying what was chosen and what was left alone)."""
    given = dict(given or {})
    if not cfg.auto_scale:
        return cfg, f"batch {cfg.batch_size}, lr {cfg.lr:g}, {cfg.epochs} epochs (as given: auto_scale off)"
    from .autoscale import scale_settings

    sc = scale_settings(n_train=n_train, n_dataset=n_dataset, batch_size=cfg.batch_size, lr=cfg.lr,
                        epochs=cfg.epochs, min_steps=cfg.min_steps, width_mult=cfg.model_kwargs.get("width_mult"),
                        given=given)
    kwargs = cfg.model_kwargs if sc.width_mult is None else {**cfg.model_kwargs, "width_mult": sc.width_mult}
    eff = cfg.replace(batch_size=sc.batch_size, lr=sc.lr, epochs=sc.epochs, model_kwargs=kwargs)
    changed = [f"{f} {getattr(cfg, f):g} -> {getattr(eff, f):g}" for f in ("batch_size", "lr", "epochs")
               if f not in given and getattr(cfg, f) != getattr(eff, f)]
    if sc.width_mult is not None:
        changed.append(f"width_mult {sc.width_mult:g} (from {n_dataset} clips)")
    kept = [f"{f}={getattr(cfg, f):g} as given ({given[f]})" for f in sc.kept]
    how = "auto scaling " + ("filled " + ", ".join(changed) if changed else "changed nothing")
    if kept:
        how += "; auto scaling left " + ", ".join(kept)
    return eff, f"{cfg.n_folds} folds, {sc.describe()} for {n_train} training clips per fold ({how})"


def folds_for_data(cfg: StageConfig, data, given=None) -> StageConfig:
    """``cfg`` with the number of folds it trains on ``data``: with ``auto_scale``, at most 5 on a
    small data set (:func:`fatlib.autoscale.scale_folds`) unless somebody gave ``n_folds`` (a key of
    ``given``); decided before any fold file is made."""
    if not cfg.auto_scale:
        return cfg
    from .autoscale import scale_folds

    n_folds = scale_folds(cfg.n_folds, n_dataset=data.n_train_clips, given="n_folds" in (given or {}))
    return cfg if n_folds == cfg.n_folds else cfg.replace(n_folds=n_folds)


def init_output_bias(model, targets: np.ndarray, *, eps: float = 1e-3) -> None:
    """Set the bias of ``model``'s output layer (its last ``nn.Linear``) to the log-odds of each
    class's share of ``targets`` (N, C): the untrained model then predicts the class priors."""
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not last or last[-1].out_features != targets.shape[1] or last[-1].bias is None:
        raise DataError(f"init_bias: {type(model).__name__} has no output layer with bias of {targets.shape[1]} "
                        "classes; pass init_bias=False")
    prior = np.clip(np.asarray(targets, np.float64).mean(axis=0), eps, 1 - eps)
    with torch.no_grad():
        last[-1].bias.copy_(torch.from_numpy(np.log(prior / (1 - prior))).to(last[-1].bias))


def _make_learner(inp: _Inputs, cfg: StageConfig, k: int, parts, stage_dir: Path, device, *, log, cbs=()):
    import fastai.callback.progress  # noqa: F401  (adds Learner.no_bar, the progress callback)
    from fastai.callback.progress import CSVLogger
    from fastai.callback.training import GradientClip
    from fastai.learner import Learner

    from .augment import get_augment
    from .callbacks import EpochLog, KeepBest
    from .datasets import ChannelsLast, build_dataloaders, input_callbacks
    from .losses import get_loss
    from .metrics import LwlrapMetric
    from .models import create_model
    from .weights import check_compatible, load_into, read_metadata

    mel = inp.mel
    if device.type == "cuda" and mel.crop_frames_max is None:
        torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick the fastest kernels once
    valid_rows = np.flatnonzero(inp.cur_folds == k)
    mode = "wave" if cfg.wave_augment else "cache"
    wave_aug = None
    if cfg.wave_augment:
        from .wave_augment import WaveAugment

        wave_aug = WaveAugment(sample_rate=mel.sample_rate, p=cfg.wave_p, probs=cfg.wave_effects or None)
    valid_src = inp.cur_paths if cfg.wave_augment else inp.cur_cache
    # data parallel: each process takes its share of a batch, so batch_size stays the clips per step
    per_process = max(1, cfg.batch_size // distrib.world_size()) if _data_parallel(cfg) else cfg.batch_size
    dls = build_dataloaders(parts, [(valid_src, valid_rows, inp.cur_y[valid_rows])], cfg=mel, mode=mode,
                            batch_size=per_process, n_workers=cfg.n_workers, augment=wave_aug, device=device,
                            mix_p=cfg.sound_mix_p, mix_max=cfg.sound_mix_max)
    model = create_model(cfg.model, n_classes=len(inp.vocab), in_channels=mel.channels, **cfg.model_kwargs)
    if cfg.init_from:
        path = Path(cfg.init_from) / f"fold{k}.safetensors"
        check_compatible(path, read_metadata(path), model_name=cfg.model, vocab=inp.vocab)
        load_into(model, path)
    elif cfg.init_bias:
        init_output_bias(model, np.concatenate([y for _, _, y in parts]))
    fold_cbs = input_callbacks(mel, mode=mode) + [get_augment(name, seed=cfg.seed * 1000 + k) for name in cfg.augment]
    fold_cbs += [ChannelsLast()] if cfg.channels_last or device.type == "cpu" else []  # CPU: ~1.2x faster steps
    fold_cbs += [EpochLog(log, prefix=f"{cfg.name} fold {k + 1}/{cfg.n_folds} ")]
    if is_main_process() or not _data_parallel(cfg):  # one writer of the fold's history
        fold_cbs += [CSVLogger(fname=f"fold{k}_history.csv")]
    fold_cbs += [KeepBest("lwlrap")] if cfg.keep == "best" else []
    fold_cbs += [GradientClip(cfg.grad_clip)] if cfg.grad_clip else []
    learn = Learner(dls, model, loss_func=get_loss(cfg.loss), metrics=[LwlrapMetric()], cbs=fold_cbs + list(cbs),
                    wd=cfg.wd, path=stage_dir, model_dir=".")
    if cfg.mixed_precision and device.type == "cuda":
        learn = learn.to_fp16()
    return learn


def _data_parallel(cfg: StageConfig) -> bool:
    """Several processes training one fold together (not fold parallel)."""
    return distrib.use_distributed() and not cfg.fold_parallel


def _fit(learn, cfg: StageConfig) -> None:
    import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle)

    if _data_parallel(cfg):
        with distrib.data_parallel(learn):
            _fit_schedule(learn, cfg)
    else:
        _fit_schedule(learn, cfg)


def _fit_schedule(learn, cfg: StageConfig) -> None:
    """Fit ``cfg.epochs`` epochs under ``cfg.schedule`` (fastai's schedulers and callbacks)."""
    from fastai.callback.schedule import ParamScheduler, SchedCos, SchedLin, combine_scheds
    from fastai.callback.tracker import ReduceLROnPlateau

    if cfg.schedule == "one_cycle":
        learn.fit_one_cycle(cfg.epochs, lr_max=cfg.lr, pct_start=cfg.pct_start)
    elif cfg.schedule == "warmup_cosine":
        warm = cfg.pct_start
        sched = combine_scheds([warm, 1 - warm], [SchedLin(cfg.lr / 100, cfg.lr), SchedCos(cfg.lr, 0.0)]) if warm \
            else SchedCos(cfg.lr, 0.0)
        learn.fit(cfg.epochs, lr=cfg.lr, cbs=ParamScheduler({"lr": sched}))
    else:
        learn.fit(cfg.epochs, lr=cfg.lr, cbs=ReduceLROnPlateau(monitor="valid_loss", patience=1, factor=10.0))


def _history(learn) -> dict:
    from .callbacks import EpochLog, KeepBest

    rec = learn.recorder
    names = [n for n in rec.metric_names[1:] if n != "time"]
    seconds = next((cb.seconds for cb in learn.cbs if isinstance(cb, EpochLog)), [])
    epochs = [{**dict(zip(names, [float(v) if v is not None else None for v in vals])),
               **({"seconds": seconds[i]} if i < len(seconds) else {})} for i, vals in enumerate(rec.values)]
    best = next((cb.best_epoch for cb in learn.cbs if isinstance(cb, KeepBest)), None)
    return {"batch_loss": [float(v) for v in rec.losses], "epochs": epochs,
            "kept_epoch": (len(epochs) - 1 if best is None else best) + 1}


def _train_fold(inp: _Inputs, cfg: StageConfig, k: int, stage_dir: Path, *, bars: bool, log, cbs=()) -> None:
    from fastai.torch_core import set_seed

    from .metrics import lwlrap
    from .weights import save_weights

    mel = inp.mel
    device = _device()
    set_seed(cfg.seed * 1000 + k, reproducible=False)
    parts, cur_rows, noisy_rows = _train_parts(inp, k)
    learn = _make_learner(inp, cfg, k, parts, stage_dir, device, log=log, cbs=cbs)
    if bars:
        _fit(learn, cfg)
    else:  # plain lines from EpochLog; no bar redraws, no fastai table printed a second time
        with learn.no_bar(), learn.no_logging():
            _fit(learn, cfg)
    if _data_parallel(cfg) and not is_main_process():
        return  # rank 0 predicts out of fold and writes the fold; the others wait at the next barrier
    model = learn.model
    cur_valid = np.flatnonzero(inp.cur_folds == k)
    noisy_valid = np.flatnonzero(inp.noisy_folds == k)
    step = cfg.step_frames
    oof_c = predict_rows(model, inp.cur_cache, cur_valid, cfg=mel, step_frames=step, batch_size=cfg.batch_size)
    save_npy(stage_dir / f"fold{k}_oof_curated.npy", oof_c)
    if len(noisy_valid):
        oof_n = predict_rows(model, inp.noisy_cache, noisy_valid, cfg=mel, step_frames=step, batch_size=cfg.batch_size)
        save_npy(stage_dir / f"fold{k}_oof_noisy.npy", oof_n)
    history = _history(learn)
    record = {
        "fold": k,
        "train_curated": [inp.cur_paths[i].name for i in cur_rows],
        "train_noisy": [inp.noisy_paths[i].name for i in noisy_rows],
        "valid_curated": [inp.cur_paths[i].name for i in cur_valid],
        "oof_noisy": [inp.noisy_paths[i].name for i in noisy_valid],
        "settings": {"batch_size": cfg.batch_size, "lr": cfg.lr, "epochs": cfg.epochs, "model_kwargs": cfg.model_kwargs},
        "history": history,
    }
    write_json(stage_dir / f"fold{k}.json", record)
    save_weights(stage_dir / f"fold{k}.safetensors", model, model_name=cfg.model,
                 model_kwargs={"n_classes": len(inp.vocab), "in_channels": mel.channels, **cfg.model_kwargs},
                 mel_config=mel.to_dict(), vocab=inp.vocab, extra={"stage": cfg.name, "fold": k, "tta_step_frames": step})
    write_text(stage_dir / f"fold{k}.done", "done\n")
    seconds = sum(e.get("seconds", 0.0) for e in history["epochs"])
    log(f"{cfg.name} fold {k + 1}/{cfg.n_folds} done: out-of-fold lwlrap {lwlrap(inp.cur_y[cur_valid], oof_c):.4f} "
        f"on {len(cur_valid)} curated clips (epoch {history['kept_epoch']} kept, {seconds / 60:.1f} min)")


def fold_done(stage_dir, k: int) -> bool:
    stage_dir = Path(stage_dir)
    return (stage_dir / f"fold{k}.done").exists() and (stage_dir / f"fold{k}.safetensors").exists()


def _prepare(cfg: StageConfig, data, run_dir: Path, cache_dir, progress: bool, roots) -> _Inputs:
    from .cache import FeatureCache

    mel = cfg.mel_config()
    if data.curated.targets is None or len(data.curated.fnames) < cfg.n_folds:
        raise DataError(f"{data.root}: the curated split needs labels and at least n_folds={cfg.n_folds} clips.")
    if cfg.train_on == "noisy" and len(data.noisy.fnames) < cfg.n_folds:
        raise DataError(f"{data.root}: train_on='noisy' needs a noisy split with at least {cfg.n_folds} clips.")
    if cfg.init_from:  # read where it is: the working folder or an earlier session's output (fatlib.runs)
        init_dir = roots.find_stage(cfg.init_from)
        if init_dir is None:
            raise DataError(f"init_from={cfg.init_from!r}: no such stage folder; train that stage first or fix the path.")
        cfg = cfg.replace(init_from=str(init_dir))
    cur_folds = curated_folds(data, run_dir=run_dir, n_folds=cfg.n_folds, seed=cfg.folds_seed)
    nz_folds = noisy_folds(data, run_dir=run_dir, n_folds=cfg.n_folds, seed=cfg.folds_seed)
    jobs = dict(cache_dir=cache_dir, n_jobs=cfg.cache_jobs, progress=progress, input_roots=roots.inputs)
    cur_cache = FeatureCache.build(data.curated.paths(), mel, name="curated", **jobs)
    noisy_cache = FeatureCache.build(data.noisy.paths(), mel, name="noisy", **jobs) if len(data.noisy.fnames) else None
    sel_rows, sel_y, sel_folds = np.zeros(0, int), np.zeros((0, len(data.vocab)), np.float32), np.zeros(0, int)
    if cfg.selection_csv:
        sel_rows, sel_y, sel_folds = read_selection(cfg.selection_csv, vocab=data.vocab,
                                                    noisy_fnames=data.noisy.fnames)
        if np.any(sel_folds != nz_folds[sel_rows]):
            raise DataError(f"{cfg.selection_csv}: its fold column differs from {run_dir / 'folds_noisy.csv'}; "
                            "make the selection from this run's stages.")
    return _Inputs(cfg, mel, list(data.vocab), cur_cache, noisy_cache, data.curated.paths(), data.noisy.paths(),
                   data.curated.targets, data.noisy.targets, cur_folds, nz_folds, sel_rows, sel_y, sel_folds)


def _check_components(cfg: StageConfig, *, n_classes: int) -> None:
    """Fail on a bad preset, model, model option, loss or augmentation name now, not after the cache build."""
    from .augment import get_augment
    from .losses import get_loss
    from .models import create_model

    mel = cfg.mel_config()
    get_loss(cfg.loss)
    for name in cfg.augment:
        if getattr(get_augment(name), "needs_waves", False) and not cfg.wave_augment:
            raise DataError(f"StageConfig {cfg.name!r}: augment {name!r} mixes waveforms; set wave_augment = true "
                            "(on-the-fly waveforms) or use 'ormixup' on log-mels")
    if cfg.wave_effects:
        from .wave_augment import WaveAugment

        WaveAugment(probs=cfg.wave_effects)  # unknown effect names: one clear error now
    create_model(cfg.model, n_classes=n_classes, in_channels=mel.channels, **cfg.model_kwargs)


def _check_before_writing(cfg: StageConfig, data, *, stage_dir: Path, todo: list[int], roots) -> None:
    """What can be checked before config.json is written: a refused run must not leave a config.json that
    makes its corrected rerun fail as "started with other settings". Split sizes, and the init_from stage:
    found, and each fold to train has weights of this model, vocabulary and width (auto scaling's)."""
    from .autoscale import dataset_width
    from .models import create_model
    from .weights import check_compatible, check_fits, read_metadata

    if data.curated.targets is None or len(data.curated.fnames) < cfg.n_folds:
        raise DataError(f"{data.root / 'train_curated.csv'}: {len(data.curated.fnames)} labelled clips; the curated "
                        f"split needs at least n_folds={cfg.n_folds}. Add clips or lower --n-folds.")
    if cfg.train_on == "noisy" and len(data.noisy.fnames) < cfg.n_folds:
        raise DataError(f"{data.root / 'train_noisy.csv'}: {len(data.noisy.fnames)} clips; train_on='noisy' needs at "
                        f"least n_folds={cfg.n_folds}. Add clips or train on curated.")
    if not cfg.init_from:
        return
    init_dir = roots.find_stage(cfg.init_from)
    if init_dir is None:
        raise DataError(f"init_from={cfg.init_from!r}: no such stage folder; train that stage first or fix the path.")
    kwargs = dict(cfg.model_kwargs)
    if cfg.auto_scale and "width_mult" not in kwargs:  # the width effective_config will choose
        kwargs["width_mult"] = dataset_width(data.n_train_clips)
    model = create_model(cfg.model, n_classes=len(data.vocab), in_channels=cfg.mel_config().channels, **kwargs)
    for k in todo:
        if not fold_done(stage_dir, k):
            path = Path(init_dir) / f"fold{k}.safetensors"
            check_compatible(path, read_metadata(path), model_name=cfg.model, vocab=data.vocab)
            check_fits(model, path)


def train_stage(cfg: StageConfig, data, *, run_dir, cache_dir, progress: bool = True, folds=None,
                cbs=(), input_roots=(), note: str | None = None, given=None) -> StageResult | None:
    """Train (or finish) stage ``cfg`` on ``data`` (a FatData) in ``run_dir/cfg.name``; see the module doc.

    ``progress``: bars in a terminal or notebook, plain lines elsewhere (:mod:`fatlib.progress`);
    False drops the bars but never the per-epoch and per-fold lines. Every line also goes to
    ``<stage>/log.txt``. ``folds``: train only these fold indices (the rest stay as they are; the
    stage's outputs are written once every fold is done). ``cbs``: extra fastai callbacks for every
    fold's Learner (a CSVLogger, W&B, TensorBoard, ...). ``input_roots``: earlier sessions' outputs
    (fatlib.runs.Roots), read-only: init_from and caches are read there, and this stage's finished
    folds are copied from there first. ``note``: a line logged before the settings (e.g. why the model
    is not the recipe's). ``given``: field -> where it was given (an option, ``--config``, ``--set``, an
    argument): auto scaling leaves those fields as they are and says so (:func:`effective_config`).
    Returns None until every fold is done, and on processes other than the main one.

    Launched as several processes (``torchrun`` / ``accelerate launch``, :mod:`fatlib.distrib`), each
    fold is trained by all of them together (data parallel), or with ``cfg.fold_parallel`` process r
    trains folds r, r+W, ...; rank 0 alone builds the caches (the others wait, then open them) and
    writes the stage's outputs, and every process returns only after they are written.
    """
    from .progress import LineLog, bars_enabled
    from .runs import Roots

    cfg = folds_for_data(cfg.validate(), data, given)
    run_dir = Path(run_dir)
    stage_dir = run_dir / cfg.name
    todo = _check_folds(folds, cfg.n_folds)
    roots = Roots(input_roots)
    if cfg.selection_csv and not Path(cfg.selection_csv).exists():
        raise DataError(f"selection_csv={cfg.selection_csv}: not found; run `python -m fatlib select` first.")
    _check_components(cfg, n_classes=len(data.vocab))
    _tune_cpu(_device())
    if _data_parallel(cfg):
        import accelerate  # noqa: F401  (fastai's DistributedTrainer needs it: fail now, not after the cache build)
    main = is_main_process()
    with distrib.main_first():  # rank 0 writes the config, fold lists and caches; the others then read them
        if main:
            roots.adopt_stage(stage_dir)  # an earlier session's finished folds of this stage, copied here first
            _check_before_writing(cfg, data, stage_dir=stage_dir, todo=todo, roots=roots)
            _check_config(stage_dir, cfg)
        inp = _prepare(cfg, data, run_dir, cache_dir, progress, roots)
    writes = main or cfg.fold_parallel  # fold parallel: every process trains (and logs) its own folds
    log = LineLog(stage_dir / "log.txt" if writes else None, echo=writes)
    eff, chosen = effective_config(inp.cfg, n_train=_n_train(inp), n_dataset=len(inp.cur_y) + len(inp.noisy_y),
                                   given=given)
    if main:
        how = ""
        if distrib.use_distributed():
            how = f"; {distrib.world_size()} processes, " + ("fold parallel" if cfg.fold_parallel else "data parallel")
        if note:
            log(note)
        log(f"{cfg.name}: {cfg.model}, {chosen}{how}")
    bars = progress and bars_enabled()
    pending = [k for k in todo if not fold_done(stage_dir, k)]  # the same list on every process
    for k in distrib.my_folds(pending, fold_parallel=cfg.fold_parallel):
        log(f"{cfg.name} fold {k + 1}/{cfg.n_folds}: training on {sum(len(r) for _, r, _ in _train_parts(inp, k)[0])} clips")
        if _data_parallel(cfg):
            _train_fold(inp, eff, k, stage_dir, bars=bars, log=log, cbs=cbs)
            distrib.barrier()  # rank 0 has written fold k
        else:  # one process, or this process's own fold of a fold-parallel job
            with distrib.alone():
                _train_fold(inp, eff, k, stage_dir, bars=bars, log=log, cbs=cbs)
    distrib.barrier()  # every process's folds are written
    res = None
    if main and all(fold_done(stage_dir, k) for k in range(cfg.n_folds)):
        res = _finish(inp, stage_dir)
        noisy = f", noisy {res.cv_noisy:.4f}" if res.cv_noisy is not None else ""
        log(f"{cfg.name}: CV lwlrap curated {res.cv_curated:.4f}{noisy} -> {stage_dir}", echo=False)
    distrib.barrier()  # metrics.json written: the next stage may start on every process
    return res


def _check_folds(folds, n_folds: int) -> list[int]:
    if folds is None:
        return list(range(n_folds))
    todo = sorted({int(k) for k in folds})
    if not todo or todo[0] < 0 or todo[-1] >= n_folds:
        raise DataError(f"folds={list(folds)}: give fold indices in 0..{n_folds - 1}")
    return todo


def _finish(inp: _Inputs, stage_dir: Path) -> StageResult:
    """Gather every fold's outputs into the stage's CSVs, metrics.json and curve.png. Without a noisy
    split the noisy outputs are not written and their metrics are null (strict JSON, no NaN)."""
    from .metrics import lwlrap, per_class_lwlrap, per_sample_lwlrap

    n_cls = len(inp.vocab)
    has_noisy = len(inp.noisy_y) > 0
    oof_c = np.full((len(inp.cur_y), n_cls), np.nan, np.float32)
    oof_n = np.full((len(inp.noisy_y), n_cls), np.nan, np.float32)
    fold_c, fold_n, histories = [], [], []
    for k in range(inp.cfg.n_folds):
        cv, nv = inp.cur_folds == k, inp.noisy_folds == k
        oof_c[cv] = np.load(stage_dir / f"fold{k}_oof_curated.npy")
        if nv.any():
            oof_n[nv] = np.load(stage_dir / f"fold{k}_oof_noisy.npy")
        fold_c.append(lwlrap(inp.cur_y[cv], oof_c[cv]))
        fold_n.append(lwlrap(inp.noisy_y[nv], oof_n[nv]) if nv.any() else None)
        histories.append(json.loads((stage_dir / f"fold{k}.json").read_text())["history"])
    cols = list(inp.vocab)
    cur_names = [p.name for p in inp.cur_paths]
    noisy_names = [p.name for p in inp.noisy_paths]
    write_csv(stage_dir / "oof_curated.csv", pd.concat([pd.DataFrame({"fname": cur_names}),
                                                        pd.DataFrame(oof_c, columns=cols)], axis=1))
    cv_n = None
    if has_noisy:
        write_csv(stage_dir / "oof_noisy.csv", pd.concat([pd.DataFrame({"fname": noisy_names}),
                                                          pd.DataFrame(oof_n, columns=cols)], axis=1))
        noisy_lw = per_sample_lwlrap(inp.noisy_y, oof_n)
        write_csv(stage_dir / "noisy_lwlrap.csv", pd.DataFrame({"fname": noisy_names, "lwlrap": noisy_lw}))
        cv_n = lwlrap(inp.noisy_y, oof_n)
    per_class, weights = per_class_lwlrap(inp.cur_y, oof_c)
    cv_c = lwlrap(inp.cur_y, oof_c)
    write_json(stage_dir / "metrics.json", {
        "stage": inp.cfg.name,
        "cv_lwlrap_curated": cv_c,
        "cv_lwlrap_noisy": cv_n,
        "fold_lwlrap_curated": fold_c,
        "fold_lwlrap_noisy": fold_n,
        "per_class_lwlrap_curated": dict(zip(cols, map(float, per_class))),
        "class_weight_curated": dict(zip(cols, map(float, weights))),
    })
    _plot_curves(histories, stage_dir / "curve.png", title=inp.cfg.name)
    return StageResult(stage_dir, cv_c, cv_n, fold_c, fold_n, oof_c, oof_n)


def _plot_curves(histories: list, path: Path, *, title: str) -> None:
    from .plots import plot_training_curve, save_figure

    fig = plot_training_curve(histories, title=title)
    save_figure(fig, path)


# -------------------------------------------------------------------------------------------- CLI
def json_arg(text: str | None, *, flag: str):
    """Parse a JSON command-line value (None stays None); a DataError names the flag."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{flag} {text!r} is not valid JSON ({e}); e.g. {flag} '{{\"width_mult\": 0.5}}'.") from e


# fields a command-line option sets: (option dest, StageConfig field)
STAGE_OPTIONS = (
    ("model", "model"), ("preset", "preset"), ("loss", "loss"), ("augment", "augment"), ("epochs", "epochs"),
    ("lr", "lr"), ("batch_size", "batch_size"), ("n_folds", "n_folds"), ("seed", "seed"), ("workers", "n_workers"),
    ("keep", "keep"), ("auto_scale", "auto_scale"), ("sound_mix", "sound_mix_p"), ("sound_mix_max", "sound_mix_max"),
)


def stage_overrides(args) -> dict:
    """StageConfig fields the command line sets explicitly (options left at None are not set)."""
    over = {name: getattr(args, dest) for dest, name in STAGE_OPTIONS if getattr(args, dest, None) is not None}
    for flag, name in (("--model-kwargs", "model_kwargs"), ("--mel", "mel")):
        value = json_arg(getattr(args, name), flag=flag)
        if value is not None:
            over[name] = value
    if args.wave_augment:
        over["wave_augment"] = True
    if getattr(args, "fold_parallel", False):
        over["fold_parallel"] = True
    if getattr(args, "channels_last", False):
        over["channels_last"] = True
    return over


FLAGS = {"auto_scale": "--no-auto-scale", "n_workers": "--workers", "sound_mix_p": "--sound-mix",
         "model_kwargs": "--model-kwargs", "selection_csv": "--selection"}


def given_sources(args) -> dict:
    """Where each StageConfig field the command line gives comes from: ``--config FILE`` or the option."""
    config = StageConfig.load(args.config).to_dict() if getattr(args, "config", None) else {}
    out = {k: f"--config {args.config}" for k in config}
    for k in _given_options(args):
        out[k] = FLAGS.get(k, "--" + k.replace("_", "-"))
    return out


def _given_options(args) -> dict:
    over = {**stage_overrides(args), "train_on": getattr(args, "train_on", None),
            "selection_csv": getattr(args, "selection", None)}
    return {k: v for k, v in over.items() if v is not None}


def run_name(args, *, n_dataset: int | None = None) -> str:
    """``--run``, else the model's name (``--model``, else the recipe's for a data set of ``n_dataset``
    clips): the notebooks' run names, so the headless commands and the inference kernel's defaults agree."""
    if args.run:
        return args.run
    if getattr(args, "model", None):
        return args.model
    from .recipes import load_recipe

    fields = load_recipe(args.recipe).stage_fields(getattr(args, "stage", None) or "stage", n_dataset=n_dataset,
                                                   given=stage_overrides(args))
    return fields.get("model", "cnn_model_1")


def _given(args, *, n_dataset: int | None = None) -> dict:
    """The StageConfig fields ``--config`` and the options set, on top of the recipe's."""
    config = StageConfig.load(args.config).to_dict() if args.config else {}
    over = {**stage_overrides(args), "train_on": args.train_on, "selection_csv": args.selection}
    if args.stage:
        over["name"] = args.stage
    if args.init_from:
        p = Path(args.init_from)
        over["init_from"] = str(p if p.is_dir() else Path(args.weights) / run_name(args, n_dataset=n_dataset)
                                / args.init_from)
    return {**config, **{k: v for k, v in over.items() if v is not None}}


def config_from_args(args, *, n_dataset: int | None = None, given: dict | None = None) -> StageConfig:
    """A StageConfig from the recipe (``--recipe``; its ``[stages.<stage>]`` when the stage is one of
    its stages; its ``[small_data]`` on a data set of ``n_dataset`` clips below ``SMALL_DATA_CLIPS``),
    then ``--config`` (JSON), then the options given on the command line (``given``: those two, when
    the caller has them already)."""
    from .recipes import load_recipe

    name = args.stage or "stage"
    given = _given(args, n_dataset=n_dataset) if given is None else given
    return StageConfig.from_dict({"name": name, **load_recipe(args.recipe).stage_fields(name, n_dataset=n_dataset,
                                                                                        given=given)})


def check_stage_outputs(cfg, data, *, run_dir, cache_dir, input_roots=(), n_stages: int = 1) -> None:
    """Before training ``n_stages`` stages like StageConfig ``cfg`` on ``data`` (a FatData): the stage folder
    (all of ``run_dir`` when ``n_stages`` > 1) must take ``n_folds`` weights files per stage, and ``cache_dir``
    the caches not built yet (twice their size while a cache is assembled from its shards)."""
    from .autoscale import dataset_width
    from .cache import missing_cache_bytes
    from .models import create_model
    from .preflight import check_writable, weights_bytes

    mel = cfg.mel_config()
    kwargs = dict(cfg.model_kwargs)
    if cfg.auto_scale and "width_mult" not in kwargs:  # the width auto scaling will choose
        kwargs["width_mult"] = dataset_width(data.n_train_clips)
    fold = weights_bytes(create_model(cfg.model, n_classes=len(data.vocab), in_channels=mel.channels, **kwargs))
    out = Path(run_dir) if n_stages > 1 else Path(run_dir) / cfg.name
    check_writable(out, expected_bytes=fold * cfg.n_folds * n_stages, largest_file_bytes=fold,
                   what="stage folder (--weights/--run)")
    caches = [missing_cache_bytes(split.paths(), mel, cache_dir=cache_dir, name=name, input_roots=input_roots)
              for name, split in (("curated", data.curated), ("noisy", data.noisy))]
    if sum(caches):
        check_writable(cache_dir, expected_bytes=2 * sum(caches), largest_file_bytes=max(caches),
                       what="feature cache folder (--cache-dir)")


def _cli(args) -> int:
    from .data import FatData
    from .recipes import load_recipe

    data = FatData.from_dir(args.data)
    n = data.n_train_clips
    given = _given(args, n_dataset=n)
    cfg = config_from_args(args, n_dataset=n, given=given)
    note = load_recipe(args.recipe).small_data_note(args.stage or "stage", n, given)
    run_dir = Path(args.weights) / run_name(args, n_dataset=n)
    check_stage_outputs(cfg, data, run_dir=run_dir, cache_dir=args.cache_dir, input_roots=args.input_roots)
    res = train_stage(cfg, data, run_dir=run_dir, cache_dir=args.cache_dir, progress=not args.quiet,
                      folds=args.folds, input_roots=args.input_roots, note=note, given=given_sources(args))
    if res is not None:  # None: folds left to train, or not the main process
        print(result_line(cfg.name, res))
    return 0


def result_line(name: str, res: StageResult) -> str:
    noisy = f", noisy {res.cv_noisy:.4f}" if res.cv_noisy is not None else ""
    return f"{name}: CV lwlrap curated {res.cv_curated:.4f}{noisy} -> {res.stage_dir}"


def _recipe_default(field: str, stage: str | None = None) -> str:
    """The default a stage option takes: the default recipe's value, else StageConfig's."""
    from .autoscale import SMALL_DATA_CLIPS
    from .recipes import DEFAULT_RECIPE, load_recipe, show_value

    recipe = load_recipe(DEFAULT_RECIPE)
    fields = recipe.stage_fields(stage)
    if field in fields:
        small = f"; {show_value(recipe.small_data[field])} on data sets under {SMALL_DATA_CLIPS:,} clips, see " \
            "--no-auto-scale" if field in recipe.small_data else ""
        return f"{show_value(fields[field])} (recipe {DEFAULT_RECIPE}{small})"
    spec = StageConfig.__dataclass_fields__[field]
    return str(spec.default if spec.default_factory is dataclasses.MISSING else spec.default_factory())


def add_stage_arguments(p: argparse.ArgumentParser, *, stage: str | None = None) -> None:
    """Options shared by ``train-stage`` and ``warmup``; each help says the real default."""
    from .recipes import DEFAULT_RECIPE, list_recipes

    d = lambda field: f"default: {_recipe_default(field, stage)}"  # noqa: E731
    p.add_argument("--recipe", default=DEFAULT_RECIPE,
                   help=f"a shipped recipe ({', '.join(list_recipes())}) or a .toml path; options below override it "
                   f"(default: {DEFAULT_RECIPE})")
    p.add_argument("--data", default=None, help="data folder (default: input/, then the Kaggle path)")
    p.add_argument("--run", default=None,
                   help="run name: outputs in <weights>/<run>/ (default: the model's name, as the notebooks)")
    p.add_argument("--weights", default="weights", help="weights root (default: weights)")
    p.add_argument("--cache-dir", default="cache", help="feature cache folder (default: cache)")
    p.add_argument("--model", default=None, help=f"registered model name (cnn_model_1, vgg16_bn, ...; {d('model')})")
    p.add_argument("--model-kwargs", default=None,
                   help='JSON, e.g. \'{"width_mult": 0.5}\' (default: {}; width_mult chosen from the data set size '
                   "with auto scaling)")
    p.add_argument("--preset", default=None, help=f"feature preset (cnn128, dense64; {d('preset')})")
    p.add_argument("--mel", default=None, help='JSON MelConfig overrides, e.g. \'{"n_mels": 64}\' (default: {})')
    p.add_argument("--loss", default=None, help=f"bce | lsep | focal ({d('loss')})")
    p.add_argument("--augment", nargs="*", default=None, help=f"augmentation names, none for no augmentation ({d('augment')})")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"passes over the training split per fold; with auto scaling at least this many ({d('epochs')})")
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate of the one-cycle schedule at the recipe's batch size ({d('lr')})")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"clips per batch; with auto scaling at most this many ({d('batch_size')})")
    p.add_argument("--no-auto-scale", dest="auto_scale", action="store_const", const=False, default=None,
                   help="train with exactly the recipe's (or given) model, features, batch size, lr, epochs and width "
                   "(default: scale them to the data set size, with the recipe's [small_data] model and features "
                   "under 1,500 clips, and print what was chosen)")
    p.add_argument("--n-folds", type=int, default=None, help=f"K of the K-fold split of curated ({d('n_folds')})")
    p.add_argument("--folds", type=int, nargs="+", default=None,
                   help="train only these fold indices, e.g. --folds 0 to run or time one fold (default: every fold)")
    p.add_argument("--keep", choices=KEEP, default=None,
                   help=f"weights of the last epoch or of the best by validation lwlrap ({d('keep')})")
    p.add_argument("--sound-mix", type=float, default=None, metavar="P",
                   help=f"share of training clips mixed with another clip as sounds, labels joined; 0: off "
                   f"({d('sound_mix_p')})")
    p.add_argument("--sound-mix-max", type=int, default=None, metavar="N",
                   help=f"a mixed clip gets 1..N other clips (uniform), e.g. 2 for 2-3-sound mixtures "
                   f"({d('sound_mix_max')})")
    p.add_argument("--seed", type=int, default=None, help=f"training seed (augmentations, initialisation; {d('seed')})")
    p.add_argument("--workers", type=int, default=None,
                   help=f"DataLoader worker processes; 0 loads in the training process ({d('n_workers')}: one per "
                   f"CPU core, at most {MAX_WORKERS})")
    p.add_argument("--channels-last", action="store_true",
                   help="model and inputs in channels-last memory format on a GPU, faster on recent GPUs with mixed "
                   "precision (default: off on GPUs; always on when training on the CPU, where it is faster)")
    p.add_argument("--wave-augment", action="store_true",
                   help="on-the-fly waveforms with WaveAugment (default: random crops of the feature cache)")
    p.add_argument("--fold-parallel", action="store_true",
                   help="launched as W processes (torchrun --nproc_per_node W -m fatlib -- ...): process r trains folds "
                   "r, r+W, ... on its own GPU, no gradient sync (default: the processes train each fold together, "
                   "data parallel)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars; the per-epoch and per-fold lines stay (default: bars in a terminal or "
                   "notebook, plain lines elsewhere)")


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "train-stage", help="train one stage over K folds (OOF outputs, weights)",
        description="Train one stage over K folds into <weights>/<run>/<stage>/: fold weights, out-of-fold "
        "predictions, metrics, log.txt. Settings come from the recipe, then --config, then the options; "
        "finished folds are skipped on rerun.",
    )
    add_stage_arguments(p)
    p.add_argument("--stage", default=None,
                   help="stage name (folder inside the run); a stage of the recipe takes that stage's settings "
                   "(default: stage)")
    p.add_argument("--config", default=None, help="StageConfig JSON on top of the recipe (default: none)")
    p.add_argument("--train-on", default=None, choices=TRAIN_ON,
                   help="training split: noisy only, curated only, or curated + a --selection of noisy clips "
                   "(default: curated)")
    p.add_argument("--selection", default=None, help="selection CSV for --train-on curated+selected (default: none)")
    p.add_argument("--init-from", default=None,
                   help="stage folder, or stage name in the run, whose fold k starts fold k (default: none)")
    p.set_defaults(func=_cli)
