"""The fatlib Kaggle dataset: wheels (fatlib + dependencies), weights loaded before shipping, manifest checks,
offline installs, and the one-line errors for a missing package."""
import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

from fatlib.errors import DependencyError, OutputError, WeightsError
from fatlib.kaggle import DEPENDENCIES, PackagingError, build_dataset, verify_dataset

VOCAB = ["a", "b", "c"]
KWARGS = {"n_classes": 3, "width_mult": 0.125}


def _save(path, tiny_mel, **state_edit):
    from fatlib.checkpoint import save_weights
    from fatlib.models import create_model

    model = create_model("cnn_model_1", **KWARGS)
    with torch.no_grad():
        for name, value in state_edit.items():
            model.state_dict()[name].fill_(value)
    return save_weights(path, model, model_name="cnn_model_1", model_kwargs=KWARGS, mel_config=tiny_mel.to_dict(),
                        vocab=VOCAB)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_mel):
    run = tmp_path_factory.mktemp("weights") / "run1"
    for stage, folds in [("stage2", 2), ("stage3", 1)]:
        for k in range(folds):
            _save(run / stage / f"fold{k}.safetensors", tiny_mel)
        (run / stage / "config.json").write_text(json.dumps({"name": stage}))
    (run / "stage2" / "metrics.json").write_text('{"cv": 0.5}')
    (run / "stage2" / "oof_curated.csv").write_text("fname\n")  # training output that is not shipped
    return run


@pytest.fixture(scope="module")
def bundle(run_dir, tmp_path_factory, dep_wheels):
    out = tmp_path_factory.mktemp("kaggle") / "kaggle_dataset"
    return build_dataset(run_dir, out, stages=["stage2"], dep_wheels=dep_wheels, progress=False)


def test_layout_and_manifest(bundle, run_dir):
    files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    wheels = [f for f in files if f.startswith("wheels/")]
    assert sorted(w.split("/")[1].split("-")[0] for w in wheels) == [
        "fastprogress", "fatlib", "iterative_stratification", "safetensors"]
    assert [f for f in files if f.startswith("weights/")] == [
        "weights/run1/stage2/config.json", "weights/run1/stage2/fold0.safetensors",
        "weights/run1/stage2/fold1.safetensors", "weights/run1/stage2/metrics.json",
    ]  # stage3 was not chosen; oof CSVs stay home
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["stages"] == [
        {"path": "weights/run1/stage2", "folds": 2, "models": ["cnn_model_1"], "n_classes": 3}
    ]
    assert manifest["wheel"].startswith("wheels/fatlib-0.1.0-") and manifest["wheel"] in wheels
    assert sorted(manifest["dependencies"]) == ["fastprogress", "iterative_stratification", "safetensors"]
    for rel, info in manifest["files"].items():
        data = (bundle / rel).read_bytes()
        assert info == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert (bundle / "weights/run1/stage2/fold0.safetensors").read_bytes() == (
        run_dir / "stage2/fold0.safetensors").read_bytes()
    assert "--no-index" in (bundle / "README.md").read_text()
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".")]  # no temporary left
    assert verify_dataset(bundle) == manifest


def test_wheel_installs_offline_into_a_fresh_venv(bundle, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", str(py)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHONPATH"))}
    env["PIP_CONFIG_FILE"] = os.devnull  # no index, no find-links but the dataset's
    subprocess.run(pip + ["install", "--no-index", "--no-deps", "--find-links", str(bundle / "wheels"), "fatlib",
                          *DEPENDENCIES.values()], check=True, capture_output=True, env=env)
    code = "import fatlib, iterstrat, pathlib; print(fatlib.__version__, pathlib.Path(fatlib.__file__).parent)"
    res = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, check=True)
    version, where = res.stdout.split()
    assert version == "0.1.0"
    assert where.startswith(str(venv))  # imported from the installed wheel, not from the checkout
    pkg = next(venv.glob("lib/python*/site-packages/fatlib"))
    assert (pkg / "predict.py").is_file() and (pkg / "models" / "__init__.py").is_file()


