"""The end-to-end demo: ``python -m fatlib demo`` (what ``make demo`` runs).

Synthesises a tiny FSDKaggle2019-format data set, builds its feature caches, runs the 4-stage
warm-up pipeline (2 folds, few epochs, a narrow CNN-model-1), predicts the test set with windowed
TTA, writes ``submission.csv`` and a report (per-stage CV lwlrap, test lwlrap, training-curve and
per-class pictures). Every step is resumable: a rerun reuses what is already there.
"""
from __future__ import annotations

import time
from pathlib import Path

DEMO_DATA = dict(n_classes=10, n_curated=240, n_noisy=480, n_test=120, max_seconds=4.0)
DEMO_RECIPE = "demo"  # fatlib/recipes/demo.toml: the warm-up's plan with settings sized for 2 CPU cores


def run_demo(out="demo", *, size: str = "demo", seed: int = 0, progress: bool = True, **overrides) -> dict:
    """Run the whole pipeline on a synthetic data set under ``out``; returns the summary dict.

    The run is the recipe ``demo`` (``fatlib/recipes/demo.toml``) on the engine (:mod:`fatlib.engine`);
    ``overrides`` (StageConfig fields, e.g. ``epochs``) are given on top of it.
    """
    from .atomic import write_json
    from .dataset import FatData
    from .engine import run_recipe
    from .guards import check_replaceable
    from .pipeline import warmup_recipe
    from .recipes import load_recipe
    from .synth import SIZES, make_dataset
    from .workspace import Workspace

    out = Path(out)
    check_replaceable(out, marker="data/synth.json", what="demo folder (--out)",  # never a user's folder
                      doing="the demo will not write its data, weights and submission.csv into it")
    rec = load_recipe(DEMO_RECIPE)
    t0 = time.time()
    _say(f"[1/4] synthetic data set ({size}) -> {out / 'data'}", progress)
    make_dataset(out / "data", seed=seed, progress=progress, **(DEMO_DATA if size == "demo" else SIZES[size]))
    data = FatData.from_dir(out / "data")
    _say(f"      {len(data.curated.fnames)} curated, {len(data.noisy.fnames)} noisy, "
         f"{len(data.test.fnames)} test clips, {len(data.vocab)} classes", progress)

    _say("[2/4] warm-up pipeline: stage1 noisy -> stage2 curated -> stage3/4 curated + selected noisy, "
         "[3/4] test predictions: windowed TTA, ensemble of stages 2-4, [4/4] report", progress)
    rec = warmup_recipe(rec, overrides={"seed": seed, **overrides})
    summary = run_recipe(rec, data, run="demo", workspace=Workspace(out / "weights", out / "cache", (), progress),
                         out_dir=out)
    test = summary["test"]
    evaluation = None if test["lwlrap"] is None else {"lwlrap": test["lwlrap"], "by_usage": test["by_usage"],
                                                      "n_clips": test["n_clips"]}
    result = {"summary": summary, "evaluation": evaluation, "submission": test["submission"],
              "seconds": round(time.time() - t0, 1)}
    write_json(out / "report.json", result)
    _say(f"done in {result['seconds']:.0f} s: {out / 'report.md'}", progress)
    return result


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(msg, flush=True)
