"""One fold's fastai Learner (data, model, loss, metric, callbacks) and its fit under the stage's schedule
(one-cycle, warm-up + cosine, plateau with restarts at the high lr), alone or data parallel over several processes (:mod:`fatlib.distrib`);
the output layer's bias at the class priors; the fold's training history."""
from __future__ import annotations

import contextlib
import functools
import io
from pathlib import Path

import numpy as np
import torch

from . import distrib
from .distrib import is_main_process
from .errors import DataError
from .settings import StageConfig
from .stage_inputs import StageInputs


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


def make_learner(inp: StageInputs, cfg: StageConfig, k: int, parts, stage_dir: Path, device, *, log, cbs=()):
    import fastai.callback.progress  # noqa: F401  (adds Learner.no_bar, the progress callback)
    from fastai.callback.progress import CSVLogger
    from fastai.callback.training import GradientClip
    from fastai.learner import Learner

    from .augment import get_augment
    from .callbacks import EpochLog, KeepBest
    from .checkpoint import check_compatible, load_into, read_metadata
    from .loaders import ChannelsLast, build_dataloaders, input_callbacks
    from .losses import get_loss
    from .metrics import LwlrapMetric
    from .models import create_model

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
    per_process = max(1, cfg.batch_size // distrib.world_size()) if is_data_parallel(cfg) else cfg.batch_size
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
    if is_main_process() or not is_data_parallel(cfg):  # one writer of the fold's history
        fold_cbs += [CSVLogger(fname=f"fold{k}_history.csv")]
    fold_cbs += [KeepBest("lwlrap")] if cfg.keep == "best" else []
    fold_cbs += [GradientClip(cfg.grad_clip)] if cfg.grad_clip else []
    learn = Learner(dls, model, loss_func=get_loss(cfg.loss), metrics=[LwlrapMetric()], cbs=fold_cbs + list(cbs),
                    wd=cfg.wd, path=stage_dir, model_dir=".")
    if cfg.mixed_precision and device.type == "cuda":
        learn = learn.to_fp16()
    return learn


def is_data_parallel(cfg: StageConfig) -> bool:
    """Several processes training one fold together (not fold parallel)."""
    return distrib.use_distributed() and not cfg.fold_parallel


def fit(learn, cfg: StageConfig) -> None:
    import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle)

    if is_data_parallel(cfg):
        with distrib.data_parallel(learn):
            fit_schedule(learn, cfg)
    else:
        fit_schedule(learn, cfg)


def fit_schedule(learn, cfg: StageConfig) -> None:
    """Fit ``cfg.epochs`` epochs under ``cfg.schedule`` (fastai's schedulers and callbacks)."""
    from fastai.callback.schedule import ParamScheduler, SchedCos, SchedLin, combine_scheds

    if cfg.schedule == "one_cycle":
        learn.fit_one_cycle(cfg.epochs, lr_max=cfg.lr, pct_start=cfg.pct_start)
    elif cfg.schedule == "warmup_cosine":
        warm = cfg.pct_start
        sched = combine_scheds([warm, 1 - warm], [SchedLin(cfg.lr / 100, cfg.lr), SchedCos(cfg.lr, 0.0)]) if warm \
            else SchedCos(cfg.lr, 0.0)
        learn.fit(cfg.epochs, lr=cfg.lr, cbs=ParamScheduler({"lr": sched}))
    else:
        learn.fit(cfg.epochs, lr=cfg.lr, cbs=plateau_callback(cfg))


def plateau_starts(epochs: int, cycles: int) -> list[int]:
    """The first epoch (0-based) of each run of the "plateau" schedule: ``epochs`` split evenly between
    ``cycles`` runs (at most ``epochs`` runs, each at least one epoch long; 10 epochs in 3: 0, 3, 6)."""
    n = max(1, min(int(cycles), int(epochs)))
    return [i * int(epochs) // n for i in range(n)]


def plateau_callback(cfg: StageConfig):
    """The "plateau" schedule as one fastai callback over ``cfg.epochs`` epochs (:func:`plateau_restarts`)."""
    return plateau_restarts()(high_lr=cfg.lr, starts=plateau_starts(cfg.epochs, cfg.plateau_cycles),
                              patience=cfg.plateau_patience_epochs, factor=cfg.plateau_factor)


@functools.cache
def plateau_restarts():
    """The callback class ``PlateauRestarts`` (built on first use: fastai is imported only for training).

    fastai's ``ReduceLROnPlateau`` on the validation loss (the lr divided by ``factor`` after ``patience``
    epochs without a lower one), restarted at each epoch of ``starts`` after the first: the lr set back to
    ``high_lr`` and fastai's tracker reset (best loss and patience), as if ``fit`` began again. One ``fit``,
    so the recorder, the fold's history and :class:`~fatlib.callbacks.KeepBest` see every epoch."""
    from fastai.callback.tracker import ReduceLROnPlateau

    class PlateauRestarts(ReduceLROnPlateau):
        def __init__(self, *, high_lr: float, starts, patience: int = 1, factor: float = 10.0):
            super().__init__(monitor="valid_loss", patience=patience, factor=factor)
            self.high_lr, self.restarts = float(high_lr), sorted(set(starts) - {0})

        def before_epoch(self):
            if self.epoch in self.restarts:
                for h in self.opt.hypers:
                    h["lr"] = self.high_lr
                ReduceLROnPlateau.before_fit(self)  # fastai's own reset: wait = 0, best = +inf
                self._say(f"epoch {self.epoch + 1}: lr back to {self.high_lr:.2e} (restart)")

        def after_epoch(self):  # fastai prints its cut on stdout even under --quiet: into the stage's log instead
            with contextlib.redirect_stdout(io.StringIO()) as printed:
                super().after_epoch()
            if printed.getvalue().strip():
                self._say(f"epoch {self.epoch + 1}: lr cut to {self.opt.hypers[-1]['lr']:.2e} (validation loss "
                          f"{self.patience} epoch(s) without a new best)")

        def _say(self, line: str) -> None:
            from .callbacks import EpochLog

            log = next((cb for cb in self.learn.cbs if isinstance(cb, EpochLog)), None)
            if log is not None:
                log.log(f"{log.prefix}{line}")

    PlateauRestarts.__doc__ = plateau_restarts.__doc__.split("\n\n", 1)[1]
    return PlateauRestarts


def fold_history(learn) -> dict:
    from .callbacks import EpochLog, KeepBest

    rec = learn.recorder
    names = [n for n in rec.metric_names[1:] if n != "time"]
    seconds = next((cb.seconds for cb in learn.cbs if isinstance(cb, EpochLog)), [])
    epochs = [{**dict(zip(names, [float(v) if v is not None else None for v in vals])),
               **({"seconds": seconds[i]} if i < len(seconds) else {})} for i, vals in enumerate(rec.values)]
    best = next((cb.best_epoch for cb in learn.cbs if isinstance(cb, KeepBest)), None)
    return {"batch_loss": [float(v) for v in rec.losses], "epochs": epochs,
            "kept_epoch": (len(epochs) - 1 if best is None else best) + 1}
