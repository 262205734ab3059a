"""train_stage on the tiny data set: outputs, resumability, out-of-fold hygiene, init_from, config."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fatlib.errors import DataError
from fatlib.train import StageConfig, train_stage

TINY = dict(model="cnn_model_1", model_kwargs={"width_mult": 0.125}, preset="cnn128",
            mel=dict(n_mels=32, n_fft=2048, hop_length=1024, crop_frames=32), epochs=1, n_folds=2,
            batch_size=24, augment=["specmix"], tta_step_frames=32, cache_jobs=1, auto_scale=False)


@pytest.fixture(scope="module")
def data(tiny_dataset):
    from fatlib.dataset import FatData

    return FatData.from_dir(tiny_dataset)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    """One finished curated stage shared by the tests below."""
    root = tmp_path_factory.mktemp("run")
    cfg = StageConfig(name="s1", train_on="curated", **TINY)
    res = train_stage(cfg, data, run_dir=root / "r", cache_dir=root / "cache", progress=False)
    return root, cfg, res


def test_stage_writes_every_output(run, data):
    root, _, res = run
    d = root / "r" / "s1"
    for name in ["config.json", "fold0.safetensors", "fold1.safetensors", "fold0.done", "fold1.done",
                 "oof_curated.csv", "oof_noisy.csv", "noisy_lwlrap.csv", "metrics.json", "curve.png"]:
        assert (d / name).is_file(), name
    assert (root / "r" / "folds_curated.csv").is_file() and (root / "r" / "folds_noisy.csv").is_file()
    oof = pd.read_csv(d / "oof_curated.csv")
    assert list(oof.columns) == ["fname", *data.vocab] and len(oof) == len(data.curated.fnames)
    p = oof[data.vocab].to_numpy()
    assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    assert len(pd.read_csv(d / "noisy_lwlrap.csv")) == len(data.noisy.fnames)
    m = json.loads((d / "metrics.json").read_text())
    assert len(m["fold_lwlrap_curated"]) == 2 and 0 < m["cv_lwlrap_curated"] <= 1
    assert set(m["per_class_lwlrap_curated"]) == set(data.vocab)
    assert m["cv_lwlrap_curated"] == pytest.approx(res.cv_curated)


def test_oof_fold_never_trained_on(run, data):
    root, _, _ = run
    folds = pd.read_csv(root / "r" / "folds_curated.csv").set_index("fname")["fold"]
    seen = set()
    for k in range(2):
        rec = json.loads((root / "r" / "s1" / f"fold{k}.json").read_text())
        assert not set(rec["train_curated"]) & set(rec["valid_curated"])
        assert all(folds[f] == k for f in rec["valid_curated"])
        assert all(folds[f] != k for f in rec["train_curated"])
        assert rec["train_noisy"] == []
        seen |= set(rec["valid_curated"])
    assert seen == set(data.curated.fnames)


def test_rerun_skips_finished_folds_and_redoes_unfinished(run, data):
    root, cfg, res = run
    d = root / "r" / "s1"
    before = {k: (d / f"fold{k}.safetensors").stat().st_mtime_ns for k in range(2)}
    res2 = train_stage(cfg, data, run_dir=root / "r", cache_dir=root / "cache", progress=False)
    assert {k: (d / f"fold{k}.safetensors").stat().st_mtime_ns for k in range(2)} == before
    assert res2.cv_curated == pytest.approx(res.cv_curated)
    (d / "fold1.done").unlink()  # as if interrupted during fold 1
    train_stage(cfg, data, run_dir=root / "r", cache_dir=root / "cache", progress=False)
    assert (d / "fold0.safetensors").stat().st_mtime_ns == before[0]
    assert (d / "fold1.safetensors").stat().st_mtime_ns != before[1]
    assert (d / "fold1.done").exists()


def test_changed_config_is_refused(run, data):
    root, cfg, _ = run
    with pytest.raises(DataError, match="other settings"):
        train_stage(cfg.replace(lr=0.5), data, run_dir=root / "r", cache_dir=root / "cache", progress=False)


def test_init_from_and_selected_noisy_respect_folds(run, data, monkeypatch):
    import fatlib.checkpoint
    from fatlib.folds import noisy_folds
    from fatlib.selection import select_by_agreement

    root, _, _ = run
    run_dir = root / "r"
    nf = noisy_folds(data, run_dir=run_dir, n_folds=2, seed=42)
    sel = select_by_agreement(np.ones(len(nf)), targets=data.noisy.targets, folds=nf, max_per_fold_label=None)
    csv = sel.write(root / "sel.csv", fnames=data.noisy.fnames, vocab=data.vocab)
    loaded = []
    real = fatlib.checkpoint.load_into

    def spy(model, path, **kw):
        loaded.append(path)
        return real(model, path, **kw)

    monkeypatch.setattr(fatlib.checkpoint, "load_into", spy)
    cfg = StageConfig(name="s2", train_on="curated+selected", selection_csv=str(csv),
                      init_from=str(run_dir / "s1"), channels_last=True, **TINY)  # channels last: same outputs
    train_stage(cfg, data, run_dir=run_dir, cache_dir=root / "cache", progress=False)
    assert [p.name for p in loaded] == ["fold0.safetensors", "fold1.safetensors"]
    assert all(p.parent == run_dir / "s1" for p in loaded)
    noisy_fold = dict(zip(data.noisy.fnames, nf))
    for k in range(2):
        rec = json.loads((run_dir / "s2" / f"fold{k}.json").read_text())
        assert rec["train_noisy"] and all(noisy_fold[f] != k for f in rec["train_noisy"])
        assert all(noisy_fold[f] == k for f in rec["oof_noisy"])


def test_stage_config_json_roundtrip_and_validation(tmp_path):
    cfg = StageConfig(name="x", train_on="noisy", augment=["specmix", "zoomcrop"], model_kwargs={"width_mult": 0.5})
    assert StageConfig.load(cfg.save(tmp_path / "c.json")) == cfg
    with pytest.raises(DataError, match="unknown fields"):
        StageConfig.from_dict({"name": "x", "epoch": 3})
    with pytest.raises(DataError, match="train_on"):
        StageConfig(name="x", train_on="everything")
    with pytest.raises(DataError, match="selection_csv"):
        StageConfig(name="x", train_on="curated+selected")


@pytest.mark.parametrize("schedule", ["one_cycle", "warmup_cosine", "plateau"])
def test_schedules_shape_the_learning_rate(schedule):
    """9th place: 10 % linear warm-up then cosine to 0; plateau: lr held, cut 10x when valid loss stalls."""
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
    ds = TensorDataset(xt, xt @ w)
    valid = TensorDataset(xv, -(xv @ w))  # learning the training set makes the validation loss worse
    dls = DataLoaders.from_dsets(ds, valid, bs=8, num_workers=0)  # no worker processes to fork per epoch
    learn = Learner(dls, nn.Linear(4, 2), loss_func=nn.MSELoss())
    cfg = StageConfig(name="x", epochs=10, lr=0.01, pct_start=0.1, schedule=schedule)
    with learn.no_bar(), learn.no_logging():
        learner.fit(learn, cfg)
    lrs = np.array(learn.recorder.lrs)
    assert len(lrs) == 80
    if schedule == "warmup_cosine":
        assert lrs[0] == pytest.approx(1e-4) and lrs.argmax() in (7, 8) and lrs.max() == pytest.approx(0.01, rel=0.02)
        assert lrs[-1] < 1e-4 and np.all(np.diff(lrs[9:]) <= 0)  # cosine decay after the warm-up
    elif schedule == "plateau":
        steps = np.log10(lrs[::8] / 0.01)  # one lr per epoch: 0.01, then divided by 10 at each stall
        assert steps[0] == pytest.approx(0) and steps[-1] < -1 and np.allclose(steps, np.round(steps))
    else:
        assert lrs.max() == pytest.approx(0.01, rel=0.02) and lrs[0] < 0.001
    with pytest.raises(DataError, match="schedule"):
        StageConfig(name="x", schedule="cosine")


def test_workers_default_to_the_cpu_count_and_channels_last_is_an_option(monkeypatch, capsys):
    import argparse
    import os

    import torch

    from fatlib import settings as train
    from fatlib.commands import main as cli

    cores = lambda n: (lambda pid: set(range(n)))  # noqa: E731
    monkeypatch.setattr(os, "sched_getaffinity", cores(12), raising=False)
    assert train.default_n_workers() == train.MAX_WORKERS == StageConfig(name="x").n_workers == 8
    monkeypatch.setattr(os, "sched_getaffinity", cores(1), raising=False)
    assert StageConfig(name="x").n_workers == 0  # one core: load in the training process
    assert StageConfig(name="x", n_workers=3).n_workers == 3  # an explicit value is kept
    monkeypatch.setattr(os, "sched_getaffinity", cores(2), raising=False)
    with pytest.raises(SystemExit):
        cli.main(["train-stage", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--workers WORKERS DataLoader worker processes; 0 loads in the training process (default: 0: one per" in help_text
    assert StageConfig(name="x").n_workers == 0  # two cores: workers would take the step's cores
    from fatlib.commands import options

    p = argparse.ArgumentParser()
    options.add_stage_arguments(p)
    assert options.stage_overrides(p.parse_args(["--channels-last"]))["channels_last"] is True
    assert "channels_last" not in options.stage_overrides(p.parse_args([]))
    assert StageConfig(name="x").channels_last is False and "channels_last" in train.RUNTIME_FIELDS
    assert torch.backends.cudnn.benchmark is False  # set by CUDA training only, never at import


def test_explicit_epochs_win_over_auto_scaling(tmp_path):
    """The issue's case: `train-stage ... --epochs 3` on a 16-clip set trained 600 epochs a fold (auto scaling
    overruled it); now the typed value is used, the rest is auto scaled, and the log says which was which."""
    import subprocess
    import sys

    from fatlib.synth import make_dataset

    root = make_dataset(tmp_path / "d", n_classes=4, n_curated=16, n_noisy=0, n_test=0, max_seconds=2.0, seed=1,
                        progress=False)
    cmd = [sys.executable, "-m", "fatlib", "train-stage", "--data", str(root), "--model", "cnn_model_1",
           "--model-kwargs", '{"width_mult": 0.125}', "--mel", '{"n_mels": 32, "crop_frames": 32}', "--epochs", "3",
           "--n-folds", "2", "--folds", "0", "--workers", "0", "--weights", str(tmp_path / "w"),
           "--cache-dir", str(tmp_path / "c"), "--quiet", "--stage", "s1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    log = (tmp_path / "w" / "cnn_model_1" / "s1" / "log.txt").read_text()
    first = next(line for line in log.splitlines() if "s1: cnn_model_1," in line)
    assert "3 epochs" in first and "auto scaling left epochs=3 as given (--epochs)" in first, first
    assert "batch_size 128 -> 8" in first  # the batch size nobody gave is still scaled to the 8 training clips
    record = json.loads((tmp_path / "w" / "cnn_model_1" / "s1" / "fold0.json").read_text())
    assert record["settings"]["epochs"] == 3 and len(record["history"]["epochs"]) == 3
    # where each value came from: the log's second line and config.json (a data structure, not only text)
    sources = json.loads((tmp_path / "w" / "cnn_model_1" / "s1" / "config.json").read_text())["sources"]
    assert sources["epochs"] == {"kind": "option", "where": "--epochs", "value": 3}
    assert sources["batch_size"]["kind"] == "auto_scale" and sources["batch_size"]["value"] == 8
    assert sources["lr"]["kind"] == "recipe" and sources["lr"]["where"].startswith("12th_place.toml:")
    line = int(sources["lr"]["where"].split(":")[1].split()[0])
    from fatlib.recipes import load_recipe

    assert load_recipe("12th_place").path.read_text().splitlines()[line - 1].startswith("lr = ")
    assert "epochs=3 (option: --epochs)" in log.splitlines()[1]
    assert StageConfig.load(tmp_path / "w" / "cnn_model_1" / "s1" / "config.json").epochs == 3


# the 9th recipe on the tiny data set: 1/8-width models, 2 folds, exact settings, short crops of 32 mels
NINTH_TINY = ["epochs=2", "n_folds=2", "auto_scale=false", "model_kwargs.width_mult=0.125", "mel.crop_frames=32",
              "mel.n_mels=32", "batch_size=16", "cache_jobs=1", "n_workers=0", "plateau_cycles=2",
              "plateau_patience_epochs=1"]


@pytest.mark.parametrize("chain", [["noisy_m1", "noisy_m1_ft"], ["curated", "selected_m3", "selected_m3_ft"]])
def test_9th_place_fine_tuning_starts_from_the_pretrained_folds(chain, data, tmp_path):
    """The 9th recipe's chains, through the engine: pretraining (the noisy set; curated + the best noisy clips
    by log loss under the curated-only model), then curated-only fine-tuning under the plateau schedule whose
    fold k starts from the pretraining's fold k weights."""
    import torch
    from fastai.callback.core import Callback

    from fatlib.checkpoint import load_into
    from fatlib.engine import run_stage
    from fatlib.models import create_model
    from fatlib.recipes import apply_sets, load_recipe
    from fatlib.workspace import Workspace

    class FirstWeights(Callback):  # the model's weights as each fold's fit begins
        seen: list = []

        def before_fit(self):
            if not hasattr(self, "gather_preds"):
                FirstWeights.seen.append({k: v.detach().clone() for k, v in self.learn.model.state_dict().items()})

    rec = apply_sets(load_recipe("9th_place"), NINTH_TINY)
    ws = Workspace(tmp_path / "w", tmp_path / "cache", (), False)
    *pre, ft = chain
    for stage in pre:
        assert run_stage(rec, stage, data, run="r", ws=ws) is not None
    FirstWeights.seen = []
    res = run_stage(rec, ft, data, run="r", ws=ws, cbs=[FirstWeights()])
    assert res is not None and 0 < res.cv_curated <= 1
    run_dir = tmp_path / "w" / "r"
    cfg = json.loads((run_dir / ft / "config.json").read_text())
    assert cfg["train_on"] == "curated" and cfg["schedule"] == "plateau" and cfg["plateau_cycles"] == 2
    assert cfg["init_from"] == str(run_dir / pre[-1]) and cfg["model"] == rec.stage_fields(pre[-1])["model"]
    pre_cfg = json.loads((run_dir / pre[-1] / "config.json").read_text())
    assert pre_cfg["schedule"] == "warmup_cosine" and pre_cfg["train_on"] == (
        "noisy" if pre[-1].startswith("noisy") else "curated+selected")
    if pre[-1].startswith("selected"):  # single-label noisy clips, lowest log loss first
        sel = pd.read_csv(run_dir / pre[-1] / "selected.csv", keep_default_na=False)
        assert len(sel) and not sel["labels"].str.contains(",").any() and sel["score"].is_monotonic_increasing
    assert len(FirstWeights.seen) == 2  # one fit per fold
    for k, start in enumerate(FirstWeights.seen):
        pretrained = create_model(cfg["model"], n_classes=len(data.vocab), in_channels=1, **cfg["model_kwargs"])
        load_into(pretrained, run_dir / pre[-1] / f"fold{k}.safetensors")
        for name, tensor in pretrained.state_dict().items():
            assert torch.equal(start[name].cpu(), tensor), (k, name)
    # fold 1 did not start from fold 0's pretraining: the folds' starts differ
    assert any(not torch.equal(FirstWeights.seen[0][n], FirstWeights.seen[1][n]) for n in FirstWeights.seen[0])