def test_existing_output_and_reuse_of_wheels(bundle, run_dir, tmp_path):
    wheel = next((bundle / "wheels").glob("fatlib-*.whl"))
    out = tmp_path / "ds"
    out.mkdir()
    (out / "old.txt").write_text("x")
    with pytest.raises(PackagingError, match="--force"):
        build_dataset(run_dir, out, wheel=wheel, dep_wheels=bundle / "wheels", progress=False)
    assert (out / "old.txt").exists()  # left untouched
    with pytest.raises(OutputError, match="not a --out folder fatlib made .no manifest.json"):  # --force too
        build_dataset(run_dir, out, wheel=wheel, dep_wheels=bundle / "wheels", overwrite=True, progress=False)
    assert (out / "old.txt").read_text() == "x"
    (out / "old.txt").unlink()
    build_dataset(run_dir, out, wheel=wheel, dep_wheels=bundle / "wheels", progress=False)  # an empty folder
    (out / "wheels" / "stale.txt").write_text("x")
    build_dataset(run_dir, out, wheel=wheel, dep_wheels=bundle / "wheels", overwrite=True, progress=False)  # its own
    assert not (out / "wheels" / "stale.txt").exists()
    assert (out / "weights/run1/stage3/fold0.safetensors").is_file()  # all stages by default
    with pytest.raises(PackagingError, match="not a fatlib wheel"):
        build_dataset(run_dir, tmp_path / "ds2", wheel=tmp_path / "ds" / "README.md", progress=False)


