"""Recipes are files: every shipped recipe loads into valid stage settings; bad files are one clear
error; the command line reads them and its help shows the real defaults."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from fatlib.errors import DataError
from fatlib.recipes import DEFAULT_RECIPE, list_recipes, load_recipe
from fatlib.train import StageConfig


def test_default_recipe_is_shipped():
    assert DEFAULT_RECIPE in list_recipes()


@pytest.mark.parametrize("name", list_recipes())
def test_every_recipe_gives_valid_stage_configs(name):
    from fatlib.augment import get_augment
    from fatlib.losses import get_loss
    from fatlib.models import list_models

    rec = load_recipe(name)
    assert rec.title and rec.pipeline in ("warmup", "single", "pseudo_label")
    for stage, n_dataset in [(None, None), (None, 100), *[(s, n) for s in rec.stage_names() for n in (None, 100)]]:
        fields = rec.stage_fields(stage, n_dataset=n_dataset)  # 100 clips: with the [small_data] table
        if fields.get("train_on") == "curated+selected":  # the run writes the selection before the stage
            fields["selection_csv"] = "selected.csv"
        cfg = StageConfig.from_dict({"name": stage or "stage", **fields})
        assert cfg.model in list_models()
        cfg.mel_config()
        get_loss(cfg.loss)
        for a in cfg.augment:
            get_augment(a)
    text = rec.path.read_text()
    # every value is explained: each assignment line carries a comment (citing the write-up or saying
    # what fatlib chose where it is not published), apart from the per-stage tables' repeated keys
    for line in text.splitlines():
        if re.match(r"^\s*\w+\s*=", line) and not line.startswith(("name", "title", "pipeline")):
            assert "#" in line or re.match(r"^\s*epochs\s*=", line), f"{name}: uncommented value: {line}"


def test_bad_recipe_files_are_one_clear_error(tmp_path):
    bad = tmp_path / "mine.toml"
    bad.write_text('[stage]\nmodel = "cnn_model_1"\nbatchsize = 64\n[predict]\ntta = "windows"\nspeed = 2\n')
    with pytest.raises(DataError) as e:
        load_recipe(bad)
    msg = str(e.value)
    assert str(bad) in msg and "batchsize" in msg and "speed" in msg
    broken = tmp_path / "broken.toml"
    broken.write_text("[stage\nmodel = 1\n")
    with pytest.raises(DataError, match="not a readable TOML"):
        load_recipe(broken)
    with pytest.raises(DataError, match="neither a shipped recipe"):
        load_recipe("no_such_recipe")


def test_recipe_file_feeds_the_command_line(tmp_path):
    from fatlib.commands.main import build_parser
    from fatlib.commands.options import config_from_args

    mine = tmp_path / "mine.toml"
    mine.write_text('name = "mine"\n[stage]\nmodel = "xresnet18"\nbatch_size = 32\nlr = 0.01\nepochs = 7\n'
                    '[stages.s2]\nepochs = 3\n')
    args = build_parser().parse_args(["train-stage", "--run", "r", "--recipe", str(mine)])
    cfg = config_from_args(args)
    assert (cfg.model, cfg.batch_size, cfg.lr, cfg.epochs) == ("xresnet18", 32, 0.01, 7)
    args = build_parser().parse_args(["train-stage", "--run", "r", "--recipe", str(mine), "--stage", "s2", "--lr", "0.5"])
    cfg = config_from_args(args)
    assert (cfg.epochs, cfg.lr, cfg.name) == (3, 0.5, "s2")  # the stage's table, then the option


@pytest.mark.parametrize("argv, n_dataset, model, preset", [
    ([], 417, "xresnet18", "multires128"),  # a few hundred clips: the [small_data] set-up
    ([], 1499, "xresnet18", "multires128"),
    ([], 1500, "cnn_model_1", "cnn128"),  # FSDKaggle2019-sized: the recipe's own
    ([], None, "cnn_model_1", "cnn128"),  # size unknown (e.g. --help)
    (["--no-auto-scale"], 417, "cnn_model_1", "cnn128"),
    (["--model", "cnn_model_1"], 417, "cnn_model_1", "cnn128"),  # your model: the recipe's features
    (["--preset", "dense64"], 417, "cnn_model_1", "dense64"),
    (["--lr", "0.01", "--augment", "specmix"], 417, "xresnet18", "multires128"),  # other options keep it
])
def test_small_data_table_of_the_default_recipe(tmp_path, argv, n_dataset, model, preset):
    from fatlib.commands.main import build_parser
    from fatlib.commands.options import config_from_args, run_name

    rec = load_recipe("12th_place")
    assert rec.small_data == {"model": "xresnet18", "preset": "multires128", "augment": ["mixup"], "loss": "lsep",
                              "min_steps": 740, "sound_mix_p": 0.5, "ensemble_size": 3}
    for command in (["train-stage"], ["warmup", "--stage", "stage2"]):
        args = build_parser().parse_args([*command, *argv])
        if command[0] == "train-stage":
            cfg = config_from_args(args, n_dataset=n_dataset)
            assert (cfg.model, cfg.preset) == (model, preset)
            assert (cfg.loss, cfg.min_steps, cfg.sound_mix_p) == (("lsep", 740, 0.5) if model == "xresnet18"
                                                                  else ("bce", 600, 0.0))
            assert cfg.augment == (["specmix"] if "specmix" in argv else ["mixup"] if model == "xresnet18"
                                   else rec.stage["augment"])
        assert run_name(args, n_dataset=n_dataset) == model  # the run folder is named after the model trained
    args = build_parser().parse_args(["train-stage", *argv])
    note = rec.small_data_note("stage", n_dataset, {"model": "cnn_model_1"} if "--model" in argv else
                               {"preset": "dense64"} if "--preset" in argv else
                               {"auto_scale": False} if "--no-auto-scale" in argv else {})
    assert (note is not None) == (model == "xresnet18")
    if note:
        assert note.startswith(f"small data set ({n_dataset} clips < 1500): model xresnet18, preset multires128, "
                               "augment mixup, loss lsep, min_steps 740, sound_mix_p 0.5")
    config = tmp_path / "c.json"  # --config counts as given, as an option does
    config.write_text('{"name": "s", "auto_scale": false}')
    args = build_parser().parse_args(["train-stage", "--config", str(config)])
    assert config_from_args(args, n_dataset=417).model == "cnn_model_1"


def test_small_data_table_is_checked(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[stage]\nmodel = "cnn_model_1"\n[small_data]\nmodle = "xresnet18"\n')
    with pytest.raises(DataError, match=r"\[small_data\] has unknown StageConfig fields \['modle'\]"):
        load_recipe(bad)


@pytest.mark.parametrize("command", ["train-stage", "warmup", "predict", "cache", "select", "kaggle-dataset",
                                     "synth", "demo"])
def test_help_shows_real_defaults(command):
    out = subprocess.run([sys.executable, "-m", "fatlib", command, "--help"], capture_output=True, text=True,
                         env={"COLUMNS": "200", "PATH": ""}, check=True).stdout
    assert "None" not in out, out
    if command in ("train-stage", "warmup"):
        assert "default: 128 (recipe 12th_place)" in out and "default: 10 (recipe 12th_place)" in out


def test_set_changes_a_loaded_recipe():
    from fatlib.recipes import apply_sets

    rec = load_recipe("12th_place")
    new = apply_sets(rec, ["epochs=1", "model_kwargs.width_mult=0.125", "mel.crop_frames=32", "auto_scale=false",
                           "selection.stage3.threshold=0.3", "predict.tta=full", "stages.stage2.lr=0.5"])
    assert rec.stage_fields("stage1")["epochs"] == 30  # the loaded recipe is unchanged
    for stage in rec.stage_names():  # a field set for every stage wins over the stages' own tables
        fields = new.stage_fields(stage)
        assert fields["epochs"] == 1 and fields["model_kwargs"] == {"width_mult": 0.125}
        assert fields["mel"] == {"crop_frames": 32} and fields["auto_scale"] is False
    assert new.stage_fields("stage2")["lr"] == 0.5 and new.stage_fields("stage3")["lr"] == rec.stage["lr"]
    assert new.selection["stage3"] == {**rec.selection["stage3"], "threshold": 0.3} and new.predict["tta"] == "full"
    for bad in ("epoch=1", "predict.speed=2", "epochs"):
        with pytest.raises(DataError, match="--set"):
            apply_sets(rec, [bad])


FSDKAGGLE2019_CLIPS = 4970 + 19815  # curated + noisy: the size the recipes' values are for


@pytest.mark.parametrize("name", list_recipes())
def test_sound_mix_runs_only_where_a_recipe_line_says_so(name, tmp_path):
    """No write-up mixes sounds: every stage the engine runs has sound_mix_p 0, unless the file sets it on a
    commented line (the default recipe's [small_data], the demo) — at FSDKaggle2019's size and on small data."""
    import types

    from fatlib.engine import expand, stage_config, stage_sources

    rec = expand(load_recipe(name))
    lines = rec.path.read_text().splitlines()
    for n_clips in (FSDKAGGLE2019_CLIPS, 300):
        data = types.SimpleNamespace(n_train_clips=n_clips)
        for stage in rec.stage_names():
            cfg = stage_config(rec, stage, data, tmp_path)
            if cfg.sound_mix_p == 0:
                continue
            src = stage_sources(rec, stage, data)["sound_mix_p"]
            assert src.kind in ("recipe", "small_data"), f"{name} {stage} at {n_clips} clips: sound mix from {src}"
            line = lines[int(re.match(r"[^:]+:(\d+)", src.where).group(1)) - 1]
            assert line.lstrip().startswith("sound_mix_p") and "#" in line and len(line.split("#", 1)[1].strip()) > 10, \
                f"{name}: sound mix without a reason on its line: {line!r}"
    if name != "demo":  # the demo sets it for every stage; the recipes of the write-ups never at their size
        data = types.SimpleNamespace(n_train_clips=FSDKAGGLE2019_CLIPS)
        assert all(stage_config(rec, s, data, tmp_path).sound_mix_p == 0 for s in rec.stage_names())
