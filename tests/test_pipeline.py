"""The warm-up pipeline end to end on the tiny data set (4 stages x 2 folds x 1 epoch)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

TINY = dict(model_kwargs={"width_mult": 0.125}, mel=dict(n_mels=32, n_fft=2048, hop_length=1024, crop_frames=32),
            epochs=1, n_folds=2, batch_size=24, tta_step_frames=32, cache_jobs=1, auto_scale=False)


@pytest.mark.slow
def test_warmup_end_to_end(tiny_dataset, tmp_path):
    from fatlib.dataset import FatData
    from fatlib.metrics import lwlrap, per_sample_lwlrap
    from fatlib.pipeline import stage_oof, warmup

    data = FatData.from_dir(tiny_dataset)
    # stage-3 threshold 0: every labelled noisy clip passes, so the per-fold-per-label cap decides
    summary = warmup(data, run="w", weights_root=tmp_path, cache_dir=tmp_path / "cache", progress=False,
                     selection={"stage3": {"threshold": 0.0, "max_per_fold_label": 1}}, **TINY)
    run = tmp_path / "w"
    assert (run / "summary.json").is_file() and (run / "stages.csv").is_file()
    saved = json.loads((run / "summary.json").read_text())
    assert [r["stage"] for r in saved["stages"]][:4] == ["stage1", "stage2", "stage3", "stage4"]
    for s in ("stage1", "stage2", "stage3", "stage4"):
        assert all((run / s / f"fold{k}.done").exists() for k in range(2))
    cfg3 = json.loads((run / "stage3" / "config.json").read_text())
    assert cfg3["init_from"] == str(run / "stage2") and cfg3["train_on"] == "curated+selected"

    sel3 = pd.read_csv(run / "stage3" / "selected.csv")
    per = sel3.assign(label=sel3["labels"].str.split(",")).explode("label").groupby(["fold", "label"]).size()
    assert len(sel3) > 0 and per.max() == 1  # the cap of 1 per fold per label holds
    nl3 = pd.read_csv(run / "stage3" / "noisy_lwlrap.csv").set_index("fname")["lwlrap"]
    sel4 = pd.read_csv(run / "stage4" / "selected.csv")
    assert set(sel4["fname"]) == set(nl3[nl3 >= 1.0].index)  # stage 4 keeps lwlrap3 == 1 exactly
    noisy = pd.read_csv(run / "stage3" / "oof_noisy.csv")[data.vocab].to_numpy()
    np.testing.assert_allclose(nl3.to_numpy(), per_sample_lwlrap(data.noisy.targets, noisy), equal_nan=True)

    ens = np.mean([stage_oof(run, s) for s in ("stage2", "stage3", "stage4")], axis=0)
    assert summary["cv_lwlrap_ensemble"] == pytest.approx(lwlrap(data.curated.targets, ens), abs=1e-6)
    assert saved["cv_lwlrap_ensemble"] == pytest.approx(summary["cv_lwlrap_ensemble"])

    # the select command reproduces the pipeline's stage-4 selection from the saved stage outputs
    from fatlib.commands.main import main

    out = tmp_path / "sel4.csv"
    assert main(["select", "--data", str(tiny_dataset), "--weights", str(tmp_path), "--run", "w", "--rule", "stage4",
                 "--stages", "stage3", "--out", str(out), "--n-folds", "2"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out), sel4)


@pytest.mark.slow
def test_stages_one_by_one(tiny_dataset, tmp_path, capsys):
    """What the notebooks do: each stage on its own, then the stage ensemble; a missing stage names its notebook."""
    from fatlib.dataset import FatData
    from fatlib.errors import DataError
    from fatlib.pipeline import stage_ensemble, warmup_stage

    data = FatData.from_dir(tiny_dataset)
    kw = dict(run="s", weights_root=tmp_path, cache_dir=tmp_path / "cache", progress=False, **TINY)
    with pytest.raises(DataError, match="01_stage1_noisy.ipynb"):
        warmup_stage("stage2", data, **kw)
    with pytest.raises(DataError, match="unknown warm-up stage"):
        warmup_stage("stage5", data, **kw)
    with pytest.raises(DataError, match="set by the warm-up plan"):
        warmup_stage("stage1", data, train_on="curated", **kw)

    from fatlib.commands.main import main

    cli = ["warmup", "--data", str(tiny_dataset), "--weights", str(tmp_path), "--run", "s", "--quiet", "--stage"]
    assert main([*cli, "stage2"]) == 1
    assert "01_stage1_noisy.ipynb" in capsys.readouterr().err and not (tmp_path / "s" / "stage2").exists()

    res1 = warmup_stage("stage1", data, **kw)
    assert res1.stage_dir == tmp_path / "s" / "stage1" and res1.oof_noisy.shape == (48, len(data.vocab))
    with pytest.raises(DataError, match="02_stage2_curated.ipynb"):
        warmup_stage("stage3", data, **kw)
    warmup_stage("stage2", data, **kw)
    warmup_stage("stage3", data, selection={"threshold": 0.0, "max_per_fold_label": 2}, **kw)
    sel3 = pd.read_csv(tmp_path / "s" / "stage3" / "selected.csv")
    assert len(sel3) > 0 and sel3.assign(label=sel3["labels"].str.split(",")).explode("label") \
        .groupby(["fold", "label"]).size().max() <= 2
    # a different selection under trained folds is refused, not silently mixed with the old folds
    with pytest.raises(DataError, match="another selection"):
        warmup_stage("stage3", data, selection={"threshold": 0.0, "max_per_fold_label": 1}, **kw)
    with pytest.raises(DataError, match="04_stage4_selected_noisy.ipynb"):
        stage_ensemble(data, run="s", weights_root=tmp_path, progress=False)
    warmup_stage("stage4", data, **kw)
    nl3 = pd.read_csv(tmp_path / "s" / "stage3" / "noisy_lwlrap.csv")
    sel4 = pd.read_csv(tmp_path / "s" / "stage4" / "selected.csv")
    assert set(sel4["fname"]) == set(nl3.loc[nl3["lwlrap"] >= 1.0, "fname"])

    assert main([*cli, "ensemble"]) == 0  # the command line's ensemble step = stage_ensemble
    summary = stage_ensemble(data, run="s", weights_root=tmp_path, progress=False)
    table = pd.read_csv(tmp_path / "s" / "stages.csv")
    assert table["stage"].tolist() == ["stage1", "stage2", "stage3", "stage4", "ensemble(stage2+stage3+stage4)"]
    assert table.columns.tolist() == ["stage", "model", "train_on", "n_selected", "cv_lwlrap_curated", "cv_lwlrap_noisy"]
    assert table["n_selected"].tolist()[2:4] == [len(sel3), len(sel4)]
    oof = pd.read_csv(tmp_path / "s" / "oof_ensemble_curated.csv")
    assert oof["fname"].tolist() == data.curated.fnames
    assert summary["model"] == "cnn_model_1" and summary["cv_lwlrap_ensemble"] == pytest.approx(
        table["cv_lwlrap_curated"].iloc[-1])


@pytest.mark.slow
def test_small_data_set_gets_the_small_data_setup(tiny_dataset, tmp_path):
    """With auto scaling, a data set under 1,500 clips trains the default recipe's [small_data] model and
    features, and the stage's log says so; naming the model keeps the recipe's own set-up."""
    from fatlib.dataset import FatData
    from fatlib.pipeline import warmup_stage

    data = FatData.from_dir(tiny_dataset)
    kw = dict(weights_root=tmp_path, cache_dir=tmp_path / "cache", progress=False, epochs=1, n_folds=2, min_steps=1,
              model_kwargs={"width_mult": 0.125}, cache_jobs=1, folds=[0])
    assert warmup_stage("stage1", data, run="auto", **kw) is None  # fold 1 left to train
    cfg = json.loads((tmp_path / "auto" / "stage1" / "config.json").read_text())
    assert (cfg["model"], cfg["preset"], cfg["auto_scale"]) == ("xresnet18", "multires128", True)
    log = (tmp_path / "auto" / "stage1" / "log.txt").read_text()
    assert f"small data set ({data.n_train_clips} clips < 1500): model xresnet18, preset multires128" in log
    warmup_stage("stage1", data, run="mine", model="cnn_model_1", **{**kw, "mel": {"n_mels": 32, "crop_frames": 32}})
    cfg = json.loads((tmp_path / "mine" / "stage1" / "config.json").read_text())
    assert (cfg["model"], cfg["preset"]) == ("cnn_model_1", "cnn128")
    assert "small data set" not in (tmp_path / "mine" / "stage1" / "log.txt").read_text()


def test_vgg16_warmup_is_the_recipes_vgg_stages(tiny_dataset, tmp_path):
    """`warmup --model vgg16_bn` (notebook 05) trains the 12th-place recipe's VGG16-BN stages (vgg_stage1..4, their own
    selections from their own stages) as stage1..stage4 of its own run: the layout of the notebooks and the kernel."""
    from fatlib.dataset import FatData
    from fatlib.pipeline import STAGES as CNN_STAGES
    from fatlib.pipeline import VGG_STAGES, warmup_half, warmup_stage

    half = warmup_half("12th_place", "vgg16_bn")
    assert half.stage_names() == list(CNN_STAGES) and half.predict["stages"] == ["stage2", "stage3", "stage4"]
    assert half.selection["stage3"]["sources"] == ["stage1", "stage2"] and half.stages["stage4"]["init_from"] == "stage3"
    assert str(half.sources("stage3")["init_from"]).endswith("[stages.vgg_stage3]")
    assert str(half.sources("stage2")["model"]).endswith("[stages.vgg_stage2]")
    assert "ensemble_size" not in half.small_data and "ensemble_size" not in half.predict
    cnn = warmup_half("12th_place")
    assert cnn.stage_names() == list(CNN_STAGES) and not set(VGG_STAGES) & set(cnn.selection)
    assert cnn.stage_fields("stage1").get("model", "cnn_model_1") == "cnn_model_1"

    data = FatData.from_dir(tiny_dataset)
    res = warmup_stage("stage1", data, run="vgg16_bn", model="vgg16_bn", weights_root=tmp_path,
                       cache_dir=tmp_path / "cache", progress=False, **TINY)
    cfg = json.loads((res.stage_dir / "config.json").read_text())
    assert res.stage_dir == tmp_path / "vgg16_bn" / "stage1" and cfg["model"] == "vgg16_bn"
    assert cfg["train_on"] == "noisy" and "[stages.vgg_stage1]" in cfg["sources"]["train_on"]["where"]
