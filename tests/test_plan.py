"""``--plan``: what a run will do, without training or writing anything: every stage with its settings and each
value's source, the selections, the ensemble, the outputs and the work; the figures are the ones training would use."""
from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _fatlib(*args, cwd, as_typed: bool = False):
    """stdout of ``python -m fatlib ARGS`` run in ``cwd``: in a subprocess when ``as_typed`` (what a user types),
    else through the same ``main`` in this process (a plan imports torch: seconds a subprocess)."""
    if as_typed:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        res = subprocess.run([sys.executable, "-m", "fatlib", *map(str, args)], capture_output=True, text=True,
                             env=env, timeout=300, cwd=cwd)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        return res.stdout
    from fatlib.commands.main import main

    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    finally:
        os.chdir(here)
    assert code == 0, out.getvalue()[-3000:] + err.getvalue()[-3000:]
    return out.getvalue()


@pytest.mark.parametrize("recipe, stages", [
    ("12th_place", ["stage1", "stage2", "stage3", "stage4"]),
    ("3rd_place", ["curated", "round1", "stft_round1"]),  # 96 clips: [small_data] ensemble_size 2
])
def test_run_plan_shows_every_stage_and_source_and_writes_nothing(tiny_dataset, tmp_path, recipe, stages):
    w, c = tmp_path / "w", tmp_path / "c"
    out = _fatlib("run", recipe, "--plan", "--data", tiny_dataset, "--weights", w, "--cache-dir", c,
                  "--set", "epochs=3", cwd=tmp_path, as_typed=recipe == "12th_place")
    assert not w.exists() and not c.exists() and list(tmp_path.iterdir()) == []  # no weights, caches, folds
    shown = re.findall(r"^\d+\. stage (\S+):", out, flags=re.M)
    assert shown == stages  # every stage, in order
    assert "48 curated + 48 noisy clips, 6 classes, 16 test clips" in out
    for kind in ("<- recipe ", "<- auto scaling", "default (not published: fatlib's choice)", "<- --set epochs=3"):
        assert kind in out, kind
    assert out.count("epochs = 3  <- --set epochs=3") == len(stages)  # a value given wins over auto scaling
    assert re.search(r"n_folds = 5  <- auto scaling 5 folds on 96 clips", out) or recipe == "3rd_place"
    assert "optimizer steps per fold" in out and f"ensemble: mean of {'stage2 + stage3 + stage4' if recipe == '12th_place' else 'round1 + stft_round1'}" in out
    kept = "3 of 6 kept" if recipe == "12th_place" else "2 of 11 kept"
    assert re.search(kept + rf" \(ensemble_size \d <- small-data table {recipe}.toml:\d+ \[small_data\]  # fatlib's choice", out)
    assert f"{w / recipe}/" in out and "submission.csv" in out
    if recipe == "12th_place":  # 96 clips: the default recipe's [small_data] table, its sound mix said where
        assert "sound_mix_p = 0.5  <- small-data table 12th_place.toml:" in out and "selection first: rule stage3" in out
        assert "stages skipped (no kept member needs them; nothing trained): vgg_stage1, vgg_stage2, vgg_stage3, " \
            "vgg_stage4" in out
    else:
        assert "selection first: rule pseudo over curated (round_index 1" in out
        assert re.search(r'init_from = null  <- recipe 3rd_place.toml:\d+ \[pseudo\]  # not published: each round', out)
        assert "stage stft_round1: stft1d_3rd on curated+selected" in out and "round2, round3" in out


