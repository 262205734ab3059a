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

from .errors import DataError
from .io import save_npy, write_csv, write_json, write_text

TRAIN_ON = ("noisy", "curated", "curated+selected")
# fields that may change between runs of a stage without making its finished folds stale
RUNTIME_FIELDS = ("n_workers", "cache_jobs", "mixed_precision")


@dataclass
class StageConfig:
    """Everything that defines a stage. Units: ``lr`` peak learning rate of the one-cycle schedule,
    ``wd`` decoupled weight decay, ``epochs`` passes over the training split, ``batch_size`` clips,
    ``tta_step_frames`` frames between TTA windows (None: 3/8 of the crop, 48 for 128)."""

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
    n_workers: int = 0  # DataLoader worker processes (0: in this process)
    cache_jobs: int | None = None  # processes building the feature cache (None: every core)
    tta_step_frames: int | None = None

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
def world_size() -> int:
    """Processes in the job (``WORLD_SIZE`` set by ``accelerate launch`` / torchrun; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def use_distributed() -> bool:
    return world_size() > 1


def _device() -> torch.device:
    if use_distributed() and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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


# ------------------------------------------------------------------------------------------ folds
def curated_folds(data, *, run_dir, n_folds: int, seed: int) -> np.ndarray:
    from .data import load_or_make_folds

    return load_or_make_folds(Path(run_dir) / "folds_curated.csv", data.curated.fnames, data.curated.targets,
                              n_folds=n_folds, seed=seed)


def noisy_folds(data, *, run_dir, n_folds: int, seed: int) -> np.ndarray:
    from .data import load_or_make_folds

    if len(data.noisy.fnames) == 0:
        return np.zeros(0, dtype=np.int64)
    return load_or_make_folds(Path(run_dir) / "folds_noisy.csv", data.noisy.fnames, data.noisy.targets,
                              n_folds=n_folds, seed=seed)


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


def _make_learner(inp: _Inputs, k: int, parts, stage_dir: Path, device):
    import fastai.callback.progress  # noqa: F401  (adds Learner.no_bar, the progress callback)
    from fastai.learner import Learner

    from .augment import get_augment
    from .datasets import WaveToMel, build_dataloaders
    from .losses import get_loss
    from .metrics import LwlrapMetric
    from .models import create_model
    from .weights import check_compatible, load_into, read_metadata

    cfg, mel = inp.cfg, inp.mel
    valid_rows = np.flatnonzero(inp.cur_folds == k)
    mode = "wave" if cfg.wave_augment else "cache"
    wave_aug = None
    if cfg.wave_augment:
        from .wave_augment import WaveAugment

        wave_aug = WaveAugment(sample_rate=mel.sample_rate)
    valid_src = inp.cur_paths if cfg.wave_augment else inp.cur_cache
    dls = build_dataloaders(parts, [(valid_src, valid_rows, inp.cur_y[valid_rows])], cfg=mel, mode=mode,
                            batch_size=cfg.batch_size, n_workers=cfg.n_workers, augment=wave_aug, device=device)
    model = create_model(cfg.model, n_classes=len(inp.vocab), in_channels=mel.channels, **cfg.model_kwargs)
    if cfg.init_from:
        path = Path(cfg.init_from) / f"fold{k}.safetensors"
        check_compatible(path, read_metadata(path), model_name=cfg.model, vocab=inp.vocab)
        load_into(model, path)
    cbs = ([WaveToMel(mel)] if cfg.wave_augment else []) + [
        get_augment(name, seed=cfg.seed * 1000 + k) for name in cfg.augment
    ]
    learn = Learner(dls, model, loss_func=get_loss(cfg.loss), metrics=[LwlrapMetric()], cbs=cbs, wd=cfg.wd,
                    path=stage_dir, model_dir=".")
    if cfg.mixed_precision and device.type == "cuda":
        learn = learn.to_fp16()
    return learn


def _fit(learn, cfg: StageConfig) -> None:
    import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle)

    if use_distributed():
        import fastai.distributed  # noqa: F401  (adds distrib_ctx)

        with learn.distrib_ctx():
            learn.fit_one_cycle(cfg.epochs, lr_max=cfg.lr)
    else:
        learn.fit_one_cycle(cfg.epochs, lr_max=cfg.lr)


def _history(learn) -> dict:
    rec = learn.recorder
    names = [n for n in rec.metric_names[1:] if n != "time"]
    epochs = [dict(zip(names, [float(v) if v is not None else None for v in vals])) for vals in rec.values]
    return {"batch_loss": [float(v) for v in rec.losses], "epochs": epochs}


def _train_fold(inp: _Inputs, k: int, stage_dir: Path, *, progress: bool) -> None:
    from fastai.torch_core import set_seed

    from .weights import save_weights

    cfg, mel = inp.cfg, inp.mel
    device = _device()
    set_seed(cfg.seed * 1000 + k, reproducible=False)
    parts, cur_rows, noisy_rows = _train_parts(inp, k)
    learn = _make_learner(inp, k, parts, stage_dir, device)
    if progress:
        _fit(learn, cfg)
    else:
        with learn.no_bar(), learn.no_logging():
            _fit(learn, cfg)
    if not is_main_process():
        return
    model = learn.model
    cur_valid = np.flatnonzero(inp.cur_folds == k)
    noisy_valid = np.flatnonzero(inp.noisy_folds == k)
    step = cfg.step_frames
    oof_c = predict_rows(model, inp.cur_cache, cur_valid, cfg=mel, step_frames=step, batch_size=cfg.batch_size)
    oof_n = (predict_rows(model, inp.noisy_cache, noisy_valid, cfg=mel, step_frames=step,
                             batch_size=cfg.batch_size) if len(noisy_valid) else np.zeros((0, len(inp.vocab))))
    save_npy(stage_dir / f"fold{k}_oof_curated.npy", oof_c)
    save_npy(stage_dir / f"fold{k}_oof_noisy.npy", oof_n)
    record = {
        "fold": k,
        "train_curated": [inp.cur_paths[i].name for i in cur_rows],
        "train_noisy": [inp.noisy_paths[i].name for i in noisy_rows],
        "valid_curated": [inp.cur_paths[i].name for i in cur_valid],
        "oof_noisy": [inp.noisy_paths[i].name for i in noisy_valid],
        "history": _history(learn),
    }
    write_json(stage_dir / f"fold{k}.json", record)
    save_weights(stage_dir / f"fold{k}.safetensors", model, model_name=cfg.model,
                 model_kwargs={"n_classes": len(inp.vocab), "in_channels": mel.channels, **cfg.model_kwargs},
                 mel_config=mel.to_dict(), vocab=inp.vocab, extra={"stage": cfg.name, "fold": k})
    write_text(stage_dir / f"fold{k}.done", "done\n")


def fold_done(stage_dir, k: int) -> bool:
    stage_dir = Path(stage_dir)
    return (stage_dir / f"fold{k}.done").exists() and (stage_dir / f"fold{k}.safetensors").exists()


def _prepare(cfg: StageConfig, data, run_dir: Path, cache_dir, progress: bool, roots) -> _Inputs:
    from .cache import FeatureCache
    from .select import read_selection

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
        get_augment(name)
    create_model(cfg.model, n_classes=n_classes, in_channels=mel.channels, **cfg.model_kwargs)


def train_stage(cfg: StageConfig, data, *, run_dir, cache_dir, progress: bool = True, input_roots=()) -> StageResult:
    """Train (or finish) stage ``cfg`` on ``data`` (a FatData) in ``run_dir/cfg.name``; see the module doc.
    ``input_roots``: earlier sessions' outputs (fatlib.runs.Roots), read-only: init_from and caches are
    read there, and this stage's finished folds are copied from there first."""
    from .runs import Roots

    cfg.validate()
    run_dir = Path(run_dir)
    stage_dir = run_dir / cfg.name
    roots = Roots(input_roots)
    if cfg.selection_csv and not Path(cfg.selection_csv).exists():
        raise DataError(f"selection_csv={cfg.selection_csv}: not found; run `python -m fatlib select` first.")
    _check_components(cfg, n_classes=len(data.vocab))
    _tune_cpu(_device())
    roots.adopt_stage(stage_dir)  # an earlier session's finished folds of this stage, copied here first
    inp = _prepare(cfg, data, run_dir, cache_dir, progress, roots)
    if is_main_process():
        _check_config(stage_dir, cfg)
    for k in range(cfg.n_folds):  # each fold's epochs and batches show fastai's progress bars
        if fold_done(stage_dir, k):
            continue
        if progress:
            print(f"{cfg.name}: fold {k + 1}/{cfg.n_folds}")
        _train_fold(inp, k, stage_dir, progress=progress)
    if not is_main_process():
        return None
    return _finish(inp, stage_dir)