def test_missing_stage_or_damaged_weights_fail_before_building(run_dir, tmp_path, tiny_mel, dep_wheels):
    with pytest.raises(WeightsError, match="stage9"):
        build_dataset(run_dir, tmp_path / "ds", stages=["stage9"], progress=False)
    bad = tmp_path / "run" / "stage1"
    _save(bad / "fold0.safetensors", tiny_mel)
    whole = (bad / "fold0.safetensors").read_bytes()
    (bad / "fold1.safetensors").write_bytes(whole[: len(whole) // 2])  # a truncated copy
    with pytest.raises(WeightsError, match="fold1.safetensors"):
        build_dataset(bad, tmp_path / "ds", dep_wheels=dep_wheels, progress=False)
    _save(bad / "fold1.safetensors", tiny_mel, **{"head.6.bias": float("nan")})  # loads, but NaN inside
    with pytest.raises(WeightsError, match=r"fold1.safetensors: NaN or infinite values in \['head.6.bias'\]"):
        build_dataset(bad, tmp_path / "ds", dep_wheels=dep_wheels, progress=False)
    meta_bad = whole.replace(b'"cnn_model_1"', b'"cnn_model_9"')  # same length: metadata names no model
    (bad / "fold1.safetensors").write_bytes(meta_bad)
    with pytest.raises(WeightsError, match="fold1.safetensors: .*cnn_model_9"):
        build_dataset(bad, tmp_path / "ds", dep_wheels=dep_wheels, progress=False)
    assert not (tmp_path / "ds").exists()  # refused before anything was built


def test_verify_dataset_names_a_damaged_or_missing_file(bundle, tmp_path):
    import shutil

    copy = tmp_path / "fatlib"
    shutil.copytree(bundle, copy)
    fold = copy / "weights/run1/stage2/fold1.safetensors"
    data = bytearray(fold.read_bytes())
    data[-5] ^= 0x01  # one flipped bit in the tensor data: same size, other sha256
    fold.write_bytes(bytes(data))
    with pytest.raises(PackagingError, match=r"fold1.safetensors: sha256 differs from manifest.json \(damaged\)\. Re-upload"):
        verify_dataset(copy)
    fold.write_bytes(bytes(data[:100]))
    with pytest.raises(PackagingError, match="fold1.safetensors: 100 bytes, manifest.json says"):
        verify_dataset(copy)
    fold.unlink()
    (copy / "weights/run1/stage2/fold0.safetensors").unlink()
    with pytest.raises(PackagingError, match=r"fold0.safetensors: missing \(manifest.json lists it\) \(and 1 more\)"):
        verify_dataset(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(PackagingError, match="manifest.json: not found"):
        verify_dataset(copy)
    with pytest.raises(PackagingError, match="no such folder"):
        verify_dataset(tmp_path / "nowhere")


def test_dependency_wheels_offline_is_one_line_with_the_fix(tmp_path, monkeypatch):
    from fatlib.kaggle import download_dependency_wheels

    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # what an offline build machine sees: no index reachable
    with pytest.raises(PackagingError) as e:
        download_dependency_wheels(tmp_path / "w")
    msg = str(e.value)
    assert "\n" not in msg and "iterative-stratification==" in msg and "offline?" in msg and "--dep-wheels DIR" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(PackagingError, match="in .*empty"):
        download_dependency_wheels(tmp_path / "w", find_links=tmp_path / "empty")


def test_install_missing_installs_only_what_is_missing_or_says_why_not(tmp_path, monkeypatch, capsys):
    import fatlib.kaggle as kaggle

    assert kaggle.install_missing(tmp_path / "nowhere") == []  # everything importable: pip is not even run
    monkeypatch.setattr(kaggle, "DEPENDENCIES", {**DEPENDENCIES, "fatlib_no_such_mod": "fatlib-no-such-package"})
    with pytest.raises(DependencyError, match="fatlib-no-such-package not installed, and .*nowhere does not exist. "
                                              "Attach the fatlib dataset"):
        kaggle.install_missing(tmp_path / "nowhere")
    (tmp_path / "wheels").mkdir()
    with pytest.raises(DependencyError, match="fatlib-no-such-package: could not be installed from .*wheels "
                                              "\\(pip said .*\\)"):
        kaggle.install_missing(tmp_path / "wheels")


def test_a_missing_package_is_one_line_naming_it_and_the_fix(tiny_dataset, tmp_path, monkeypatch):
    from fatlib.dataset import make_folds

    monkeypatch.setitem(sys.modules, "iterstrat.ml_stratifiers", None)  # as if not installed
    with pytest.raises(DependencyError, match="iterative-stratification .*make_folds.*pip install "
                                              "iterative-stratification"):
        make_folds(torch.eye(4).numpy(), n_folds=2)
    code = ("import sys; sys.modules['iterstrat'] = None; from fatlib.commands.main import main; sys.exit(main(sys.argv[1:]))")
    res = subprocess.run([sys.executable, "-c", code, "train-stage", "--data", str(tiny_dataset), "--run", "r",
                          "--weights", str(tmp_path), "--stage", "s1", "--n-folds", "2", "--epochs", "1",
                          "--model-kwargs", '{"width_mult": 0.125}', "--quiet"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("error: the package iterative-stratification (import iterstrat) is not installed, "
                                 "and make_folds (multi-label stratified folds) needs it. Install it with `pip install "
                                 "iterative-stratification`; on Kaggle without internet, attach the fatlib dataset")
    code = code.replace("'iterstrat'", "'librosa'")  # any other package, missing from the start
    res = subprocess.run([sys.executable, "-c", code, "cache", "--data", str(tiny_dataset), "--splits", "test",
                          "--jobs", "1", "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("error: the package librosa (import librosa) is not installed, and python -m fatlib "
                                 "cache needs it. Install it with `pip install librosa`")


def test_cli_wheels_only_and_weights_from_an_input_root(bundle, run_dir, tmp_path, capsys, monkeypatch):
    import shutil

    from fatlib.commands.main import main

    wheel = next((bundle / "wheels").glob("fatlib-*.whl"))
    common = ["--wheel", str(wheel), "--dep-wheels", str(bundle / "wheels")]
    out = tmp_path / "cli_ds"
    assert main(["kaggle-dataset", "--weights", str(run_dir), "--stages", "stage3", "--out", str(out), *common]) == 0
    assert "weights/run1/stage3" in capsys.readouterr().out
    assert main(["kaggle-dataset", "--weights", str(run_dir), "--out", str(out), *common]) == 1  # exists: --force
    assert main(["kaggle-dataset", "--out", str(tmp_path / "wheels_only"), *common]) == 0  # notebooks 00-05
    assert "no weights" in capsys.readouterr().out
    assert not (tmp_path / "wheels_only" / "weights").exists()
    assert verify_dataset(tmp_path / "wheels_only")["stages"] == []
    # a run whose stages live in two earlier sessions' outputs, found through --input-roots
    for session, stage in (("s2", "stage2"), ("s3", "stage3")):
        shutil.copytree(run_dir / stage, tmp_path / session / "weights" / "run1" / stage)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["kaggle-dataset", "--weights", "weights/run1", "--input-roots", str(tmp_path / "s2"),
                 str(tmp_path / "s3"), "--out", "ds", *common]) == 0
    assert [s["path"] for s in verify_dataset(work / "ds")["stages"]] == ["weights/run1/stage2", "weights/run1/stage3"]
