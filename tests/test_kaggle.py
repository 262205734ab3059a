import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

from fatlib.errors import WeightsError
from fatlib.kaggle import PackagingError, build_dataset

VOCAB = ["a", "b", "c"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_mel):
    from fatlib.weights import save_weights

    run = tmp_path_factory.mktemp("weights") / "run1"
    model = torch.nn.Linear(4, 3)
    for stage, folds in [("stage2", 2), ("stage3", 1)]:
        for k in range(folds):
            save_weights(run / stage / f"fold{k}.safetensors", model, model_name="cnn_model_1",
                         model_kwargs={"n_classes": 3}, mel_config=tiny_mel.to_dict(), vocab=VOCAB)
        (run / stage / "config.json").write_text(json.dumps({"name": stage}))
    (run / "stage2" / "metrics.json").write_text('{"cv": 0.5}')
    (run / "stage2" / "oof_curated.csv").write_text("fname\n")  # training output that is not shipped
    return run


@pytest.fixture(scope="module")
def bundle(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("kaggle") / "kaggle_dataset"
    return build_dataset(run_dir, out, stages=["stage2"], progress=False)


def test_layout_and_manifest(bundle, run_dir):
    files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    wheels = [f for f in files if f.startswith("wheels/")]
    assert len(wheels) == 1 and wheels[0].startswith("wheels/fatlib-0.1.0-") and wheels[0].endswith(".whl")
    assert [f for f in files if f.startswith("weights/")] == [
        "weights/run1/stage2/config.json", "weights/run1/stage2/fold0.safetensors",
        "weights/run1/stage2/fold1.safetensors", "weights/run1/stage2/metrics.json",
    ]  # stage3 was not chosen; oof CSVs stay home
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["stages"] == [
        {"path": "weights/run1/stage2", "folds": 2, "models": ["cnn_model_1"], "n_classes": 3}
    ]
    for rel, info in manifest["files"].items():
        data = (bundle / rel).read_bytes()
        assert info == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert (bundle / "weights/run1/stage2/fold0.safetensors").read_bytes() == (
        run_dir / "stage2/fold0.safetensors").read_bytes()
    assert "--no-index" in (bundle / "README.md").read_text()
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".")]  # no temporary left


def test_wheel_installs_offline_into_a_fresh_venv(bundle, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", str(py)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHONPATH"))}
    subprocess.run(pip + ["install", "--no-index", "--no-deps", "--find-links", str(bundle / "wheels"), "fatlib"],
                   check=True, capture_output=True, env=env)
    code = "import fatlib, pathlib; p = pathlib.Path(fatlib.__file__).parent; print(fatlib.__version__, p)"
    res = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, check=True)
    version, where = res.stdout.split()
    assert version == "0.1.0"
    assert where.startswith(str(venv))  # imported from the installed wheel, not from the checkout
    pkg = next(venv.glob("lib/python*/site-packages/fatlib"))
    assert (pkg / "predict.py").is_file() and (pkg / "models" / "__init__.py").is_file()


def test_existing_output_and_reuse_of_a_wheel(bundle, run_dir, tmp_path):
    wheel = next((bundle / "wheels").glob("*.whl"))
    out = tmp_path / "ds"
    out.mkdir()
    (out / "old.txt").write_text("x")
    with pytest.raises(PackagingError, match="--force"):
        build_dataset(run_dir, out, wheel=wheel, progress=False)
    assert (out / "old.txt").exists()  # left untouched
    build_dataset(run_dir, out, wheel=wheel, overwrite=True, progress=False)
    assert not (out / "old.txt").exists()
    assert (out / "weights/run1/stage3/fold0.safetensors").is_file()  # all stages by default
    with pytest.raises(PackagingError, match="not a fatlib wheel"):
        build_dataset(run_dir, tmp_path / "ds2", wheel=tmp_path / "ds" / "README.md", progress=False)


def test_missing_stage_or_damaged_weights_fail_before_building(run_dir, tmp_path):
    with pytest.raises(WeightsError, match="stage9"):
        build_dataset(run_dir, tmp_path / "ds", stages=["stage9"], progress=False)
    bad = tmp_path / "run" / "stage1"
    bad.mkdir(parents=True)
    (bad / "fold0.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(WeightsError, match="fold0.safetensors"):
        build_dataset(bad, tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds").exists()


def test_cli(bundle, run_dir, tmp_path, capsys):
    from fatlib.cli import main

    wheel = next((bundle / "wheels").glob("*.whl"))
    out = tmp_path / "cli_ds"
    assert main(["kaggle-dataset", "--weights", str(run_dir), "--stages", "stage3", "--out", str(out),
                 "--wheel", str(wheel)]) == 0
    assert "weights/run1/stage3" in capsys.readouterr().out
    assert main(["kaggle-dataset", "--weights", str(run_dir), "--out", str(out), "--wheel", str(wheel)]) == 1
