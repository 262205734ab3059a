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

import contextlib
import types
from pathlib import Path

import numpy as np
import torch

from . import distrib
from .atomic import save_npy, write_json, write_text
from .distrib import is_main_process
from .errors import DataError
from .guards import check_output_not_input, data_inputs
from .learner import fit, fold_history, is_data_parallel, make_learner
from .run_models import check_init_folds
from .settings import (  # noqa: F401
    KEEP,
    MAX_WORKERS,
    RUNTIME_FIELDS,
    SCHEDULES,
    TRAIN_ON,
    Source,
    StageConfig,
    default_n_workers,
    describe_sources,
)
from .stage_inputs import StageInputs, fold_train_clips, prepare_inputs, train_parts
from .stage_outputs import StageResult, finish_stage


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
    from .loaders import CacheSubset
    from .predict import predict_clips

    return predict_clips(model, CacheSubset(cache, rows), cfg, tta="windows", step_frames=step_frames,
                         batch_size=batch_size, device=next(model.parameters()).device, progress=False)


# -------------------------------------------------------------------------------------- training
def effective_config(cfg: StageConfig, *, n_train: int, n_dataset: int, given=None) -> tuple[StageConfig, str]:
    """The settings a stage trains with: with ``cfg.auto_scale``, batch size, learning rate, epochs
    and (when unset) width scaled to ``n_train`` clips per fold in a data set of ``n_dataset`` clips
    (:mod:`fatlib.autoscale`), except the fields somebody gave: ``given`` maps those field names to where
    they were given ("--epochs", "--config c.json", ...), and they are used as given.
    Returns (config, one line saying what was chosen and what was left alone)."""
    given = dict(given or {})
    cfg = with_feature_rows(cfg)
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


def scaled_sources(sources: dict, asked: StageConfig, eff: StageConfig, *, n_train: int | None = None,
                   n_dataset: int | None = None) -> dict:
    """``sources`` with the fields auto scaling changed from ``asked`` to ``eff`` marked ``auto_scale`` (the folds
    for a data set of ``n_dataset`` clips; batch size, lr, epochs and width for ``n_train`` clips per fold)."""
    out = dict(sources)
    if eff.n_folds != asked.n_folds:
        out["n_folds"] = Source("auto_scale", f"{eff.n_folds} folds on {n_dataset} clips (recipe {asked.n_folds})")
    for f in ("batch_size", "lr", "epochs"):
        if getattr(eff, f) != getattr(asked, f):
            out[f] = Source("auto_scale", f"{getattr(eff, f):g} for {n_train} training clips per fold "
                            f"(was {getattr(asked, f):g}, {out.get(f, Source('default'))})")
    if eff.model_kwargs != asked.model_kwargs:
        out["model_kwargs"] = Source("auto_scale", f"width_mult {eff.model_kwargs.get('width_mult')} from the data set size")
    return out


def _train_fold(inp: StageInputs, cfg: StageConfig, k: int, stage_dir: Path, *, bars: bool, log, cbs=()) -> None:
    from fastai.torch_core import set_seed

    from .checkpoint import save_weights
    from .metrics import lwlrap
    from .preflight import errors_name

    mel = inp.mel
    device = _device()
    set_seed(cfg.seed * 1000 + k, reproducible=False)
    parts, cur_rows, noisy_rows = train_parts(inp, k)
    learn = make_learner(inp, cfg, k, parts, stage_dir, device, log=log, cbs=cbs)
    # one line per epoch, EpochLog's (epochs from 1, 4 decimals): never fastai's table as well; bars only for batches
    with errors_name(stage_dir), learn.no_logging(), (contextlib.nullcontext() if bars else learn.no_bar()):
        fit(learn, cfg)  # errors_name: a write inside fastai (its CSV history) that fails names the stage folder
    if is_data_parallel(cfg) and not is_main_process():
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
    history = fold_history(learn)
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


def _check_components(cfg: StageConfig, data):
    """Fail on a bad preset, model, model option, loss or augmentation name now, not after the cache build.
    Returns the model built once for the checks, at the width auto scaling will choose."""
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
    return create_model(cfg.model, n_classes=len(data.vocab), in_channels=mel.channels, **model_kwargs_for(cfg, data))


def check_components(cfg: StageConfig) -> None:
    """:func:`_check_components` for a stage of a recipe before the data is read (any class count)."""
    _check_components(cfg, types.SimpleNamespace(vocab=["a", "b"], n_train_clips=2))


def with_feature_rows(cfg: StageConfig) -> StageConfig:
    """``cfg`` with ``model_kwargs.n_bins`` set to its features' mel bands for a model built for a number of
    frequency rows (``stft1d_3rd``) when nobody gave it: ``--set mel.n_mels=32`` builds the model it feeds."""
    from .models import feature_rows_option

    rows = feature_rows_option(cfg.model, n_mels=cfg.mel_config().n_mels, given=cfg.model_kwargs)
    return cfg.replace(model_kwargs={**cfg.model_kwargs, **rows}) if rows else cfg