def _finish(inp: _Inputs, stage_dir: Path) -> StageResult:
    from .metrics import lwlrap, per_class_lwlrap, per_sample_lwlrap

    n_cls = len(inp.vocab)
    oof_c = np.full((len(inp.cur_y), n_cls), np.nan, np.float32)
    oof_n = np.full((len(inp.noisy_y), n_cls), np.nan, np.float32)
    fold_c, fold_n, histories = [], [], []
    for k in range(inp.cfg.n_folds):
        cv, nv = inp.cur_folds == k, inp.noisy_folds == k
        oof_c[cv] = np.load(stage_dir / f"fold{k}_oof_curated.npy")
        if nv.any():
            oof_n[nv] = np.load(stage_dir / f"fold{k}_oof_noisy.npy")
        fold_c.append(lwlrap(inp.cur_y[cv], oof_c[cv]))
        fold_n.append(lwlrap(inp.noisy_y[nv], oof_n[nv]) if nv.any() else float("nan"))
        histories.append(json.loads((stage_dir / f"fold{k}.json").read_text())["history"])
    cols = list(inp.vocab)
    cur_names = [p.name for p in inp.cur_paths]
    noisy_names = [p.name for p in inp.noisy_paths]
    write_csv(stage_dir / "oof_curated.csv", pd.concat([pd.DataFrame({"fname": cur_names}),
                                                        pd.DataFrame(oof_c, columns=cols)], axis=1))
    write_csv(stage_dir / "oof_noisy.csv", pd.concat([pd.DataFrame({"fname": noisy_names}),
                                                      pd.DataFrame(oof_n, columns=cols)], axis=1))
    noisy_lw = per_sample_lwlrap(inp.noisy_y, oof_n) if len(noisy_names) else np.zeros(0)
    write_csv(stage_dir / "noisy_lwlrap.csv", pd.DataFrame({"fname": noisy_names, "lwlrap": noisy_lw}))
    per_class, weights = per_class_lwlrap(inp.cur_y, oof_c)
    cv_c = lwlrap(inp.cur_y, oof_c)
    cv_n = lwlrap(inp.noisy_y, oof_n) if len(noisy_names) else float("nan")
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


