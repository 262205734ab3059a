"""``--plan``: what a run will do, without training or writing anything: every stage with its settings and each
value's source, the selections, the ensemble, the outputs and the work; the figures are the ones training would use."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _fatlib(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "fatlib", *map(str, args)], capture_output=True, text=True, env=env,
                         timeout=300, cwd=cwd)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


@pytest.mark.parametrize("recipe, stages", [
    ("12th_place", ["stage1", "stage2", "stage3", "stage4"]),
    ("3rd_place", ["curated", *(f"round{r}" for r in range(1, 7))]),
])
def test_run_plan_shows_every_stage_and_source_and_writes_nothing(tiny_dataset, tmp_path, recipe, stages):
    w, c = tmp_path / "w", tmp_path / "c"
    out = _fatlib("run", recipe, "--plan", "--data", tiny_dataset, "--weights", w, "--cache-dir", c,
                  "--set", "epochs=3", cwd=tmp_path)
    assert not w.exists() and not c.exists() and list(tmp_path.iterdir()) == []  # no weights, caches, folds
    shown = re.findall(r"^\d+\. stage (\S+):", out, flags=re.M)
    assert shown == stages  # every stage, in order
    assert "48 curated + 48 noisy clips, 6 classes, 16 test clips" in out
    for kind in ("<- recipe ", "<- auto scaling", "default (not published: fatlib's choice)", "<- --set epochs=3"):
        assert kind in out, kind
    assert out.count("epochs = 3  <- --set epochs=3") == len(stages)  # a value given wins over auto scaling
    assert re.search(r"n_folds = 5  <- auto scaling 5 folds on 96 clips", out) or recipe == "3rd_place"
    assert "optimizer steps per fold" in out and f"ensemble: mean of {'stage2 + stage3 + stage4' if recipe == '12th_place' else 'round6'}" in out
    assert f"{w / recipe}/" in out and "submission.csv" in out
    if recipe == "12th_place":  # 96 clips: the default recipe's [small_data] table, its sound mix said where
        assert "sound_mix_p = 0.5  <- small-data table 12th_place.toml:" in out and "selection first: rule stage3" in out
    else:
        assert "selection first: rule pseudo over round5" in out
        assert re.search(r'init_from = null  <- recipe 3rd_place.toml:\d+ \[pseudo\]  # not published: each round', out)


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
    assert "NOT RUNNABLE" not in out.split("2. stage stage2")[1]  # curated stages run


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
