"""``python -m fatlib run RECIPE``: every shipped recipe runs end to end on the tiny synthetic data set
with tiny overrides, goes through every step it names, and resumes without training again."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fatlib.engine import _check, expand, members, plan
from fatlib.errors import DataError
from fatlib.recipes import apply_sets, list_recipes, load_recipe

ROOT = Path(__file__).resolve().parents[1]
# tiny: a 1/8-width model, 1 epoch, 2 folds, exact settings, short crops of 32 mels
TINY = ["epochs=1", "n_folds=2", "auto_scale=false", "model_kwargs.width_mult=0.125", "mel.crop_frames=32",
        "mel.n_mels=32", "batch_size=16", "cache_jobs=1", "n_workers=0"]
PER_RECIPE = {
    # the first 2 of the 15 members (M3 on curated + 5k, M1 pretrained on noisy, each fine-tuned): 5 of 31 stages
    "9th_place": ["selection.selected_m3.n_best=6", "selection.selected_m1.n_best=6", "predict.ensemble_size=2"],
    # the first 2 of the 11 members: the 2-D and the 1-D family on round 1's noisy clips (auto scaling is off here,
    # so [small_data]'s ensemble_size is not used); the 1-D model takes the 32 bands of this test's features by itself
    "3rd_place": ["pseudo.max_rounds=1", "pseudo.round_size=3", "predict.ensemble_size=2",
                  'stages.stft_round1.model_kwargs={"width_mult": 0.125}'],
    "12th_place": ["predict.ensemble_size=3"],  # the CNN-model-1 half (what `warmup` trains)
}


def _run(name, data, tmp_path, *extra):
    sets = [*TINY, *PER_RECIPE.get(name, [])]
    cmd = [sys.executable, "-m", "fatlib", "run", name, "--data", str(data), "--weights", str(tmp_path / "w"),
           "--cache-dir", str(tmp_path / "c"), "--quiet", *[a for s in sets for a in ("--set", s)], *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res, apply_sets(load_recipe(name), sets)


@pytest.fixture(scope="module")
def mini_dataset(tmp_path_factory) -> Path:
    """Smaller than conftest's tiny_dataset (the runs train every stage of every recipe): 4 classes,
    24 curated, 24 noisy and 8 test clips of at most 2 s."""
    from fatlib.synth import make_dataset

    return make_dataset(tmp_path_factory.mktemp("mini_data"), n_classes=4, n_curated=24, n_noisy=24, n_test=8,
                        noise_rate=0.3, max_seconds=2.0, seed=0)


STAGE_COLUMNS = ["stage", "model", "train_on", "n_selected", "cv_lwlrap_curated", "cv_lwlrap_noisy"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """One folder for every run of this module (they share the feature caches); the runs made so far."""
    return {"root": tmp_path_factory.mktemp("runs"), "done": {}}


def _run_once(name, data, runs):
    """``_run`` of ``name`` once per module (the warmup comparison reuses the 12th-place run)."""
    if name not in runs["done"]:
        runs["done"][name] = _run(name, data, runs["root"])
    return runs["done"][name]


@pytest.mark.parametrize("name", list_recipes())
def test_every_recipe_runs_end_to_end(name, mini_dataset, runs):
    tmp_path = runs["root"]
    res, rec = _run_once(name, mini_dataset, runs)
    run_dir = tmp_path / "w" / name
    steps = json.loads((run_dir / "steps.json").read_text())["steps"]
    assert steps == plan(rec)  # every step the recipe names, in order
    trained = [s.split()[1] for s in steps if s.startswith("train ")]
    for stage in trained:
        cfg = json.loads((run_dir / stage / "config.json").read_text())
        assert (run_dir / stage / "metrics.json").exists() and (run_dir / stage / "fold1.safetensors").exists()
        for key, value in rec.stage_fields(stage).items():  # the recipe's settings reached the stage
            if key not in ("mel", "model_kwargs", "train_on", "init_from"):
                assert cfg[key] == value, (stage, key)
        if f"select {stage}" in steps:
            assert cfg["train_on"] == "curated+selected" and (run_dir / stage / "selected.csv").exists()
    table = pd.read_csv(run_dir / "stages.csv")  # the same table as warmup's (one writer)
    assert table.columns.tolist() == STAGE_COLUMNS and table["stage"].tolist()[:-1] == trained
    sub = pd.read_csv(run_dir / "submission.csv")
    assert len(sub) == 8 and sub.columns[0] == "fname"
    test = json.loads((run_dir / "test.json").read_text())
    assert test["tta"] == rec.predict["tta"] and test["lwlrap"] is not None
    kept = members(expand(rec), 96)["kept"]
    assert test["groups"] == [f"{s}/{rec.stage_fields(s).get('model', rec.stage['model'])}" for s in kept]
    assert "ensemble CV lwlrap" in res.stdout and (run_dir / "report.md").exists()
    noisy = pd.read_csv(mini_dataset / "train_noisy.csv")
    if name == "9th_place":  # log-loss selection: the 6 best single-label noisy clips
        sel = pd.read_csv(run_dir / "selected_m3" / "selected.csv", keep_default_na=False)
        assert len(sel) == 6 and not sel["labels"].str.contains(",").any()
        assert sel["score"].is_monotonic_increasing
    if name == "3rd_place":  # round 1: clips whose noisy labels agree; the 1-D family trains on the same subset
        r1 = pd.read_csv(run_dir / "round1" / "selected.csv", keep_default_na=False)
        assert len(r1) <= 3
        truth = dict(zip(noisy["fname"], noisy["labels"]))
        assert all(truth[f] == lab for f, lab in zip(r1["fname"], r1["labels"]))
        assert (run_dir / "stft_round1" / "selected.csv").read_text() == (run_dir / "round1" / "selected.csv").read_text()
        assert trained == ["curated", "round1", "stft_round1"] and not (run_dir / "round2").exists()
        assert json.loads((run_dir / "stft_round1" / "config.json").read_text())["model"] == "stft1d_3rd"
        assert test["groups"] == ["round1/shallow_cnn_3rd", "stft_round1/stft1d_3rd"]
        recipe = json.loads((run_dir / "recipe.json").read_text())
        assert recipe["kept"] == recipe["predict"]["stages"] == ["round1", "stft_round1"]  # the Tagger's default stages
        assert len(recipe["members"]) == 11 and recipe["ensemble_size_source"]["kind"] == "set"
        assert "[run] ensemble: 2 of 11 members (ensemble_size 2 <- --set predict.ensemble_size=2)" in res.stdout
    if name == "12th_place":
        assert (run_dir / "stage3" / "selected.csv").exists() and (run_dir / "stage4" / "selected.csv").exists()
        assert trained == ["stage1", "stage2", "stage3", "stage4"] and not list(run_dir.glob("vgg_*"))
    if name == "95th_place":  # a rerun resumes: nothing is trained again, the steps stay the same
        done = {p: p.stat().st_mtime_ns for p in run_dir.glob("*/fold*.safetensors")}
        res, rec = _run(name, mini_dataset, tmp_path)
        assert done and {p: p.stat().st_mtime_ns for p in run_dir.glob("*/fold*.safetensors")} == done
        assert json.loads((run_dir / "steps.json").read_text())["steps"] == plan(rec)
        assert "[run] train curated done" in res.stdout


def test_bad_set_is_one_clear_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "fatlib", "run", "9th_place", "--set", "epoch=1"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert "epoch=1" in res.stderr and "epochs" in res.stderr
    with pytest.raises(DataError, match=r"3rd_place.toml.*round9"):  # checked before any work
        _check(apply_sets(load_recipe("3rd_place"), ['predict.stages=["round9"]']))


def test_warmup_and_run_12th_place_give_the_same_stage_metrics(mini_dataset, runs):
    """One engine: `warmup` (options) and `run 12th_place` (--set) on the same data and seed train the same
    stages with the same settings, so every stage's CV lwlrap and selection are the same."""
    tmp_path = runs["root"]
    _run_once("12th_place", mini_dataset, runs)
    cmd = [sys.executable, "-m", "fatlib", "warmup", "--data", str(mini_dataset), "--weights", str(tmp_path / "w"),
           "--run", "by_warmup", "--cache-dir", str(tmp_path / "c"), "--quiet", "--epochs", "1", "--n-folds", "2",
           "--no-auto-scale", "--model-kwargs", '{"width_mult": 0.125}', "--mel", '{"crop_frames": 32, "n_mels": 32}',
           "--batch-size", "16", "--workers", "0"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    by_run = pd.read_csv(tmp_path / "w" / "12th_place" / "stages.csv")
    by_warmup = pd.read_csv(tmp_path / "w" / "by_warmup" / "stages.csv")
    assert by_run["stage"].tolist() == ["stage1", "stage2", "stage3", "stage4", "ensemble(stage2+stage3+stage4)"]
    pd.testing.assert_frame_equal(by_run, by_warmup, check_exact=False, rtol=1e-6)
    for stage in ("stage3", "stage4"):
        assert (tmp_path / "w" / "12th_place" / stage / "selected.csv").read_text() == \
            (tmp_path / "w" / "by_warmup" / stage / "selected.csv").read_text()


def test_ensemble_size_one_trains_only_the_stages_it_needs(mini_dataset, runs):
    """--ensemble-size 1 of the 12th place: its first member is stage2, which needs stage1 (init_from): those two
    stages train, stages 3-4 and the VGG16-BN warm-up do not; the ensemble, submission and report are of stage2."""
    tmp_path = runs["root"]
    sets = [s for s in TINY]
    cmd = [sys.executable, "-m", "fatlib", "run", "12th_place", "--data", str(mini_dataset), "--run", "one",
           "--weights", str(tmp_path / "w"), "--cache-dir", str(tmp_path / "c"), "--quiet", "--ensemble-size", "1",
           *[a for s in sets for a in ("--set", s)]]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run_dir = tmp_path / "w" / "one"
    assert sorted(p.parent.name for p in run_dir.glob("*/config.json")) == ["stage1", "stage2"]
    steps = json.loads((run_dir / "steps.json").read_text())["steps"]
    assert steps == ["train stage1", "train stage2", "ensemble", "predict", "report"]
    assert "[run] ensemble: 1 of 6 members (ensemble_size 1 <- option --ensemble-size): stage2; stages not trained " \
        "(no kept member needs them): stage3, stage4, vgg_stage1, vgg_stage2, vgg_stage3, vgg_stage4" in res.stdout
    assert json.loads((run_dir / "test.json").read_text())["stages"] == ["stage2"]
    assert pd.read_csv(run_dir / "stages.csv")["stage"].tolist() == ["stage1", "stage2", "ensemble(stage2)"]


def test_pseudo_rounds_run_right_after_from_stage(tmp_path):
    """The rounds follow [pseudo] from_stage (the recipe's last stage by default: the layout of earlier runs, round<r>
    after every stage); a later stage may take round r's noisy subset with a "pseudo" selection of that round_index,
    its round parameters [pseudo]'s. The needed stages of a member follow its sources back through the rounds."""
    from fatlib.engine import needed_stages

    rec = expand(load_recipe("3rd_place"))
    assert rec.stage_names()[:8] == ["curated", *(f"round{r}" for r in range(1, 7)), "stft_round1"]
    assert rec.selection["stft_round5"] == {"rule": "pseudo", "sources": ["round4"], "round_index": 5,
                                            "round_size": 1000, "max_rounds": 5, "threshold": 0.5}
    assert needed_stages(rec, ["stft_round5"]) == ["curated", "round1", "round2", "round3", "round4", "stft_round5"]
    old = tmp_path / "old.toml"  # a pseudo-label recipe of one stage, as 3rd_place.toml was: rounds after it
    old.write_text('name = "old"\npipeline = "pseudo_label"\n[stage]\nmodel = "cnn_model_1"\n[stages.curated]\n'
                   'train_on = "curated"\n[pseudo]\nrounds = 2\n[predict]\nstages = ["round2"]\n')
    assert expand(load_recipe(old)).stage_names() == ["curated", "round1", "round2"]
    no_round = tmp_path / "bad.toml"
    no_round.write_text(old.read_text() + '[stages.other]\n[selection.other]\nrule = "pseudo"\nsources = ["round1"]\n')
    with pytest.raises(DataError, match=r"\[selection.other\] rule pseudo needs round_index"):
        _check(load_recipe(no_round))
