"""Every notebook, top to bottom with papermill, as a Kaggle user runs them: the Kaggle rehearsal.

One "session" per notebook, each in its own process with its own fresh Python environment (a stand-in
for Kaggle's image: the packages this test sees, minus fatlib and iterative-stratification), which
installs fatlib and the missing dependency from the fatlib dataset's wheels with ``pip --no-index`` only
(pip's config and any index are switched off). Each session's working folder is ``<session>/working``
(the notebook's cwd, its only writable place); the data set, the fatlib dataset and the earlier
sessions' outputs are mounted read-only (``chmod -R a-w``) under ``<session>/input/<name>``, i.e.
``../input/<name>`` as on Kaggle, and found by the notebooks' defaults; after each session nothing in
them has changed. Stage 1 is cut short and resumed in a second session. Tiny data, tiny parameters.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("papermill")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
DATA = dict(n_mels=32, crop_frames=32, cache_jobs=1)
TRAIN = dict(DATA, width_mult=0.125, n_folds=2, batch_size=16, epochs=1, n_workers=0, auto_scale=False)
ALL = ["00_data_and_features", "01_stage1_noisy", "02_stage2_curated", "03_stage3_selected_noisy",
       "04_stage4_selected_noisy", "05_vgg16_warmup", "06_inference_kernel"]
# hidden from the stand-in for Kaggle's image: fatlib (any install of it) and iterative-stratification
HIDDEN = re.compile(r"^(fatlib|__editable__[._]*fatlib|iterstrat|iterative_stratification)", re.IGNORECASE)
DATA_MOUNT = "freesound-audio-tagging-2019"


def outputs(nb: dict, kind: str) -> list:
    """Every output of an executed notebook: stream text ("text"), PNG images ("png") or HTML ("html")."""
    got = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            if kind == "text" and o.get("output_type") == "stream":
                got.append("".join(o["text"]))
            if kind in ("png", "html") and {"png": "image/png", "html": "text/html"}[kind] in o.get("data", {}):
                got.append("".join(o["data"][{"png": "image/png", "html": "text/html"}[kind]]))
    return got


def stage_ok(run_dir: Path, stage: str) -> dict:
    d = run_dir / stage
    assert all((d / f"fold{k}.safetensors").is_file() for k in range(2)), f"{d}: fold weights missing"
    metrics = json.loads((d / "metrics.json").read_text())
    assert 0.0 < metrics["cv_lwlrap_curated"] <= 1.0 and len(metrics["fold_lwlrap_curated"]) == 2
    return metrics


def _snapshot(folder: Path) -> dict:
    """Every file and folder under ``folder`` with its size and modification time."""
    return {p.relative_to(folder).as_posix(): (p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def _chmod(folder: Path, mode: str) -> None:
    subprocess.run(["chmod", "-R", mode, str(folder)], check=True)


class Kaggle:
    """Runs notebooks as Kaggle sessions under ``base`` (see the module doc)."""

    def __init__(self, base: Path):
        self.base, self.jupyter, self.frozen = base, base / "jupyter", []
        self.image = base / "kaggle-image"
        self.image.mkdir()
        for site_dir in site.getsitepackages():  # this environment's packages, first found first, minus HIDDEN
            for entry in sorted(Path(site_dir).iterdir()):
                if not (HIDDEN.match(entry.name) or entry.name == "__pycache__" or os.path.lexists(self.image / entry.name)):
                    (self.image / entry.name).symlink_to(entry)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "JUPYTER", "VIRTUAL_ENV"))}
        self.env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PYTHONNOUSERSITE="1",
                        JUPYTER_PATH=str(self.jupyter))

    def freeze(self, folder: Path) -> Path:
        _chmod(folder, "a-w")
        self.frozen.append(folder)
        return folder

    def thaw(self) -> None:
        for folder in self.frozen:
            _chmod(folder, "u+w")

    def python(self, name: str) -> Path:
        """A fresh environment: no packages of its own, the image's through a .pth file (like a site dir)."""
        venv = self.base / name / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        py = venv / "bin" / "python"
        purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                 capture_output=True, text=True, check=True, env=self.env).stdout.strip()
        Path(purelib, "kaggle_image.pth").write_text(f"import site; site.addsitedir({str(self.image)!r})\n")
        kernel = self.jupyter / "kernels" / name
        kernel.mkdir(parents=True)
        (kernel / "kernel.json").write_text(json.dumps({
            "argv": [str(py), "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": name,
            "language": "python"}))
        return py

    def session(self, name: str, notebook: str, mounts: dict, **parameters) -> tuple[Path, dict, Path]:
        """Run notebooks/<notebook>.ipynb as a session: returns (its working folder, the executed
        notebook, its environment's site-packages). Its working folder is frozen afterwards."""
        root = self.base / name
        working = root / "working"
        working.mkdir(parents=True)
        (root / "input").mkdir()
        for mount, src in mounts.items():
            (root / "input" / mount).symlink_to(src)
        py = self.python(name)
        probe = ("import importlib.util as u; print(' '.join(m for m in ('fatlib', 'iterstrat', 'torch', 'fastai', "
                 "'librosa', 'safetensors', 'ipykernel', 'pip') if u.find_spec(m)))")
        seen = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, cwd=working, env=self.env,
                              check=True).stdout.split()
        assert seen == ["torch", "fastai", "librosa", "safetensors", "ipykernel", "pip"], seen  # no fatlib, no iterstrat
        before = {m: _snapshot(src) for m, src in mounts.items()}
        out = root / f"{notebook}.ipynb"
        res = subprocess.run([sys.executable, "-m", "papermill", str(NOTEBOOKS / f"{notebook}.ipynb"), str(out),
                              "-k", name, "--cwd", str(working), "-y", json.dumps(parameters), "--no-progress-bar"],
                             capture_output=True, text=True, env=self.env)
        assert res.returncode == 0, f"{name} ({notebook}) failed:\n{res.stderr[-6000:]}"
        for mount, src in mounts.items():
            assert _snapshot(src) == before[mount], f"{name} wrote into its read-only input {mount}"
        site_packages = next((root / "venv").glob("lib/python*/site-packages"))
        return self.freeze(working), json.loads(out.read_text()), site_packages


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory, dep_wheels):
    """The rehearsal's machine: a synthetic data set and the wheels-only fatlib dataset, both read-only."""
    from fatlib.synth import make_dataset

    k = Kaggle(tmp_path_factory.mktemp("kaggle"))
    k.data = k.freeze(make_dataset(k.base / "data", n_classes=4, n_curated=16, n_noisy=16, n_test=8, noise_rate=0.3,
                                   max_seconds=2.0, seed=1))
    k.dataset = k.base / "fatlib"
    subprocess.run([sys.executable, "-m", "fatlib", "kaggle-dataset", "--out", str(k.dataset), "--dep-wheels",
                    str(dep_wheels)], check=True, capture_output=True, cwd=k.base)
    k.freeze(k.dataset)
    yield k
    k.thaw()


