"""Write notebooks/*.ipynb (no outputs, no execution counts) from the cell texts below.

    .venv/bin/python scripts/make_notebooks.py          # (re)write the notebooks
    .venv/bin/python scripts/make_notebooks.py --check  # exit 1 when a committed notebook differs

Each notebook: a markdown cell (what the stage does, what it reads and writes, which notebook comes
before and after, what to attach on Kaggle), a papermill ``parameters`` cell whose defaults are the real
FSDKaggle2019 run on a Kaggle GPU, the setup cell (the same in every notebook: installs fatlib and its
missing dependencies offline from the fatlib dataset, finds the earlier sessions' outputs), then a few
calls into fatlib. Logic lives in fatlib (pipeline, report, plots, predict, kaggle, runs).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
STAGE_EPOCHS = {"stage1": 30, "stage2": 20, "stage3": 15, "stage4": 10}
EPOCHS_NOTE = (
    "**Epochs.** The 12th-place write-up gives no per-stage epoch counts. Stage 1 trains from scratch, so it "
    "gets the most (30); stages 2-4 start from the previous stage's fold weights and need fewer "
    f"({STAGE_EPOCHS['stage2']}, {STAGE_EPOCHS['stage3']}, {STAGE_EPOCHS['stage4']}). "
    "10 folds x batch 128, one-cycle schedule, SpecMix on every training batch."
)

KAGGLE_PARAMS = '''fatlib_dataset = "../input/fatlib"  # the fatlib Kaggle dataset (python -m fatlib kaggle-dataset): wheels/, weights/
input_roots = None  # earlier sessions' outputs, read-only (None: every folder under ../input/ holding weights/ or cache/)'''

# The same in every notebook, after the parameters: fatlib and the packages Kaggle's image lacks, offline.
SETUP = '''# Setup (the same in every notebook). On Kaggle fatlib is not installed: pip installs it from the fatlib dataset's
# wheels/ (--no-index: no internet needed); setup_notebook installs the dependencies Kaggle's image lacks the same
# way and finds the earlier sessions' outputs attached under ../input/
import importlib.util, subprocess, sys
fresh = importlib.util.find_spec("fatlib") is None
if fresh and subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                             "--find-links", f"{fatlib_dataset}/wheels", "fatlib"]).returncode:
    raise ModuleNotFoundError(f"fatlib is not installed and {fatlib_dataset}/wheels has no fatlib wheel: attach the "
                              "fatlib dataset (python -m fatlib kaggle-dataset) or set fatlib_dataset to where it is")
importlib.invalidate_caches()  # let this running kernel see what pip installed
from fatlib.report import setup_notebook
roots = setup_notebook(fatlib_dataset, input_roots, installed=["fatlib"] if fresh else [])'''

SESSIONS = ("**Kaggle sessions.** One session per notebook: its working folder is the only place written; earlier "
            "sessions' outputs are read where they are mounted (`../input/<name>/`, found by `input_roots=None`), "
            "never copied by hand. If a session ends before the stage finishes (save the version with *Always save "
            "output*), attach its output and run the notebook again: its finished folds are copied over and skipped.")

DATA_PARAMS = '''data_dir = None  # None: input/, else ../input/freesound-audio-tagging-2019 (fatlib.dataset.find_data_dir)
cache_dir = "cache"  # feature caches (float16 log-mels), shared by every notebook
preset = "cnn128"  # 12th-place features: 128 mels, hop 694 samples, 44.1 kHz
n_mels = 128
crop_frames = 128  # training crop width in frames (~2 s at hop 694)
cache_jobs = None  # processes building a cache (None: every core)'''

TRAIN_PARAMS = DATA_PARAMS + '''
weights_root = "weights"  # outputs in <weights_root>/<run>/<stage>/
run = "{run}"
model = "{model}"
width_mult = 1.0  # channel width multiplier of the model (1.0: the published widths)
n_folds = 10
batch_size = 128  # clips per training batch
lr = 1e-3  # peak learning rate of the one-cycle schedule
n_workers = 2  # DataLoader worker processes
auto_scale = True  # on a data set smaller than FSDKaggle2019: smaller batches, more epochs, narrower model
                   # (each session prints what it chose; False: exactly the numbers above)'''

SETTINGS = '''settings = dict(preset=preset, mel={"n_mels": n_mels, "crop_frames": crop_frames},
                model_kwargs={"width_mult": width_mult}, n_folds=n_folds, batch_size=batch_size, lr=lr,
                n_workers=n_workers, cache_jobs=cache_jobs, auto_scale=auto_scale)
data = report.load_data(data_dir)
print(f"{data.root}: {len(data.curated.fnames)} curated, {len(data.noisy.fnames)} noisy clips, {len(data.vocab)} classes")'''
NEEDS_NOISY = ('NEEDS_NOISY = "the warm-up (stage 1 trains on the noisy clips, every later stage starts from it; '
               'curated-only data: python -m fatlib run)"')

STAGES = {
    "stage1": dict(
        file="01_stage1_noisy.ipynb", title="Stage 1: from scratch on the noisy set",
        what="trains `model` from scratch on the noisy clips only, one model per fold; its out-of-fold "
             "per-clip lwlrap on noisy (lwlrap1) is half of stage 3's selection score.",
        reads="the data set and the feature caches (built here when 00 has not).",
        before="00_data_and_features.ipynb (optional: it builds the caches)", after="02_stage2_curated.ipynb",
        attach="the output of 00", next="02 and 03"),
    "stage2": dict(
        file="02_stage2_curated.ipynb", title="Stage 2: curated, from stage 1",
        what="trains on the curated clips, fold k starting from stage 1's fold k; its out-of-fold lwlrap on "
             "noisy (lwlrap2) is the other half of stage 3's selection score. Curated CV (12th place, "
             "CNN-model-1): 0.862.",
        reads="`<weights_root>/<run>/stage1/` (fold weights, noisy lwlrap), the caches.",
        before="01_stage1_noisy.ipynb", after="03_stage3_selected_noisy.ipynb",
        attach="the outputs of 00 and 01", next="03, 04 and 06"),
    "stage3": dict(
        file="03_stage3_selected_noisy.ipynb", title="Stage 3: curated + selected noisy, from stage 2",
        what="first keeps the noisy clips with sqrt(lwlrap1 * lwlrap2) >= `threshold` (0.5), at most "
             "`max_per_fold_label` (5) per fold and label, then trains on curated + kept, from stage 2. "
             "Curated CV (12th place): 0.879.",
        reads="`stage1/` and `stage2/` of the run (noisy lwlrap, fold weights), the caches.",
        before="02_stage2_curated.ipynb", after="04_stage4_selected_noisy.ipynb",
        attach="the outputs of 00, 01 and 02", next="04 and 06"),
    "stage4": dict(
        file="04_stage4_selected_noisy.ipynb", title="Stage 4: curated + noisy clips stage 3 gets right, from stage 3",
        what="first keeps the noisy clips with lwlrap3 >= `threshold` (1.0: every label ranked on top), no "
             "cap, then trains on curated + kept, from stage 3; then the stage ensemble (mean of stages 2-4, "
             "12th place: CV 0.877 for stage 4 alone, public LB 0.733 for the ensemble).",
        reads="`stage3/` of the run (and `stage2/` for the stage ensemble), the caches.",
        before="03_stage3_selected_noisy.ipynb", after="05_vgg16_warmup.ipynb (VGG16 variant) or "
        "06_inference_kernel.ipynb", attach="the outputs of 00, 02 and 03", next="05 (for the CNN + VGG16 "
        "ensemble) and 06"),
}
ERRORS_MD = ("## What it gets wrong (curated, out-of-fold)\n\nThe class pairs most often confused, then the "
             "worst clips of a class: listen to them, look at their log-mel, their true labels and the top-3 "
             "predicted. The classes are sorted by their out-of-fold lwlrap, worst first.")
SELECTION_PARAMS = {
    "stage3": 'threshold = 0.5  # sqrt(lwlrap1 * lwlrap2) to keep a noisy clip\n'
              'max_per_fold_label = 5  # clips kept per fold and label (None: no cap)',
    "stage4": 'threshold = 1.0  # lwlrap3 to keep a noisy clip (1.0: all its labels ranked first)\n'
              'max_per_fold_label = None',
}


def md(text: str):
    return nbformat.v4.new_markdown_cell(text.strip())


def code(text: str, *, tags=()):
    cell = nbformat.v4.new_code_cell(text.strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def params(text: str):
    return code("# Parameters (papermill -p NAME VALUE): the defaults are the real FSDKaggle2019 run on a Kaggle GPU\n"
                + KAGGLE_PARAMS + "\n" + text, tags=("parameters",))


def setup():
    return code(SETUP)


def notebook(cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=cells)
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives the same file
        cell.id = f"cell-{i:02d}"
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}}
    return nb


def header(title: str, what: str, reads: str, writes: str, before: str, after: str, *, attach: str,
           next: str) -> str:
    return (f"# {title}\n\n**What it does:** {what}\n\n**Reads:** {reads}\n\n**Writes:** {writes}\n\n"
            f"**Before:** {before}. **After:** {after}.\n\n**Attach (Kaggle, Add data):** the competition data, "
            f"the `fatlib` dataset (mounted as `../input/fatlib`){', ' + attach if attach else ''}. "
            f"**Then:** attach this notebook's output to {next}.\n\n{SESSIONS}")


STAGE_WRITES = ("`<weights_root>/<run>/{stage}/`: `fold{{k}}.safetensors`, `config.json`, `metrics.json`, "
                "`oof_curated.csv`, `oof_noisy.csv`, `noisy_lwlrap.csv`, `curve.png`{extra}; a rerun resumes "
                "at the first unfinished fold.")


def stage_notebook(stage: str) -> nbformat.NotebookNode:
    s = STAGES[stage]
    selects = stage in SELECTION_PARAMS
    extra = ", `selected.csv` (written first)" if selects else ""
    if stage == "stage4":
        extra += "; the stage ensemble: `<run>/summary.json`, `stages.csv`, `oof_ensemble_curated.csv`"
    writes = STAGE_WRITES.format(stage=stage, extra=extra)
    p = TRAIN_PARAMS.format(run="cnn_model_1", model="cnn_model_1") + f"\nepochs = {STAGE_EPOCHS[stage]}"
    if selects:
        p += "\n" + SELECTION_PARAMS[stage]
    call = (f'stage_dir = None\nif report.has_clips(data, "noisy", needed_for=NEEDS_NOISY):\n'
            f'    result = warmup_stage("{stage}", data, run=run, model=model, weights_root=weights_root, '
            f'cache_dir=cache_dir,\n                          epochs=epochs, '
            + ('selection={"threshold": threshold, "max_per_fold_label": max_per_fold_label}, ' if selects else "")
            + 'input_roots=roots.inputs, **settings)\n    stage_dir = result.stage_dir\n'
              '    print(f"CV lwlrap curated {result.cv_curated:.4f}, noisy {result.cv_noisy:.4f} -> {stage_dir}")')
    cells = [
        md(header(s["title"], s["what"], s["reads"], writes, s["before"], s["after"], attach=s["attach"],
                  next=s["next"]) + "\n\n" + EPOCHS_NOTE),
        params(p),
        setup(),
        code("%matplotlib inline\nfrom fatlib import report\n"
             "from fatlib.pipeline import " + ("stage_ensemble, " if stage == "stage4" else "") + "warmup_stage\n\n"
             + SETTINGS + "\n" + NEEDS_NOISY),
        md(f"## Train {stage} (K folds; finished folds are skipped)"),
        code(call),
        md("## Cross-validated lwlrap per fold (out-of-fold)"),
        code("if stage_dir:\n    display(report.stage_table(stage_dir))"),
        md("## Training curves (every fold)"),
        code("if stage_dir:\n    display(report.plot_stage(stage_dir))"),
        md("## Per-class lwlrap on curated (out-of-fold)"),
        code("if stage_dir:\n    display(report.plot_stage_per_class(stage_dir))"),
        md(ERRORS_MD),
        code("if stage_dir:\n    errors = report.explore_errors(stage_dir, data)"),
    ]
    if selects:
        cells += [md("## The noisy clips this stage added: per class and fold, and their scores"),
                  code("if stage_dir:\n    display(report.selection_counts(stage_dir, data.vocab))\n"
                       "    display(report.plot_selection(stage_dir, data.vocab))")]
    if stage == "stage4":
        cells += [md("## Stage ensemble: mean of stages 2-4 (out-of-fold, curated)"),
                  code("if stage_dir:\n    summary = stage_ensemble(data, run=run, weights_root=weights_root, "
                       "input_roots=roots.inputs)")]
    return notebook(cells)


def data_notebook() -> nbformat.NotebookNode:
    return notebook([
        md(header("Data and features", "loads FSDKaggle2019 (class counts, multi-label share), plays a few clips "
                  "beside their log-mel spectrograms, builds the feature caches that every training notebook reads, "
                  "previews one real training batch under every augmentation, lets you hear the waveform effects "
                  "before and after, and checks the torch log-mel (used at inference) against librosa's (used for "
                  "the caches).",
                  "the data set: `train_curated.csv`, `train_noisy.csv`, `sample_submission.csv` and the wav folders.",
                  "`<cache_dir>/`: the curated and noisy caches (memory-mapped float16 log-mels, named by a hash "
                  "of the feature settings and the file list, so a training notebook with the same settings reuses them).",
                  "nothing", "01_stage1_noisy.ipynb", attach="", next="01-05")),
        params(DATA_PARAMS + "\nn_examples = 3  # clips played and shown\npreview_batch = 16  # clips in the "
               "augmentation preview\nlisten_seconds = 8.0  # seconds of each clip played and shown"),
        setup(),
        code("%matplotlib inline\nfrom fatlib import explore, plots, report\nfrom fatlib.augment import SPECTROGRAM_AUGMENTS\n"
             "from fatlib.features import get_preset\n\n"
             "data = report.load_data(data_dir)\ncfg = get_preset(preset, n_mels=n_mels, crop_frames=crop_frames)\n"
             'print(f"{data.root}: {len(data.vocab)} classes; features: {report.feature_summary(cfg)}")\n'
             "report.dataset_overview(data)"),
        md("## Clips per class (most clips first)"),
        code("report.plot_class_counts(data)"),
        md("## Listen: a few curated clips, their waveform and log-mel (what the cache is made from)"),
        code("report.listen_examples(data, cfg, n=n_examples, max_seconds=listen_seconds)"),
        md("## Explore: any clip of any class, before and after an augmentation or a waveform effect\n\n"
           "Choose the split, the class and the clip, an augmentation, its strength and the seed. The figure shows "
           "the training crop's waveform, its log-mel before and after, and their difference (red: louder after, "
           "blue: quieter), titled with what the augmentation drew (mixup's lambda and partner clip, the cents of "
           "a pitch shift, ...); the players let you hear before and after (a spectrogram augmentation through "
           "Griffin-Lim). A saved notebook shows the first choice as a picture."),
        code('explorer = explore.explorer(data, cfg, augment="specmix", seed=0)'),
        md("## Feature caches (curated and noisy; a rerun with the same settings, or an attached earlier output "
           "holding them, does nothing)"),
        code('caches = report.build_caches(data, cfg, cache_dir=cache_dir, n_jobs=cache_jobs, input_roots=roots.inputs)\n'
             'caches'),
        md("## One training batch from the cache under every augmentation (training only, never at inference)\n\n"
           "Time in seconds, mel-spaced frequency in Hz; the colour bar is the model's input: the log-mel in dB "
           "standardised per clip (z-score, no unit), one scale for every panel."),
        code('x, y = report.training_batch(caches["curated"], data.curated.targets, cfg, batch_size=preview_batch)\n'
             "plots.plot_augmentations(x, y, SPECTROGRAM_AUGMENTS, data.vocab, n=4, cfg=cfg)"),
        md("## Waveform effects (3rd place: `fatlib.wave_augment`, `--wave-augment`): hear one clip before and after each"),
        code("report.listen_wave_effects(data.curated.paths()[0], cfg, seed=0)"),
        md("## LogMel (torch, inference on the GPU) vs librosa (the caches) on one clip"),
        code('comparison = report.compare_log_mel(data.curated.paths()[0], cfg)\n'
             'print(f"max |LogMel - librosa| = {comparison[\'max_abs_diff_db\']:.4f} dB")\n'
             "report.plot_log_mel_comparison(comparison, cfg)"),
    ])


def vgg_notebook() -> nbformat.NotebookNode:
    epochs = ", ".join(f'"{s}": {e}' for s, e in STAGE_EPOCHS.items())
    return notebook([
        md(header("VGG16-BN warm-up: stages 1-4 and the stage ensemble",
                  "the recipe's VGG16-BN warm-up (`vgg_stage1`..`vgg_stage4` of `fatlib/recipes/12th_place.toml`: "
                  "the same four stages and selections as notebooks 01-04 for `vgg16_bn`, the 13 conv layers of VGG16 "
                  "with batch norm, randomly initialised, CNN-model-1's head) as stage1..stage4 of its own run, then "
                  "the stage ensemble, and the ensemble with the CNN run when that run is there (12th place, Version 1: "
                  "public LB 0.738 with VGG16; `python -m fatlib run 12th_place` trains both halves and their "
                  "6-model ensemble in one run).",
                  "the data set and the caches; `<weights_root>/<cnn_run>/oof_ensemble_curated.csv` when present.",
                  "`<weights_root>/<run>/stage1..stage4/` (as 01-04), `summary.json`, `stages.csv`, "
                  "`oof_ensemble_curated.csv`; stages finished in an earlier session of this notebook are copied "
                  "over, so each session's output holds the whole run.",
                  "04_stage4_selected_noisy.ipynb (or 00 only: the runs are independent)", "06_inference_kernel.ipynb",
                  attach="the output of 00 (and of 04 for the CNN + VGG16 ensemble)", next="06")
           + "\n\n" + EPOCHS_NOTE),
        params(TRAIN_PARAMS.format(run="vgg16_bn", model="vgg16_bn") + "\nepochs = {" + epochs + "}  # per stage"
               + "\n" + SELECTION_PARAMS["stage3"].replace("threshold", "stage3_threshold", 1)
                   .replace("max_per_fold_label", "stage3_max_per_fold_label", 1)
               + "\n" + SELECTION_PARAMS["stage4"].replace("threshold", "stage4_threshold", 1)
                   .replace("max_per_fold_label", "stage4_max_per_fold_label", 1)
               + '\ncnn_run = "cnn_model_1"  # ensemble with this run when it exists (None: skip)'),
        setup(),
        code("%matplotlib inline\nfrom pathlib import Path\n\nfrom fatlib import report\n"
             "from fatlib.pipeline import STAGES, warmup\n\n" + SETTINGS + "\n" + NEEDS_NOISY),
        md("## Stages 1-4 and the stage ensemble (resumable)"),
        code("summary = None\nif report.has_clips(data, \"noisy\", needed_for=NEEDS_NOISY):\n"
             "    summary = warmup(data, run=run, model=model, weights_root=weights_root, cache_dir=cache_dir,\n"
             "                     selection={\"stage3\": {\"threshold\": stage3_threshold, \"max_per_fold_label\": stage3_max_per_fold_label},\n"
             "                                \"stage4\": {\"threshold\": stage4_threshold, \"max_per_fold_label\": stage4_max_per_fold_label}},\n"
             "                     stage_overrides={s: {\"epochs\": e} for s, e in epochs.items()}, input_roots=roots.inputs,\n"
             "                     **settings)"),
        md("## Each stage: CV table, training curves, per-class lwlrap, selection"),
        code("run_dir = Path(weights_root) / run\nfor stage in STAGES if summary else ():\n    display(report.stage_table(run_dir / stage))\n"
             "    display(report.plot_stage(run_dir / stage))\n    display(report.plot_stage_per_class(run_dir / stage))\n"
             '    if stage in ("stage3", "stage4"):\n        display(report.plot_selection(run_dir / stage, data.vocab))'),
        md(ERRORS_MD.replace("## What it gets wrong", "## What stage 4 gets wrong")),
        code('if summary:\n    errors = report.explore_errors(run_dir / "stage4", data)'),
        md("## Ensemble with the CNN run (both runs' stage ensembles, same folds; the CNN run is read where it is)"),
        code("cnn_oof = roots.find(Path(weights_root) / cnn_run / \"oof_ensemble_curated.csv\") if cnn_run else None\n"
             "if summary is None:\n    pass  # no warm-up run (said above)\nelif cnn_oof is not None:\n"
             '    cv = report.runs_ensemble_cv(data, [cnn_oof.parent, run_dir])\n'
             '    print(f"CV lwlrap, {cnn_run} + {run} stage ensembles: {cv:.4f}")\nelse:\n'
             '    print(f"no finished {cnn_run!r} run under {weights_root} nor in the inputs: run notebooks 01-04 "\n'
             '          "(and attach 04\'s output) for the CNN + VGG16 ensemble")'),
    ])


def kernel_notebook() -> nbformat.NotebookNode:
    return notebook([
        md(header("Inference kernel (offline Kaggle GPU kernel)",
                  "installs fatlib from the fatlib dataset's wheels when it is not importable (no internet in the "
                  "kernel), checks the dataset's files against its manifest (sha256), predicts the test clips with "
                  "every fold model of the chosen runs and stages, windowed TTA (a training-width window every 48 "
                  "frames, averaged), folds averaged per stage and model, then the mean over stages and models; "
                  "writes `submission.csv`. When test labels exist it also scores the submission.",
                  "`<fatlib_dataset>/wheels/`, `weights/<run>/<stage>/fold*.safetensors` from the fatlib dataset "
                  "(`python -m fatlib kaggle-dataset --weights ...`) or from the attached outputs of 02-05, the "
                  "test wav files.",
                  "`submission.csv` (and `submission_eval/` when test labels exist).",
                  "04_stage4_selected_noisy.ipynb / 05_vgg16_warmup.ipynb, then `python -m fatlib kaggle-dataset "
                  "--weights weights/cnn_model_1 weights/vgg16_bn --stages stage2 stage3 stage4 --input-roots "
                  "<their outputs> --out fatlib/` uploaded as the Kaggle dataset `fatlib`",
                  "nothing: submit `submission.csv`",
                  attach="(or, instead of weights in it, the outputs of 02, 03, 04 and 05); internet off",
                  next="nothing: submit it")),
        params("data_dir = None  # None: input/, else ../input/freesound-audio-tagging-2019\n"
               'runs = ["cnn_model_1", "vgg16_bn"]  # run folders: weights/<run>/ in the fatlib dataset or the inputs\n'
               'stages = ["stage2", "stage3", "stage4"]  # the stage ensemble\n'
               'tta = "windows"\nstep_frames = 48  # frames between TTA windows\n'
               "batch_size = 64  # crops per forward pass\n"
               'ensemble = "mean"  # across stages and models\nout = "submission.csv"'),
        setup(),
        code("%matplotlib inline\nimport time\n\nimport pandas as pd\n\nfrom fatlib import report\n"
             "from fatlib.kaggle import verify_dataset\nfrom fatlib.plots import plot_per_class\n"
             "from fatlib.predict import predict_test\nfrom fatlib.workspace import Roots\n\n"
             "manifest = verify_dataset(fatlib_dataset)  # every file against its sha256: a damaged one is named here\n"
             "data = report.load_data(data_dir)\n"
             'weights = Roots([fatlib_dataset, *roots.inputs]).find_weights([f"weights/{r}" for r in runs], stages=stages)\n'
             'print(f"{len(data.test.fnames)} test clips; {len(manifest[\'files\'])} dataset files verified; weights "\n'
             '      f"{[str(w) for w in weights]}")'),
        md("## Predict the test set and write the submission"),
        code("result = None\nif report.has_clips(data, \"test\", needed_for=\"the submission\"):\n"
             "    start = time.time()\n    result = predict_test(data, weights, tta=tta, step_frames=step_frames,\n"
             "                          batch_size=batch_size, ensemble=ensemble, out=out)\n"
             '    print(f"{result[\'n_models\']} fold models in groups {result[\'groups\']}: {time.time() - start:.0f} s -> {out}")\n'
             "    display(pd.read_csv(out).head())"),
        md("## Evaluation (only when the test labels are known)"),
        code('ev = result["evaluation"] if result else None\nif result and ev is None:\n'
             '    print("no test labels: submission written, not scored")\nelif ev:\n'
             '    print(f"test lwlrap {ev[\'lwlrap\']:.4f} on {ev[\'n_clips\']} clips; by usage: {ev.get(\'by_usage\')}")\n'
             '    per_class = ev["per_class"]\n'
             '    display(plot_per_class([v["lwlrap"] if v["lwlrap"] is not None else float("nan") for v in per_class.values()],\n'
             '                           list(per_class), weights=[v["weight"] for v in per_class.values()]))'),
    ])


def all_notebooks() -> dict[str, nbformat.NotebookNode]:
    nbs = {"00_data_and_features.ipynb": data_notebook()}
    nbs.update({STAGES[s]["file"]: stage_notebook(s) for s in STAGES})
    nbs["05_vgg16_warmup.ipynb"] = vgg_notebook()
    nbs["06_inference_kernel.ipynb"] = kernel_notebook()
    return nbs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare with notebooks/ instead of writing")
    p.add_argument("--out", type=Path, default=NOTEBOOK_DIR)
    args = p.parse_args(argv)
    stale = []
    for name, nb in all_notebooks().items():
        text = nbformat.writes(nb) + "\n"
        path = args.out / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".ipynb.tmp")
        tmp.write_text(text)
        tmp.replace(path)
        print(f"wrote {path}")
    if stale:
        print(f"out of date (run scripts/make_notebooks.py): {stale}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