def test_plan_names_a_stage_the_data_set_cannot_run(tiny_dataset, tmp_path):
    """Curated-only data: the 12th place's stage 1 trains on noisy clips there are none of; the plan says so (the
    run itself refuses it before any work) instead of planning steps over a made-up clip."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data, ignore=shutil.ignore_patterns("train_noisy*"))
    out = _fatlib("run", "12th_place", "--plan", "--data", data, "--weights", tmp_path / "w", cwd=tmp_path)
    stage1 = out.split("1. stage stage1")[1].split("2. stage stage2")[0]
    assert "NOT RUNNABLE: the run refuses this stage here: train_on='noisy' needs at least n_folds=5 clips, " \
        "the data set has 0 noisy clips" in stage1
    assert "NOT RUNNABLE" not in out.split("2. stage stage2")[1].split("3. stage stage3")[0]  # the curated stage runs
    stage3 = out.split("3. stage stage3")[1].split("4. stage stage4")[0]  # its selection reads noisy clips
    assert "NOT RUNNABLE: the run refuses this stage here: it selects clips of the noisy split first" in stage3


def test_plan_without_a_data_set_is_for_fsdkaggle2019(tmp_path):
    out = _fatlib("train-stage", "--plan", "--stage", "stage2", "--epochs", "4", "--weights", tmp_path / "w", cwd=tmp_path)
    assert "4,970 curated + 19,815 noisy clips" in out and "planned for FSDKaggle2019's size" in out
    assert "epochs = 4  <- option --epochs" in out and "10 of 10 folds, 4,473 training clips per fold" in out
    assert "sound_mix_p=0," in out  # off: no write-up mixes sounds
    assert list(tmp_path.iterdir()) == []


def test_plan_figures_are_what_training_chooses(tiny_dataset, tmp_path):
    """Each stage's folds, batch, lr, epochs and width: train_stage's own functions on the real data's sizes."""
    from fatlib.dataset import FatData
    from fatlib.engine import expand, stage_config, stage_sources
    from fatlib.plan import plan_run
    from fatlib.recipes import apply_sets, load_recipe
    from fatlib.stage_inputs import fold_train_clips
    from fatlib.train import effective_config, folds_for_data

    data = FatData.from_dir(tiny_dataset)
    for name, sets in (("12th_place", ["stages.stage2.batch_size=8"]), ("9th_place", []), ("demo", [])):
        plan = plan_run(name, data, weights_root=tmp_path / "w", sets=sets)
        rec = expand(apply_sets(load_recipe(name), sets))
        for sp in plan.stages:
            if sp.selection:  # its clips are known after the selection
                continue
            given = {f: s.where for f, s in stage_sources(rec, sp.name, data).items() if s.given}
            cfg = folds_for_data(stage_config(rec, sp.name, data, tmp_path / "w" / name), data, given)
            inp = types.SimpleNamespace(cfg=cfg, cur_y=np.zeros(len(data.curated.fnames)),
                                        noisy_y=np.zeros(len(data.noisy.fnames)), sel_rows=np.zeros(0))
            eff, _ = effective_config(cfg, n_train=fold_train_clips(inp), n_dataset=data.n_train_clips, given=given)
            assert (sp.config.n_folds, sp.config.batch_size, sp.config.lr, sp.config.epochs, sp.config.model_kwargs) == \
                (eff.n_folds, eff.batch_size, eff.lr, eff.epochs, eff.model_kwargs), (name, sp.name)
            assert sp.n_train_per_fold == fold_train_clips(inp)
        if name == "12th_place":
            stage2 = next(s for s in plan.stages if s.name == "stage2")
            assert stage2.config.batch_size == 8 and stage2.sources["batch_size"].kind == "set"
        assert not (tmp_path / "w").exists()


def test_selection_sizes_are_the_most_each_rule_keeps():
    from fatlib.plan import FSDKAGGLE2019, DataSize, selected_at_most

    size = DataSize(**FSDKAGGLE2019, n_test=None, where="")
    pseudo = {"rule": "pseudo", "round_size": 1000, "max_rounds": 5}
    assert selected_at_most({**pseudo, "round_index": 2}, size, 5) == 2000
    assert selected_at_most({**pseudo, "round_index": 6}, size, 5) == 19815  # after max_rounds: every noisy clip
    assert selected_at_most({"rule": "logloss", "n_best": 5000, "max_per_class": 50}, size, 5) == 4000  # 50 x 80
    assert selected_at_most({"rule": "stage3", "max_per_fold_label": 5}, size, 10) == 4000  # 5 x 10 folds x 80
    assert selected_at_most({"rule": "stage4", "threshold": 1.0}, size, 10) == 19815  # no cap


def _members(out: str) -> list[str]:
    return re.findall(r"^  \d+\. (\S+)", out.split("ensemble members")[1], flags=re.M)


def test_plan_of_12th_place_shows_the_vgg16_warmup_and_the_six_model_ensemble(tmp_path):
    out = _fatlib("run", "12th_place", "--plan", "--weights", tmp_path / "w", cwd=tmp_path)  # FSDKaggle2019's size
    shown = re.findall(r"^\d+\. stage (\S+): (\S+) on (\S+)", out, flags=re.M)
    assert shown == [(f"{p}stage{i}", m, on) for p, m in (("", "cnn_model_1"), ("vgg_", "vgg16_bn"))
                     for i, on in zip(range(1, 5), ("noisy", "curated", "curated+selected", "curated+selected"))]
    assert "selection first: rule stage3 over vgg_stage1, vgg_stage2" in out
    assert "6 of 6 kept (ensemble_size not set: every member)" in out and "stages skipped" not in out
    assert _members(out) == ["stage2", "stage3", "stage4", "vgg_stage2", "vgg_stage3", "vgg_stage4"]
    assert "2. stage3 (cnn_model_1)" in out and "4. vgg_stage2 (vgg16_bn)" in out
    assert "ensemble: mean of stage2 + stage3 + stage4 + vgg_stage2 + vgg_stage3 + vgg_stage4 (6 models, 60 fold models)" in out
    assert list(tmp_path.iterdir()) == []