def run_notebook(name: str, out_dir: Path, **parameters) -> dict:
    """papermill notebooks/<name>.ipynb in this environment (fatlib from this checkout), cwd ``out_dir``."""
    out = out_dir / f"{name}.ipynb"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "papermill", str(NOTEBOOKS / f"{name}.ipynb"), str(out), "--cwd",
                          str(out_dir), "-y", json.dumps({"fatlib_dataset": str(out_dir / "no-dataset"), **parameters}),
                          "--no-progress-bar"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, f"{name} failed:\n{res.stderr[-6000:]}"
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def curated_only(tmp_path_factory) -> Path:
    """Someone's own small data set: curated clips only (no train_noisy.csv, no test split), 5 classes."""
    from fatlib.synth import make_dataset

    root = make_dataset(tmp_path_factory.mktemp("curated_only") / "data", n_classes=5, n_curated=15, n_noisy=0,
                        n_test=0, max_seconds=2.0, seed=3)
    for name in ("train_noisy", "test"):
        shutil.rmtree(root / name)
    for name in ("train_noisy.csv", "sample_submission.csv", "test_labels.csv", "noisy_truth.csv", "synth.json"):
        (root / name).unlink()
    return root


@pytest.fixture(scope="module")
def executed_00(curated_only, tmp_path_factory) -> tuple[dict, Path]:
    """Notebook 00 executed on the curated-only set: (the executed notebook, its working folder)."""
    working = tmp_path_factory.mktemp("nb00")
    return run_notebook(ALL[0], working, data_dir=str(curated_only), n_examples=1, preview_batch=4,
                        listen_seconds=1.0, **DATA), working