def model_kwargs_for(cfg: StageConfig, data) -> dict:
    """The model options stage ``cfg`` trains with on ``data``: its own, with the width auto scaling chooses
    from the data set size when it sets none (:func:`fatlib.autoscale.dataset_width`, as :func:`effective_config`)."""
    from .autoscale import dataset_width

    kwargs = dict(with_feature_rows(cfg).model_kwargs)
    if cfg.auto_scale and "width_mult" not in kwargs:
        kwargs["width_mult"] = dataset_width(data.n_train_clips)
    return kwargs


def _check_before_writing(cfg: StageConfig, data, *, model, stage_dir: Path, todo: list[int], roots) -> None:
    """What can be checked before config.json is written: a refused run must not leave a config.json that
    makes its corrected rerun fail as "started with other settings". Split sizes, and the init_from stage:
    found, and each fold to train has weights of this ``model`` (:func:`_check_components`'s), vocabulary and width."""
    from .checkpoint import check_compatible, check_fits, read_metadata

    if data.curated.targets is None or len(data.curated.fnames) < cfg.n_folds:
        raise DataError(f"{data.root / 'train_curated.csv'}: {len(data.curated.fnames)} labelled clips; the curated "
                        f"split needs at least n_folds={cfg.n_folds}. Add clips or lower --n-folds.")
    if cfg.train_on == "noisy" and len(data.noisy.fnames) < cfg.n_folds:
        raise DataError(f"{data.root / 'train_noisy.csv'}: {len(data.noisy.fnames)} clips; train_on='noisy' needs at "
                        f"least n_folds={cfg.n_folds}. Add clips or train on curated.")
    from .setting_rules import check_n_folds

    check_n_folds(cfg.n_folds, data)  # names the split; before any folds file is written
    if not cfg.init_from:
        return
    init_dir = roots.find_stage(cfg.init_from)
    if init_dir is None:
        raise DataError(f"init_from={cfg.init_from!r}: no such stage folder; train that stage first or fix the path.")
    check_init_folds(init_dir, cfg.n_folds)  # "2 folds there, 3 here"
    for k in todo:
        if not fold_done(stage_dir, k):
            path = Path(init_dir) / f"fold{k}.safetensors"
            check_compatible(path, read_metadata(path), model_name=cfg.model, vocab=data.vocab)
            check_fits(model, path)


def train_stage(cfg: StageConfig, data, *, run_dir, cache_dir, progress: bool = True, folds=None,
                cbs=(), input_roots=(), note: str | None = None, given=None, sources=None) -> StageResult | None:
    """Train (or finish) stage ``cfg`` on ``data`` (a FatData) in ``run_dir/cfg.name``; see the module doc.

    ``progress``: bars in a terminal or notebook, plain lines elsewhere (:mod:`fatlib.progress`);
    False drops the bars but never the per-epoch and per-fold lines. Every line also goes to
    ``<stage>/log.txt``. ``folds``: train only these fold indices (the rest stay as they are; the
    stage's outputs are written once every fold is done). ``cbs``: extra fastai callbacks for every
    fold's Learner (a CSVLogger, W&B, TensorBoard, ...). ``input_roots``: earlier sessions' outputs
    (fatlib.workspace.Roots), read-only: init_from and caches are read there, and this stage's finished
    folds are copied from there first. ``note``: a line logged before the settings (e.g. why the model
    is not the recipe's). ``given``: field -> where it was given (an option, ``--config``, ``--set``, an
    argument): auto scaling leaves those fields as they are and says so (:func:`effective_config`).
    ``sources``: field -> :class:`fatlib.settings.Source`, where every value came from (recipe file and
    line, ``[small_data]``, an option, ...; ``given`` is read from it when it is given); the fields auto
    scaling fills are added, and the log's first lines and ``config.json`` (``sources``) record them.
    Returns None until every fold is done, and on processes other than the main one.

    Launched as several processes (``torchrun`` / ``accelerate launch``, :mod:`fatlib.distrib`), each
    fold is trained by all of them together (data parallel), or with ``cfg.fold_parallel`` process r
    trains folds r, r+W, ...; rank 0 alone builds the caches (the others wait, then open them) and
    writes the stage's outputs, and every process returns only after they are written.
    """
    from .progress import LineLog, bars_enabled
    from .workspace import Roots

    sources = dict(sources or {})
    if given is None:
        given = {f: src.where for f, src in sources.items() if src.given}
    for f, where in given.items():
        sources.setdefault(f, Source.of_given(where))
    asked = cfg.validate()
    cfg = folds_for_data(asked, data, given)
    sources = scaled_sources(sources, asked, cfg, n_dataset=data.n_train_clips)
    run_dir = Path(run_dir)
    stage_dir = run_dir / cfg.name
    todo = _check_folds(folds, cfg.n_folds)
    roots = Roots(input_roots)
    if cfg.selection_csv and not Path(cfg.selection_csv).exists():
        raise DataError(f"selection_csv={cfg.selection_csv}: not found; run `python -m fatlib select` first.")
    model = _check_components(cfg, data)
    _tune_cpu(_device())
    if is_data_parallel(cfg):
        import accelerate  # noqa: F401  (fastai's DistributedTrainer needs it: fail now, not after the cache build)
    main = is_main_process()
    with distrib.main_first():  # rank 0 writes the config, fold lists and caches; the others then read them
        if main:  # the outputs fit (the model built once for every check), then an earlier session's folds
            check_stage_outputs(cfg, data, run_dir=run_dir, cache_dir=cache_dir, input_roots=roots.inputs, model=model)
            roots.adopt_stage(stage_dir)  # an earlier session's finished folds of this stage, copied here first
            _check_before_writing(cfg, data, model=model, stage_dir=stage_dir, todo=todo, roots=roots)
            _check_config(stage_dir, cfg)
        inp = prepare_inputs(cfg, data, run_dir, cache_dir, progress, roots)
    writes = main or cfg.fold_parallel  # fold parallel: every process trains (and logs) its own folds
    log = LineLog(stage_dir / "log.txt" if writes else None, echo=writes)
    eff, chosen = effective_config(inp.cfg, n_train=fold_train_clips(inp), n_dataset=len(inp.cur_y) + len(inp.noisy_y),
                                   given=given)
    sources = scaled_sources(sources, inp.cfg, eff, n_train=fold_train_clips(inp))
    if main:
        how = ""
        if distrib.use_distributed():
            how = f"; {distrib.world_size()} processes, " + ("fold parallel" if cfg.fold_parallel else "data parallel")
        if note:
            log(note)
        log(f"{cfg.name}: {cfg.model}, {chosen}{how}")
        if sources:
            log(f"{cfg.name} settings (value: where it came from): " + "; ".join(describe_sources(eff, sources)),
                echo=False)
            write_json(stage_dir / "config.json", {**cfg.to_dict(), "sources": {
                f: {**src.to_dict(), "value": getattr(eff, f)} for f, src in sources.items()}})
    bars = progress and bars_enabled()
    pending = [k for k in todo if not fold_done(stage_dir, k)]  # the same list on every process
    for k in distrib.my_folds(pending, fold_parallel=cfg.fold_parallel):
        log(f"{cfg.name} fold {k + 1}/{cfg.n_folds}: training on {sum(len(r) for _, r, _ in train_parts(inp, k)[0])} clips")
        if is_data_parallel(cfg):
            _train_fold(inp, eff, k, stage_dir, bars=bars, log=log, cbs=cbs)
            distrib.barrier()  # rank 0 has written fold k
        else:  # one process, or this process's own fold of a fold-parallel job
            with distrib.alone():
                _train_fold(inp, eff, k, stage_dir, bars=bars, log=log, cbs=cbs)
    distrib.barrier()  # every process's folds are written
    res = None
    if main and all(fold_done(stage_dir, k) for k in range(cfg.n_folds)):
        res = finish_stage(inp, stage_dir)
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


