"""The "plateau" schedule (9th place's fine-tuning: fastai's ReduceLROnPlateau, restarted at the high lr
several times) on a tiny fastai fit, and the checks of its settings."""
from __future__ import annotations

import numpy as np
import pytest

from fatlib.errors import DataError
from fatlib.settings import StageConfig


def _fit(*, improving: bool, log=None, **fields):
    """A linear model fitted with fatlib's schedule; returns the lr of each epoch (8 batches per epoch)."""
    import fastai.callback.progress  # noqa: F401  (Learner.no_bar)
    import torch
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from torch import nn
    from torch.utils.data import TensorDataset

    from fatlib import learner

    torch.manual_seed(0)
    w = torch.randn(4, 2)
    xt, xv = torch.randn(64, 4), torch.randn(16, 4)
    # anti-correlated validation targets: learning the training set makes the validation loss worse each epoch
    valid = TensorDataset(xv, (xv @ w) if improving else -(xv @ w))
    dls = DataLoaders.from_dsets(TensorDataset(xt, xt @ w), valid, bs=8, num_workers=0)  # no worker forks per epoch
    learn = Learner(dls, nn.Linear(4, 2), loss_func=nn.MSELoss())
    if log is not None:
        from fatlib.callbacks import EpochLog

        learn.add_cb(EpochLog(log.append, prefix="fold 0 "))
    cfg = StageConfig(name="x", schedule="plateau", **fields)
    with learn.no_bar(), learn.no_logging():
        learner.fit(learn, cfg)
    lrs = np.array(learn.recorder.lrs)
    assert len(lrs) == 8 * cfg.epochs
    per_epoch = lrs.reshape(cfg.epochs, 8)
    assert np.all(per_epoch == per_epoch[:, :1])  # the lr changes only between epochs
    names = learn.recorder.metric_names[1:]
    return per_epoch[:, 0], [v[names.index("valid_loss")] for v in learn.recorder.values]  # lrs, validation losses


@pytest.mark.parametrize("cycles,patience,factor,expected", [
    # one run: cut after each epoch without a lower validation loss (fastai's ReduceLROnPlateau)
    (1, 1, 10.0, [1, 1, 0.1, 0.01, 0.001, 1e-4]),
    # three runs of 2 epochs: back to the high lr at epochs 2 and 4
    (3, 1, 10.0, [1, 1, 1, 1, 1, 1]),
    # two runs of 3 epochs, patience 1: high, high, cut; high again, high, cut
    (2, 1, 10.0, [1, 1, 0.1, 1, 1, 0.1]),
    # patience 2 epochs, factor 4: the first stall is waited out
    (1, 2, 4.0, [1, 1, 1, 0.25, 0.25, 0.0625]),
])
def test_plateau_cuts_the_lr_on_stalls_and_restarts_at_the_high_lr(cycles, patience, factor, expected):
    lrs, valid = _fit(improving=False, epochs=6, lr=0.01, plateau_cycles=cycles, plateau_patience_epochs=patience,
                      plateau_factor=factor)
    assert np.all(np.diff(valid) > 0)  # every epoch's validation loss is higher than the one before (no new best)
    np.testing.assert_allclose(lrs, 0.01 * np.array(expected), rtol=1e-6)


def test_plateau_cuts_and_restarts_go_to_the_stage_log_not_stdout(capsys):
    """fastai's ReduceLROnPlateau prints its cuts on stdout (even under --quiet); fatlib's schedule writes
    them, and each restart, as lines of the stage's log."""
    lines: list[str] = []
    _fit(improving=False, log=lines, epochs=6, lr=0.01, plateau_cycles=2)
    assert capsys.readouterr().out == ""
    events = [ln for ln in lines if "lr " in ln]
    assert events == ["fold 0 epoch 2: lr cut to 1.00e-03 (validation loss 1 epoch(s) without a new best)",
                      "fold 0 epoch 3: lr cut to 1.00e-04 (validation loss 1 epoch(s) without a new best)",
                      "fold 0 epoch 4: lr back to 1.00e-02 (restart)",
                      "fold 0 epoch 5: lr cut to 1.00e-03 (validation loss 1 epoch(s) without a new best)",
                      "fold 0 epoch 6: lr cut to 1.00e-04 (validation loss 1 epoch(s) without a new best)"]


def test_plateau_holds_the_high_lr_while_the_validation_loss_falls():
    lrs, valid = _fit(improving=True, epochs=4, lr=0.01, plateau_cycles=2)
    assert np.all(np.diff(valid) < 0)
    np.testing.assert_allclose(lrs, 0.01)


def test_plateau_starts_split_the_epochs_between_the_runs():
    from fatlib.learner import plateau_starts

    assert plateau_starts(10, 3) == [0, 3, 6]
    assert plateau_starts(30, 3) == [0, 10, 20]
    assert plateau_starts(2, 3) == [0, 1]  # at most one run per epoch
    assert plateau_starts(5, 1) == [0]


@pytest.mark.parametrize("key,value,want", [
    ("plateau_cycles", 0, "a whole number >= 1"), ("plateau_cycles", 1.5, "a whole number >= 1"),
    ("plateau_patience_epochs", 0, "a whole number >= 1"), ("plateau_patience_epochs", True, "a whole number"),
    ("plateau_factor", 1.0, "a number > 1"), ("plateau_factor", 0.1, "a number > 1"),
    ("plateau_factor", "10", "without quotes"),
])
def test_plateau_settings_are_checked_with_the_field_named(key, value, want):
    from fatlib.setting_rules import check_settings

    with pytest.raises(DataError, match=rf"^StageConfig 'x': {key} = .* is not .*; .*{key}") as e:
        StageConfig(name="x", schedule="plateau", **{key: value})
    assert want in str(e.value)
    with pytest.raises(DataError, match=rf"^recipe.toml \[stages.ft\]: {key} = "):
        check_settings({key: value}, source="recipe.toml [stages.ft]")
    assert StageConfig(name="x", schedule="plateau", plateau_cycles=3, plateau_patience_epochs=2,
                       plateau_factor=10.0).plateau_cycles == 3