def test_plan_of_3rd_place_names_its_own_models_and_the_eleven_model_average(tmp_path):
    out = _fatlib("run", "3rd_place", "--plan", "--weights", tmp_path / "w", cwd=tmp_path)
    models = dict(re.findall(r"^\d+\. stage (\S+): (\S+) on", out, flags=re.M))
    assert {"shallow_cnn_3rd", "shallow_crnn_3rd", "stft1d_3rd"} == set(models.values())
    assert "cnn_model_1" not in out
    assert len(_members(out)) == 11 and "11 of 11 kept" in out and "(11 models, 55 fold models)" in out
    assert {models[m] for m in _members(out)} == {"shallow_cnn_3rd", "shallow_crnn_3rd", "stft1d_3rd"}
    assert re.search(r"mel = \{\"crop_frames_max\": 517\}  <- recipe 3rd_place.toml:\d+ \[stage\]  # write-up: training "
                     r"\"segments from 8 to 12 seconds\"", out)
    assert 'preset = "stft256"' in out and '"residual": true' in out


def test_ensemble_size_keeps_the_first_members_and_plans_only_their_stages(tiny_dataset, tmp_path):
    """--ensemble-size wins over [small_data]; a [small_data] model does not turn the VGG16-BN stages into xresnets."""
    out = _fatlib("run", "12th_place", "--plan", "--data", tiny_dataset, "--ensemble-size", "4", "--weights",
                  tmp_path / "w", cwd=tmp_path)
    assert re.findall(r"^\d+\. stage (\S+): (\S+)", out, flags=re.M) == [
        ("stage1", "xresnet18"), ("stage2", "xresnet18"), ("stage3", "xresnet18"), ("stage4", "xresnet18"),
        ("vgg_stage1", "vgg16_bn"), ("vgg_stage2", "vgg16_bn")]
    assert "4 of 6 kept (ensemble_size 4 <- option --ensemble-size)" in out
    assert "5. vgg_stage3  -- not kept" in out and "stages skipped (no kept member needs them; nothing trained): " \
        "vgg_stage3, vgg_stage4" in out
    vgg1 = out.split("5. stage vgg_stage1")[1].split("6. stage")[0]
    assert re.search(r'model = "vgg16_bn"  <- recipe 12th_place.toml:\d+ \[stages.vgg_stage1\]', vgg1)
    assert "small data set (96 clips < 1500): preset multires128, augment mixup" in vgg1  # no "model xresnet18"
    out = _fatlib("run", "3rd_place", "--plan", "--set", "predict.ensemble_size=1", "--weights", tmp_path / "w",
                  cwd=tmp_path)
    assert re.findall(r"^\d+\. stage (\S+):", out, flags=re.M) == ["curated", "round1"]
    assert "1 of 11 kept (ensemble_size 1 <- --set predict.ensemble_size=1)" in out


@pytest.mark.parametrize("args, message", [
    (["--ensemble-size", "7"], "--ensemble-size (recipe 12th_place.toml): ensemble_size = 7 is more than the 6 members "
                               "of recipe 12th_place's [predict] stages; use an ensemble size from 1 to 6"),
    (["--ensemble-size", "0"], "--ensemble-size (recipe 12th_place.toml): ensemble_size = 0 is not a whole number >= 1; "
                               "set ensemble_size to a whole number >= 1"),
    (["--set", "predict.ensemble_size=2.5"], "ensemble_size = 2.5 is not a whole number >= 1"),
])
def test_a_bad_ensemble_size_is_one_line_before_any_work(tmp_path, args, message, capsys, monkeypatch):
    command = ["run", "12th_place", "--plan", *args]
    if args == ["--ensemble-size", "7"]:  # as typed, in a subprocess; the others through the same main here
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        res = subprocess.run([sys.executable, "-m", "fatlib", *command], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=300)
        code, err = res.returncode, res.stderr
    else:
        from fatlib.commands.main import main

        monkeypatch.chdir(tmp_path)
        code, err = main(command), capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_recipe_ensemble_size_is_checked_against_its_members(tmp_path):
    from fatlib.engine import _check
    from fatlib.errors import DataError
    from fatlib.recipes import HERE, load_recipe

    text = (HERE / "12th_place.toml").read_text(encoding="utf-8")
    bad = tmp_path / "mine.toml"
    bad.write_text(text.replace("ensemble_size = 3 ", "ensemble_size = 9 ", 1), encoding="utf-8")
    with pytest.raises(DataError, match=r"mine.toml \[small_data\]: ensemble_size = 9 is more than the 6 members"):
        _check(load_recipe(bad))
    bad.write_text(text.replace("ensemble_size = 3 ", 'ensemble_size = "3" ', 1), encoding="utf-8")
    with pytest.raises(DataError, match=r'\[small_data\]: ensemble_size = "3" is not a whole number'):
        load_recipe(bad)