def stage_inputs(cfg, data, cache_dir) -> list:
    """What a stage reads and must not write on: the data set, the selection CSV, the init_from stage, the cache."""
    return [*data_inputs(data), *[Path(p) for p in (cfg.selection_csv, cfg.init_from, cache_dir) if p]]


def check_stage_outputs(cfg, data, *, run_dir, cache_dir, input_roots=(), n_stages: int = 1, model=None) -> None:
    """Before training ``n_stages`` stages like StageConfig ``cfg`` on ``data`` (a FatData): the stage folder
    (all of ``run_dir`` when ``n_stages`` > 1) must take ``n_folds`` weights files per stage, and ``cache_dir``
    the caches not built yet (twice their size while a cache is assembled from its shards). ``model``: the
    stage's model when the caller has built it already (:func:`train_stage` has)."""
    from .cache import missing_cache_bytes
    from .models import create_model
    from .preflight import check_writable, weights_bytes

    mel = cfg.mel_config()
    if model is None:
        model = create_model(cfg.model, n_classes=len(data.vocab), in_channels=mel.channels,
                             **model_kwargs_for(cfg, data))
    fold = weights_bytes(model)
    out = Path(run_dir) if n_stages > 1 else Path(run_dir) / cfg.name
    inputs = stage_inputs(cfg, data, cache_dir)
    if cfg.selection_csv and n_stages == 1 and Path(cfg.selection_csv).parent == out:  # the engine's <stage>/selected.csv:
        inputs = [p for p in inputs if p != Path(cfg.selection_csv)]  # written before the stage, never by it
    check_output_not_input(out, inputs=inputs, what="stage folder", folder=True, within=input_roots)
    check_output_not_input(cache_dir, inputs=data_inputs(data), what="--cache-dir", folder=True)
    todo = cfg.n_folds * n_stages if n_stages > 1 else sum(not fold_done(out, k) for k in range(cfg.n_folds))
    check_writable(out, expected_bytes=fold * todo, largest_file_bytes=fold,  # finished folds need no room again
                   what="stage folder (--weights/--run)")
    caches = [missing_cache_bytes(split.paths(), mel, cache_dir=cache_dir, name=name, input_roots=input_roots)
              for name, split in (("curated", data.curated), ("noisy", data.noisy))]
    if sum(caches):
        check_writable(cache_dir, expected_bytes=2 * sum(caches), largest_file_bytes=max(caches),
                       what="feature cache folder (--cache-dir)")