def test_notebooks_00_01_on_curated_only_data(curated_only, executed_00, tmp_path):
    """00 and 01 finish on a curated-only data set without a test split: what needs the missing splits is
    skipped with one line; the curated cache is built (not a noisy one); the explorer's first choice is
    saved as a picture and players; 5 classes, sorted by count."""
    nb, working = executed_00
    text = "".join(outputs(nb, "text"))
    assert "no noisy clips in" in text and "the feature cache of noisy skipped" in text
    assert "note: " in text and "train_noisy.csv not found" in text  # the loader's warning as a plain line
    boxes = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert not boxes, boxes  # no warning boxes (TqdmWarning, UserWarning)
    assert [p.name.split("-")[0] for p in (working / "cache").glob("*.json")] == ["curated"]
    assert "features: 32 mels, hop 694 = 15.7 ms, 44.1 kHz, 0.5 s crops" in text and "MelConfig(" not in text
    (explorer,) = [h for h in outputs(nb, "html") if "Griffin-Lim" in h]  # the explorer's static rendering
    assert explorer.count("<audio") == 3 and explorer.count("data:image/png;base64,") == 1
    nb = run_notebook(ALL[1], tmp_path, data_dir=str(curated_only), **TRAIN)
    text = "".join(outputs(nb, "text"))
    assert text.count("no noisy clips in") == 1 and "the warm-up (stage 1 trains on the noisy clips" in text
    assert not (tmp_path / "weights").exists()


def test_executed_00_rendered_and_screenshotted(executed_00, tmp_path):
    """scripts/screenshot_notebook.py: nbconvert HTML of the executed 00, then headless Chromium pages; the
    page shows the saved outputs (pictures drawn, not a blank or error page)."""
    pytest.importorskip("nbconvert")
    sys.path.insert(0, str(ROOT / "scripts"))
    from screenshot_notebook import find_browser

    if find_browser() is None:
        pytest.skip("no chromium installed (apt-get install chromium)")
    import numpy as np
    from PIL import Image

    nb, working = executed_00
    executed = working / f"{ALL[0]}.ipynb"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "screenshot_notebook.py"), str(executed), "--out",
                          str(tmp_path), "--height", "6000"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    pages = [Path(line) for line in res.stdout.split()]
    assert len(pages) >= 2 and all(p.is_file() for p in pages)
    html = (tmp_path / f"{ALL[0]}.html").read_text()
    assert html.count("<audio") >= 1 + 3 + 1 and "Griffin-Lim" in html  # players of the saved outputs
    pixels = np.concatenate([np.asarray(Image.open(p).convert("RGB"), dtype=np.int16).reshape(-1, 3) for p in pages])
    coloured = (pixels.max(axis=1) - pixels.min(axis=1)) > 60  # figures (magma, bars), not text or background
    assert coloured.mean() > 0.02, f"{coloured.mean():.3f} of the pixels coloured: figures not drawn?"


def test_committed_notebooks_are_clean_and_generated():
    names = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ALL
    setups = set()
    for name in ALL:
        nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c["outputs"] and c["execution_count"] is None for c in code), f"{name}: strip outputs"
        params = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
        assert len(params) == 1 and nb["cells"][0]["cell_type"] == "markdown", name
        defaults: dict = {}
        exec("".join(params[0]["source"]), {}, defaults)  # the parameters cell is plain assignments
        assert defaults["data_dir"] is None, name
        assert defaults["fatlib_dataset"] == "../input/fatlib" and defaults["input_roots"] is None, name
        if name.startswith("06"):
            assert defaults["step_frames"] == 48 and defaults["runs"] == ["cnn_model_1", "vgg16_bn"]
        else:
            assert defaults["preset"] == "cnn128" and defaults["crop_frames"] == 128 and defaults["n_mels"] == 128
        if "n_folds" in defaults:  # the real Kaggle run: 10 folds, batch 128, full width
            assert (defaults["n_folds"], defaults["batch_size"], defaults["width_mult"]) == (10, 128, 1.0)
        setup = nb["cells"][nb["cells"].index(params[0]) + 1]  # right after the parameters: the shared setup
        setups.add("".join(setup["source"]))
        head = "".join(nb["cells"][0]["source"])
        assert "**Attach (Kaggle, Add data):**" in head and "**Then:** attach this notebook's output to" in head
    (setup,) = setups  # one setup cell, the same in every notebook
    assert "--no-index" in setup and "setup_notebook(fatlib_dataset, input_roots" in setup
    assert len([line for line in setup.splitlines() if not line.startswith("#")]) <= 9  # was 23 lines
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_notebooks.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr



