"""A finished stage's outputs: every fold's out-of-fold predictions gathered into ``oof_curated.csv`` /
``oof_noisy.csv``, the per-clip noisy lwlrap, ``metrics.json`` (CV, per fold, per class) and ``curve.png``."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import write_csv, write_json
from .stage_inputs import StageInputs


@dataclass
class StageResult:
    stage_dir: Path
    cv_curated: float
    cv_noisy: float
    fold_curated: list
    fold_noisy: list
    oof_curated: np.ndarray
    oof_noisy: np.ndarray


def finish_stage(inp: StageInputs, stage_dir: Path) -> StageResult:
    """Gather every fold's outputs into the stage's CSVs, metrics.json and curve.png. Without a noisy
    split the noisy outputs are not written and their metrics are null (strict JSON, no NaN)."""
    from .metrics import lwlrap, per_class_lwlrap, per_sample_lwlrap

    n_cls = len(inp.vocab)
    has_noisy = len(inp.noisy_y) > 0
    oof_c = np.full((len(inp.cur_y), n_cls), np.nan, np.float32)
    oof_n = np.full((len(inp.noisy_y), n_cls), np.nan, np.float32)
    fold_c, fold_n, histories = [], [], []
    for k in range(inp.cfg.n_folds):
        cv, nv = inp.cur_folds == k, inp.noisy_folds == k
        oof_c[cv] = np.load(stage_dir / f"fold{k}_oof_curated.npy")
        if nv.any():
            oof_n[nv] = np.load(stage_dir / f"fold{k}_oof_noisy.npy")
        fold_c.append(lwlrap(inp.cur_y[cv], oof_c[cv]))
        fold_n.append(lwlrap(inp.noisy_y[nv], oof_n[nv]) if nv.any() else None)
        histories.append(json.loads((stage_dir / f"fold{k}.json").read_text())["history"])
    cols = list(inp.vocab)
    cur_names = [p.name for p in inp.cur_paths]
    noisy_names = [p.name for p in inp.noisy_paths]
    write_csv(stage_dir / "oof_curated.csv", pd.concat([pd.DataFrame({"fname": cur_names}),
                                                        pd.DataFrame(oof_c, columns=cols)], axis=1))
    cv_n = None
    if has_noisy:
        write_csv(stage_dir / "oof_noisy.csv", pd.concat([pd.DataFrame({"fname": noisy_names}),
                                                          pd.DataFrame(oof_n, columns=cols)], axis=1))
        noisy_lw = per_sample_lwlrap(inp.noisy_y, oof_n)
        write_csv(stage_dir / "noisy_lwlrap.csv", pd.DataFrame({"fname": noisy_names, "lwlrap": noisy_lw}))
        cv_n = lwlrap(inp.noisy_y, oof_n)
    per_class, weights = per_class_lwlrap(inp.cur_y, oof_c)
    cv_c = lwlrap(inp.cur_y, oof_c)
    write_json(stage_dir / "metrics.json", {
        "stage": inp.cfg.name,
        "cv_lwlrap_curated": cv_c,
        "cv_lwlrap_noisy": cv_n,
        "fold_lwlrap_curated": fold_c,
        "fold_lwlrap_noisy": fold_n,
        "per_class_lwlrap_curated": dict(zip(cols, map(float, per_class))),
        "class_weight_curated": dict(zip(cols, map(float, weights))),
    })
    plot_curves(histories, stage_dir / "curve.png", title=inp.cfg.name)
    return StageResult(stage_dir, cv_c, cv_n, fold_c, fold_n, oof_c, oof_n)


def plot_curves(histories: list, path: Path, *, title: str) -> None:
    from .plots import plot_training_curve, save_figure

    fig = plot_training_curve(histories, title=title)
    save_figure(fig, path)