@pytest.mark.parametrize("recipe", ["12th_place", "3rd_place", "95th_place"])
def test_at_fsdkaggle2019_size_the_written_epochs_stand(recipe):
    """Auto scaling is for smaller data sets: at FSDKaggle2019's size every stage trains the recipe's epochs, batch
    size and folds, even a stage whose selection keeps few noisy clips (the 12th place's stage 4)."""
    from fatlib.autoscale import scale_settings
    from fatlib.plan import FSDKAGGLE2019, DataSize, plan_run
    from fatlib.recipes import load_recipe

    size = DataSize(**FSDKAGGLE2019, n_test=None, where="FSDKaggle2019")
    rec = load_recipe(recipe)
    plan = plan_run(recipe, size)
    for sp in plan.stages:
        fields = rec.stage_fields(sp.name if sp.name in rec.stages else None, n_dataset=size.n_train_clips)
        assert (sp.config.epochs, sp.config.batch_size, sp.config.n_folds) == \
            (fields["epochs"], fields["batch_size"], fields["n_folds"]), (recipe, sp.name)
        assert "epochs" not in sp.chosen.split("(auto scaling")[1], sp.chosen
    # curated + 100 selected noisy clips, 10 folds, batch 128: 35 steps an epoch x 10 epochs < min_steps 600
    assert scale_settings(n_train=4563, n_dataset=size.n_train_clips, batch_size=128, lr=1e-3, epochs=10,
                          min_steps=600, width_mult=None).epochs == 10


def test_on_curated_only_data_members_that_need_the_noisy_set_are_passed_over(tiny_dataset, tmp_path):
    """A data set without a noisy split: ensemble members that need the noisy set (a stage that trains on it or
    selects its clips) are passed over and the next member kept in their place; when every member needs it (the
    9th place's: each pretrains on noisy clips), the run refuses before any work, naming the stage and the fix."""
    import shutil

    from fatlib.dataset import FatData
    from fatlib.engine import expand, plan, run_recipe
    from fatlib.errors import DataError
    from fatlib.members import members
    from fatlib.plan import DataSize, plan_run, render_plan
    from fatlib.recipes import apply_sets, load_recipe
    from fatlib.workspace import Workspace

    sets = ['predict.stages=["noisy_m1_ft", "curated"]', "predict.ensemble_size=1"]
    rec = expand(apply_sets(load_recipe("9th_place"), sets))
    assert members(rec, 400, n_noisy=100)["kept"] == ["noisy_m1_ft"]
    curated_only = members(rec, 400, n_noisy=0)
    assert curated_only["kept"] == ["curated"] and curated_only["passed_over"] == ["noisy_m1_ft"]
    assert plan(apply_sets(load_recipe("9th_place"), sets), 400, n_noisy=0) == [
        "train curated", "ensemble", "predict", "report"]
    size = DataSize(n_curated=400, n_noisy=0, n_classes=17, n_test=None, where="curated only")
    text = render_plan(plan_run("9th_place", size, sets=sets))
    assert "NOT RUNNABLE" not in text and "1. noisy_m1_ft  -- passed over: needs the noisy set" in text
    # every 9th-place member needs the noisy set: kept as they are, and the run refuses them before any work
    assert members(expand(load_recipe("9th_place")), 400, n_noisy=0)["passed_over"] == []
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data, ignore=shutil.ignore_patterns("train_noisy*"))
    with pytest.raises(DataError, match=r"stage 'selected_m3' of recipe 9th_place selects clips of the noisy split, "
                                         r"and this data set has none"):
        run_recipe("9th_place", FatData.from_dir(data), run="r", workspace=Workspace(tmp_path / "w", tmp_path / "c"))
    assert not (tmp_path / "w").exists()
