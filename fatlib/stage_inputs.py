"""What every fold of a stage reads, made once per stage (:func:`prepare_inputs`): the feature caches, the
labels, the run's fold assignments and the selected noisy clips; and fold k's training split from them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError
from .folds import curated_folds, noisy_folds, read_selection
from .settings import StageConfig


@dataclass
class StageInputs:
    """Everything a fold needs, made once per stage."""

    cfg: StageConfig
    mel: Any
    vocab: list
    cur_cache: Any
    noisy_cache: Any
    cur_paths: list
    noisy_paths: list
    cur_y: np.ndarray
    noisy_y: np.ndarray
    cur_folds: np.ndarray
    noisy_folds: np.ndarray
    sel_rows: np.ndarray
    sel_y: np.ndarray
    sel_folds: np.ndarray


def train_parts(inp: StageInputs, k: int):
    """(source, rows, targets) parts of fold k's training split and the fnames for the record."""
    cache_mode = not inp.cfg.wave_augment
    cur_src = inp.cur_cache if cache_mode else inp.cur_paths
    noisy_src = inp.noisy_cache if cache_mode else inp.noisy_paths
    parts, cur_rows, noisy_rows = [], np.zeros(0, int), np.zeros(0, int)
    if inp.cfg.train_on == "noisy":
        noisy_rows = np.flatnonzero(inp.noisy_folds != k)
        parts.append((noisy_src, noisy_rows, inp.noisy_y[noisy_rows]))
    else:
        cur_rows = np.flatnonzero(inp.cur_folds != k)
        parts.append((cur_src, cur_rows, inp.cur_y[cur_rows]))
    if inp.cfg.train_on == "curated+selected":
        keep = inp.sel_folds != k
        noisy_rows = inp.sel_rows[keep]
        if len(noisy_rows):
            parts.append((noisy_src, noisy_rows, inp.sel_y[keep]))
    return parts, cur_rows, noisy_rows


def fold_train_clips(inp: StageInputs) -> int:
    """Training clips of an average fold (the pool minus one fold's share)."""
    k = inp.cfg.n_folds
    pool = len(inp.noisy_y) if inp.cfg.train_on == "noisy" else len(inp.cur_y) + len(inp.sel_rows)
    return max(1, round(pool * (k - 1) / k))


def prepare_inputs(cfg: StageConfig, data, run_dir: Path, cache_dir, progress: bool, roots) -> StageInputs:
    from .cache import FeatureCache

    mel = cfg.mel_config()
    if cfg.init_from:  # read where it is: the working folder or an earlier session's output (fatlib.workspace)
        init_dir = roots.find_stage(cfg.init_from)
        if init_dir is None:
            raise DataError(f"init_from={cfg.init_from!r}: no such stage folder; train that stage first or fix the path.")
        cfg = cfg.replace(init_from=str(init_dir))
    cur_folds = curated_folds(data, run_dir=run_dir, n_folds=cfg.n_folds, seed=cfg.folds_seed)
    nz_folds = noisy_folds(data, run_dir=run_dir, n_folds=cfg.n_folds, seed=cfg.folds_seed)
    jobs = dict(cache_dir=cache_dir, n_jobs=cfg.cache_jobs, progress=progress, input_roots=roots.inputs)
    cur_cache = FeatureCache.build(data.curated.paths(), mel, name="curated", **jobs)
    noisy_cache = FeatureCache.build(data.noisy.paths(), mel, name="noisy", **jobs) if len(data.noisy.fnames) else None
    sel_rows, sel_y, sel_folds = np.zeros(0, int), np.zeros((0, len(data.vocab)), np.float32), np.zeros(0, int)
    if cfg.selection_csv:
        sel_rows, sel_y, sel_folds = read_selection(cfg.selection_csv, vocab=data.vocab,
                                                    noisy_fnames=data.noisy.fnames)
        if np.any(sel_folds != nz_folds[sel_rows]):
            raise DataError(f"{cfg.selection_csv}: its fold column differs from {run_dir / 'folds_noisy.csv'}; "
                            "make the selection from this run's stages.")
    return StageInputs(cfg, mel, list(data.vocab), cur_cache, noisy_cache, data.curated.paths(), data.noisy.paths(),
                   data.curated.targets, data.noisy.targets, cur_folds, nz_folds, sel_rows, sel_y, sel_folds)