def config_from_args(args) -> StageConfig:
    """A StageConfig from ``--config`` (JSON) with command-line values on top."""
    base = StageConfig.load(args.config).to_dict() if args.config else {"name": args.stage or "stage"}
    over = {
        "name": args.stage, "model": args.model, "train_on": args.train_on, "epochs": args.epochs, "lr": args.lr,
        "batch_size": args.batch_size, "n_folds": args.n_folds, "preset": args.preset, "loss": args.loss,
        "augment": args.augment, "seed": args.seed, "n_workers": args.workers, "selection_csv": args.selection,
        "model_kwargs": json_arg(args.model_kwargs, flag="--model-kwargs"), "mel": json_arg(args.mel, flag="--mel"),
    }
    if args.init_from:
        p = Path(args.init_from)
        over["init_from"] = str(p if p.is_dir() else Path(args.weights) / args.run / args.init_from)
    if args.wave_augment:
        over["wave_augment"] = True
    return StageConfig.from_dict({**base, **{k: v for k, v in over.items() if v is not None}})


def _cli(args) -> int:
    from .data import FatData

    cfg = config_from_args(args)
    data = FatData.from_dir(args.data)
    res = train_stage(cfg, data, run_dir=Path(args.weights) / args.run, cache_dir=args.cache_dir,
                      progress=not args.quiet, input_roots=args.input_roots)
    if res is not None:
        print(f"{cfg.name}: CV lwlrap curated {res.cv_curated:.4f}, noisy {res.cv_noisy:.4f} -> {res.stage_dir}")
    return 0


def add_stage_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``train-stage`` and ``warmup``."""
    p.add_argument("--data", default=None, help="data folder (default: input/ or the Kaggle path)")
    p.add_argument("--run", required=True, help="run name: outputs in <weights>/<run>/")
    p.add_argument("--weights", default="weights", help="weights root (default: weights)")
    p.add_argument("--cache-dir", default="cache", help="feature cache folder (default: cache)")
    p.add_argument("--model", default=None, help="registered model name (cnn_model_1, vgg16_bn, ...)")
    p.add_argument("--model-kwargs", default=None, help='JSON, e.g. \'{"width_mult": 0.5}\'')
    p.add_argument("--preset", default=None, help="feature preset (cnn128, dense64)")
    p.add_argument("--mel", default=None, help='JSON MelConfig overrides, e.g. \'{"n_mels": 64}\'')
    p.add_argument("--loss", default=None, help="bce | lsep | focal")
    p.add_argument("--augment", nargs="*", default=None, help="augmentation names (none: empty)")
    p.add_argument("--epochs", type=int, default=None, help="passes over the training split per fold")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--batch-size", type=int, default=None, help="clips per batch")
    p.add_argument("--n-folds", type=int, default=None, help="K of the K-fold split of curated")
    p.add_argument("--seed", type=int, default=None, help="training seed (augmentations, initialisation)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader worker processes")
    p.add_argument("--wave-augment", action="store_true", help="on-the-fly waveforms with WaveAugment")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "train-stage", help="train one stage over K folds (OOF outputs, weights)",
        description="Train one stage over K folds into <weights>/<run>/<stage>/: fold weights, out-of-fold "
        "predictions, metrics. Options override --config; finished folds are skipped on rerun.",
    )
    add_stage_arguments(p)
    p.add_argument("--stage", default=None, help="stage name (folder inside the run)")
    p.add_argument("--config", default=None, help="StageConfig JSON (command-line options override it)")
    p.add_argument("--train-on", default=None, choices=TRAIN_ON,
                   help="training split: noisy only, curated only, or curated + a --selection of noisy clips")
    p.add_argument("--selection", default=None, help="selection CSV (train_on curated+selected)")
    p.add_argument("--init-from", default=None, help="stage folder or stage name in the run")
    p.set_defaults(func=_cli)
