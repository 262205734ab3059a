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

import json
from dataclasses import dataclass
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
from .settings import KEEP, MAX_WORKERS, RUNTIME_FIELDS, SCHEDULES, TRAIN_ON, StageConfig, default_n_workers  # noqa: F401


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