@pytest.mark.slow
def test_kaggle_rehearsal_sessions_00_to_06(kaggle):
    import fatlib
    from fatlib.cache import FeatureCache
    from fatlib.dataset import FatData
    from fatlib.wave_augment import EFFECTS

    base = {DATA_MOUNT: kaggle.data, "fatlib": kaggle.dataset}
    installed = "installed from ../input/fatlib/wheels: fatlib, iterative-stratification\n"

    def installed_here(site_packages: Path, text: str) -> None:
        """The session installed fatlib and iterative-stratification from the wheels, nothing it already had."""
        assert installed in text and f"from {site_packages / 'fatlib'};" in text
        names = {p.name.split("-")[0].lower() for p in site_packages.iterdir()}
        assert {"fatlib", "iterstrat", "iterative_stratification"} <= names and "safetensors" not in names

    # 00: caches in its own working folder, clips to listen to, the augmentation grid with units
    s00, nb, sp = kaggle.session("s00", ALL[0], base, n_examples=2, preview_batch=8, listen_seconds=1.0, **DATA)
    text = "".join(outputs(nb, "text"))
    installed_here(sp, text)
    assert "earlier sessions read from nowhere" in text
    for split in ("curated", "noisy"):
        (index,) = sorted((s00 / "cache").glob(f"{split}-*.json"))
        assert len(FeatureCache(index)) == 16 and FeatureCache(index).cfg.n_mels == 32
    assert len(outputs(nb, "png")) >= 3  # class counts, augmentation grid, LogMel vs librosa
    html = "".join(outputs(nb, "html"))
    # 2 clips; one clip before and after each effect; the explorer: the crop, before and after (Griffin-Lim)
    assert html.count("<audio") == 2 + 1 + len(EFFECTS) + 3
    (line,) = [m for t in outputs(nb, "text") for m in re.findall(r"max \|LogMel - librosa\| = ([\d.]+) dB", t)]
    assert float(line) <= 0.01

    # 01, cut short: only fold 0 of stage 1 survives its session (as if the session ended mid-stage) ...
    s01a, nb, _ = kaggle.session("s01a", ALL[1], {**base, "nb00": s00}, **TRAIN)
    assert "nb00" in "".join(outputs(nb, "text")) and not (s01a / "cache").exists()  # caches read from 00's output
    cut = kaggle.base / "s01a-cut"
    shutil.copytree(s01a, cut)
    for f in (cut / "weights/cnn_model_1/stage1").iterdir():
        if not f.name.startswith(("fold0", "config")):
            f.unlink()
    record = json.loads((cut / "weights/cnn_model_1/stage1/fold0.json").read_text())
    (cut / "weights/cnn_model_1/stage1/fold0.json").write_text(json.dumps({**record, "session": "s01a"}))
    kaggle.freeze(cut)
    # ... and the next session resumes from that output: fold 0 copied over (not retrained), fold 1 trained
    s01, nb, _ = kaggle.session("s01", ALL[1], {**base, "nb00": s00, "nb01": cut}, **TRAIN)
    text, html = "".join(outputs(nb, "text")), "".join(outputs(nb, "html"))
    assert len(re.findall(r"stage1 fold 2/2 epoch 1/1: train_loss [\d.]+, valid_loss [\d.]+, lwlrap [\d.]+", text)) == 1
    assert "train_loss</th>" not in html  # one line per epoch: not fastai's table as well
    assert "top-3 predicted" in html and html.count("<audio") >= 1  # the error explorer's first rendering
    cnn = s01 / "weights/cnn_model_1"
    stage_ok(cnn, "stage1")
    assert json.loads((cnn / "stage1/fold0.json").read_text())["session"] == "s01a"
    assert "session" not in json.loads((cnn / "stage1/fold1.json").read_text())

    # 02-04: each reads the earlier stages where they are mounted and writes only its own stage
    s02, _, _ = kaggle.session("s02", ALL[2], {**base, "nb00": s00, "nb01": s01}, **TRAIN)
    s03, nb3, _ = kaggle.session("s03", ALL[3], {**base, "nb00": s00, "nb01": s01, "nb02": s02}, **TRAIN,
                                 threshold=0.0)  # every labelled clip passes: the cap decides
    s04, nb4, sp = kaggle.session("s04", ALL[4], {**base, "nb00": s00, "nb02": s02, "nb03": s03}, **TRAIN)
    installed_here(sp, "".join(outputs(nb4, "text")))
    for session, stage in ((s02, "stage2"), (s03, "stage3"), (s04, "stage4")):
        run = session / "weights/cnn_model_1"
        stage_ok(run, stage)
        assert sorted(p.name for p in run.iterdir() if p.is_dir()) == [stage]  # earlier stages read in place
        assert (run / "folds_curated.csv").read_bytes() == (cnn / "folds_curated.csv").read_bytes()
        assert not (session / "cache").exists()
    assert json.loads((s03 / "weights/cnn_model_1/stage3/config.json").read_text())["init_from"] == \
        "weights/cnn_model_1/stage2"
    sel3 = pd.read_csv(s03 / "weights/cnn_model_1/stage3/selected.csv")
    assert len(sel3) > 0 and list(sel3.columns) == ["fname", "labels", "score", "fold"]
    assert len(outputs(nb3, "png")) == 3 and len(outputs(nb4, "png")) == 3  # curves, per class, selection
    summary = json.loads((s04 / "weights/cnn_model_1/summary.json").read_text())  # the stages attached to 04
    assert [r["stage"] for r in summary["stages"]] == ["stage2", "stage3", "stage4", "ensemble(stage2+stage3+stage4)"]

    # 05: the VGG16 run in one session, ensembled with the CNN run read from 04's output
    s05, nb, _ = kaggle.session("s05", ALL[5], {**base, "nb00": s00, "nb04": s04},
                                **{**TRAIN, "epochs": {f"stage{i}": 1 for i in range(1, 5)}})
    vgg = s05 / "weights/vgg16_bn"
    for stage in ("stage1", "stage2", "stage3", "stage4"):
        stage_ok(vgg, stage)
    assert json.loads((vgg / "summary.json").read_text())["model"] == "vgg16_bn"
    assert any("cnn_model_1 + vgg16_bn stage ensembles" in t for t in outputs(nb, "text"))

    # the user bundles the stage ensemble's weights from the sessions' outputs (offline: the wheels of the
    # first dataset), then 06 runs with the data and that dataset only
    user = kaggle.base / "user"
    user.mkdir()
    wheel = next((kaggle.dataset / "wheels").glob("fatlib-*.whl"))
    bundle = kaggle.base / "fatlib-weights"
    subprocess.run([sys.executable, "-m", "fatlib", "kaggle-dataset", "--weights", "weights/cnn_model_1",
                    "weights/vgg16_bn", "--stages", "stage2", "stage3", "stage4", "--input-roots", str(s02), str(s03),
                    str(s04), str(s05), "--wheel", str(wheel), "--dep-wheels", str(kaggle.dataset / "wheels"),
                    "--out", str(bundle)], check=True, capture_output=True, cwd=user, env=kaggle.env)
    kaggle.freeze(bundle)
    s06, nb, sp = kaggle.session("s06", ALL[6], {DATA_MOUNT: kaggle.data, "fatlib": bundle})
    text = "".join(outputs(nb, "text"))
    installed_here(sp, text)
    assert str(Path(fatlib.__file__).parent) not in text  # never the checkout's fatlib
    groups = [f"'{s}/{m}'" for m in ("cnn_model_1", "vgg16_bn") for s in ("stage2", "stage3", "stage4")]
    assert "12 fold models" in text and all(g in text for g in groups)  # 2 runs x 3 stages x 2 folds
    assert re.search(r"\d+ dataset files verified", text)
    data = FatData.from_dir(kaggle.data)
    sub = pd.read_csv(s06 / "submission.csv")
    sample = pd.read_csv(kaggle.data / "sample_submission.csv")
    assert list(sub.columns) == ["fname", *data.vocab] and sub["fname"].tolist() == sample["fname"].tolist()
    assert sub[data.vocab].notna().all().all() and sub[data.vocab].to_numpy().min() >= 0
    assert sub[data.vocab].to_numpy().max() <= 1
    assert "test lwlrap" in text and (s06 / "submission_eval" / "evaluation.json").is_file()
