"""Settings that scale with the data (fatlib.autoscale) and the output-bias initialisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fatlib.autoscale import MIN_STEPS_PER_EPOCH, SMALL_DATA_FOLDS, dataset_width, scale_folds, scale_settings
from fatlib.learner import init_output_bias
from fatlib.train import StageConfig, effective_config, folds_for_data

RECIPE = dict(batch_size=128, lr=1e-3, epochs=20, min_steps=600)


def test_full_data_set_keeps_the_recipe():
    # FSDKaggle2019 curated, 10 folds: 4,473 clips per fold in a data set of 24,785
    sc = scale_settings(n_train=4473, n_dataset=24785, width_mult=None, **RECIPE)
    assert (sc.batch_size, sc.lr, sc.epochs, sc.width_mult) == (128, 1e-3, 20, 1.0)
    sc = scale_settings(n_train=17833, n_dataset=24785, width_mult=None, **{**RECIPE, "epochs": 30})  # stage 1, noisy
    assert (sc.batch_size, sc.epochs) == (128, 30)


@pytest.mark.parametrize("n_train", [40, 150, 375, 900, 2000])
def test_small_data_gets_enough_steps(n_train):
    sc = scale_settings(n_train=n_train, n_dataset=n_train, width_mult=None, **RECIPE)
    assert sc.batch_size <= 128 and sc.epochs >= 20
    assert sc.steps_per_epoch * sc.epochs >= RECIPE["min_steps"]
    assert sc.steps_per_epoch >= MIN_STEPS_PER_EPOCH or sc.batch_size == 8
    assert sc.lr == 1e-3  # Adam's rate is kept at small batches (measured on the real-audio benchmark)
    assert sc.width_mult == dataset_width(n_train) < 1.0


def test_small_data_sets_get_fewer_folds():
    assert scale_folds(10, n_dataset=24785) == 10 and scale_folds(10, n_dataset=1500) == 10
    assert scale_folds(10, n_dataset=417) == SMALL_DATA_FOLDS == 5 and scale_folds(3, n_dataset=417) == 3

    class Split:
        def __init__(self, n):
            self.fnames = [f"{i}.wav" for i in range(n)]

    class Data:
        curated, noisy = Split(300), Split(117)

        @property
        def n_train_clips(self):  # as FatData's
            return len(self.curated.fnames) + len(self.noisy.fnames)

    cfg = StageConfig(name="s", n_folds=10)
    assert folds_for_data(cfg, Data()).n_folds == 5
    assert folds_for_data(cfg.replace(auto_scale=False), Data()).n_folds == 10
    Data.noisy = Split(1500)  # the noisy split counts: one fold count for every stage of a run
    assert folds_for_data(cfg, Data()).n_folds == 10


def test_width_follows_the_data_set_not_the_fold():
    # stage 1 (noisy) and stage 2 (curated) of one run: one width, so stage 2 can start from stage 1
    a = scale_settings(n_train=1800, n_dataset=2400, width_mult=None, **RECIPE)
    b = scale_settings(n_train=540, n_dataset=2400, width_mult=None, **RECIPE)
    assert a.width_mult == b.width_mult
    assert scale_settings(n_train=540, n_dataset=2400, width_mult=0.75, **RECIPE).width_mult is None


def test_effective_config_and_auto_scale_off():
    cfg = StageConfig(name="s", **RECIPE)
    eff, line = effective_config(cfg, n_train=300, n_dataset=400)
    assert eff.batch_size < 128 and eff.epochs > 20 and eff.model_kwargs["width_mult"] == dataset_width(400)
    assert f"batch {eff.batch_size}" in line and f"{eff.epochs} epochs" in line and "300 training clips" in line
    off = cfg.replace(auto_scale=False)
    same, line = effective_config(off, n_train=300, n_dataset=400)
    assert same == off and "auto_scale off" in line
    kept = cfg.replace(model_kwargs={"width_mult": 1.0})
    assert effective_config(kept, n_train=300, n_dataset=400)[0].model_kwargs == {"width_mult": 1.0}


def test_output_bias_starts_at_the_class_priors():
    from fatlib.models import create_model

    torch.manual_seed(0)
    model = create_model("cnn_model_1", n_classes=4, in_channels=1, width_mult=0.125).eval()
    y = np.zeros((100, 4), np.float32)
    y[:50, 0] = 1
    y[50:90, 1] = 1
    y[90:, 2] = 1  # class 3 never occurs
    init_output_bias(model, y)
    # the head ends in BN -> Dropout -> Linear; zeroing the last weights leaves the bias alone
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        p = torch.sigmoid(model(torch.randn(2, 1, 32, 32)))[0].numpy()
    np.testing.assert_allclose(p, [0.5, 0.4, 0.1, 1e-3], rtol=1e-3)


def test_given_fields_are_kept_and_named():
    sc = scale_settings(n_train=8, n_dataset=16, width_mult=None, given={"epochs": "--epochs"}, **RECIPE)
    assert (sc.batch_size, sc.epochs, sc.kept) == (8, 20, ("epochs",))
    sc = scale_settings(n_train=300, n_dataset=400, width_mult=None, given={"batch_size"}, **RECIPE)
    assert sc.batch_size == 128 and sc.epochs * sc.steps_per_epoch >= RECIPE["min_steps"]
    cfg = StageConfig(name="s", **{**RECIPE, "epochs": 3})
    eff, line = effective_config(cfg, n_train=8, n_dataset=16, given={"epochs": "--epochs"})
    assert eff.epochs == 3 and eff.batch_size == 8 and "auto scaling left epochs=3 as given (--epochs)" in line
    assert scale_folds(10, n_dataset=417, given=True) == 10


def test_set_values_are_given():
    from fatlib.recipes import apply_sets, load_recipe

    rec = apply_sets(load_recipe("95th_place"), ["epochs=2", "stages.curated.batch_size=4", "lr=0.01"])
    assert rec.given_fields("curated") == {"epochs": "--set epochs=2", "batch_size": "--set stages.curated.batch_size=4",
                                           "lr": "--set lr=0.01"}
