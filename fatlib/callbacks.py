"""fastai callbacks of the training loop (the spectrogram augmentations live in ``fatlib.augment``):

- :class:`EpochLog`: one plain line per epoch (fold, epoch, train loss, valid loss, metrics, seconds)
  into a :class:`fatlib.progress.LineLog`, and the seconds of every epoch for the fold's history;
- :class:`KeepBest`: at the end of fitting, restore the weights of the epoch with the best monitored
  value (valid lwlrap by default) instead of keeping the last epoch's.
"""
from __future__ import annotations

import time

import numpy as np
from fastai.callback.core import Callback
from fastai.callback.tracker import TrackerCallback
from torch.nn.parallel import DataParallel, DistributedDataParallel


def _plain(model):
    """The model inside a (Distributed)DataParallel wrapper: data-parallel training unwraps it in its
    ``after_fit`` before KeepBest's, so the weights are kept and restored without the wrapper's prefix."""
    return model.module if isinstance(model, (DataParallel, DistributedDataParallel)) else model


class EpochLog(Callback):
    """After every epoch, ``log("<prefix> epoch e/E: train_loss .. valid_loss .. lwlrap .. (s)")``;
    ``seconds`` holds each epoch's wall time."""

    order = 51  # after the Recorder (50), which has just stored the epoch's values
    run_valid = False

    def __init__(self, log, *, prefix: str = ""):
        self.log, self.prefix = log, prefix
        self.seconds: list[float] = []

    def before_fit(self):
        self.seconds = []

    def before_epoch(self):
        self._start = time.perf_counter()

    def after_epoch(self):
        seconds = time.perf_counter() - self._start
        self.seconds.append(seconds)
        names = [n for n in self.recorder.metric_names[1:] if n != "time"]
        values = self.recorder.values[-1]
        parts = [f"{n} {float(v):.4f}" for n, v in zip(names, values) if v is not None]
        self.log(f"{self.prefix}epoch {self.epoch + 1}/{self.n_epoch}: {', '.join(parts)} ({seconds:.0f} s)")


class KeepBest(TrackerCallback):
    """Keep the weights of the best epoch by ``monitor`` (a recorder name: "lwlrap", "valid_loss")
    in memory and load them back after the last epoch. ``best_epoch`` is 0-based."""

    order = TrackerCallback.order + 1

    def __init__(self, monitor: str = "lwlrap", comp=None):
        super().__init__(monitor=monitor, comp=comp)
        self.best_state, self.best_epoch = None, None

    def before_fit(self):
        super().before_fit()
        self.best_state, self.best_epoch = None, None

    def after_epoch(self):
        super().after_epoch()
        if self.new_best and np.isfinite(self.best):
            self.best_epoch = self.epoch
            self.best_state = {k: v.detach().clone() for k, v in _plain(self.learn.model).state_dict().items()}

    def after_fit(self):
        super().after_fit()
        if self.best_state is not None:
            _plain(self.learn.model).load_state_dict(self.best_state)
