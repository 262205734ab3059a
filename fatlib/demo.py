"""The end-to-end demo: ``python -m fatlib demo`` (what ``make demo`` runs).

Synthesises a tiny FSDKaggle2019-format data set, builds its feature caches, runs the 4-stage
warm-up pipeline (2 folds, few epochs, a narrow CNN-model-1), predicts the test set with windowed
TTA, writes ``submission.csv`` and a report (per-stage CV lwlrap, test lwlrap, training-curve and
per-class pictures). Every step is resumable: a rerun reuses what is already there.
"""
from __future__ import annotations

import time
from pathlib import Path

# Small enough for 2 CPU cores in a few minutes, given exactly (auto_scale off); the real settings are
# the recipe's (fatlib/recipes/12th_place.toml), scaled to the data set.
DEMO_DATA = dict(n_classes=10, n_curated=240, n_noisy=480, n_test=120, max_seconds=4.0)
DEMO_SETTINGS = dict(
    model="cnn_model_1",
    model_kwargs={"width_mult": 0.25},
    preset="cnn128",
    mel={"n_mels": 64, "crop_frames": 64},
    epochs=10,
    n_folds=2,
    batch_size=16,
    lr=3e-3,
    augment=["specmix"],
    auto_scale=False,
)


def run_demo(out="demo", *, size: str = "demo", seed: int = 0, progress: bool = True, **overrides) -> dict:
    """Run the whole pipeline on a synthetic data set under ``out``; returns the summary dict.

    ``overrides`` replace entries of DEMO_SETTINGS (StageConfig fields and ``model``).
    """
    from .data import FatData
    from .pipeline import warmup
    from .predict import predict_test
    from .synth import SIZES, make_dataset

    out = Path(out)
    settings = {**DEMO_SETTINGS, **overrides}
    t0 = time.time()
    _say(f"[1/4] synthetic data set ({size}) -> {out / 'data'}", progress)
    make_dataset(out / "data", seed=seed, progress=progress, **(DEMO_DATA if size == "demo" else SIZES[size]))
    data = FatData.from_dir(out / "data")
    _say(f"      {len(data.curated.fnames)} curated, {len(data.noisy.fnames)} noisy, "
         f"{len(data.test.fnames)} test clips, {len(data.vocab)} classes", progress)

    _say("[2/4] warm-up pipeline: stage1 noisy -> stage2 curated -> stage3/4 curated + selected noisy", progress)
    summary = warmup(data, run="demo", weights_root=out / "weights", cache_dir=out / "cache",
                     progress=progress, seed=seed, **settings)

    _say("[3/4] test predictions: windowed TTA, ensemble of stages 2-4", progress)
    pred = predict_test(data, out / "weights" / "demo", stages=["stage2", "stage3", "stage4"], tta="windows",
                        out=out / "submission.csv", progress=progress)

    _say("[4/4] report", progress)
    result = {"summary": summary, "evaluation": pred["evaluation"], "submission": str(pred["submission"]),
              "seconds": round(time.time() - t0, 1)}
    from .report import write_run_report

    report = write_run_report(out, result)
    _say(f"done in {result['seconds']:.0f} s: {report}", progress)
    return result


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(msg, flush=True)
