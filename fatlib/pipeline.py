"""The 12th-place warm-up pipeline (``REFERENCE.md``, "Training and the noisy set"):

1. stage1: from scratch on noisy clips; out-of-fold per-clip lwlrap on noisy = lwlrap1
2. stage2: curated, initialised from stage1 (fold k from fold k); lwlrap2
3. keep noisy clips with sqrt(lwlrap1 * lwlrap2) >= 0.5, at most 5 per fold per label;
   stage3: curated + kept, from stage2; lwlrap3
4. keep noisy clips with lwlrap3 == 1; stage4: curated + kept, from stage3
5. ensemble of stages 2-4 (mean of out-of-fold probabilities on curated) and its CV lwlrap

``warmup_stage`` runs one stage (3 and 4 first write their ``<stage>/selected.csv``), so each stage can
live in its own notebook; ``stage_ensemble`` is step 5 and writes ``weights/<run>/summary.json``,
``stages.csv`` and ``oof_ensemble_curated.csv``. ``warmup`` is the loop over both, for any registered
model (``cnn_model_1``; ``vgg16_bn`` for the VGG16 variant). Every stage is resumable, so a rerun
continues where it stopped.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import distrib
from .errors import DataError
from .folds import noisy_folds
from .io import write_csv, write_json
from .recipes import DEFAULT_RECIPE
from .runs import Roots, stage_finished
from .settings import StageConfig
from .stage_outputs import StageResult

STAGES = ("stage1", "stage2", "stage3", "stage4")
ENSEMBLE_STAGES = ("stage2", "stage3", "stage4")
# what each stage trains on, which stage it starts from, and the selection it runs first
# (rule of fatlib.select.run_rule, the stages whose outputs it reads, its published parameters)
PLAN = {
    "stage1": dict(train_on="noisy", init_from=None, rule=None, sources=(), selection={}),
    "stage2": dict(train_on="curated", init_from="stage1", rule=None, sources=(), selection={}),
    "stage3": dict(train_on="curated+selected", init_from="stage2", rule="stage3", sources=("stage1", "stage2"),
                   selection={"threshold": 0.5, "max_per_fold_label": 5}),
    "stage4": dict(train_on="curated+selected", init_from="stage3", rule="stage4", sources=("stage3",),
                   selection={"threshold": 1.0, "max_per_fold_label": None}),
}  # the selection values are the rules' defaults; a recipe's [selection.<stage>] and the caller override them
NOTEBOOKS = {"stage1": "01_stage1_noisy.ipynb", "stage2": "02_stage2_curated.ipynb",
             "stage3": "03_stage3_selected_noisy.ipynb", "stage4": "04_stage4_selected_noisy.ipynb"}
PLANNED_FIELDS = ("name", "model", "train_on", "init_from", "selection_csv")  # set by the plan, not by overrides


def _stage_plan(stage: str) -> dict:
    if stage not in PLAN:
        raise DataError(f"unknown warm-up stage {stage!r}; use one of {STAGES}.")
    return PLAN[stage]


def require_stages(run_dir, stages, *, needed_by: str, roots: Roots | None = None) -> dict[str, Path]:
    """The finished folder of each of ``stages`` of ``run_dir`` (in the working folder or an input root
    of ``roots``); a DataError naming the notebook/command to run when one is missing or unfinished."""
    run_dir, roots = Path(run_dir), roots or Roots()
    found = {}
    for prev in stages:
        found[prev] = roots.find_stage(run_dir / prev)
        if found[prev] is None or not stage_finished(found[prev]):
            where = f" (nor in the input roots {[str(r) for r in roots.inputs]})" if roots.inputs else ""
            raise DataError(
                f"{run_dir / prev}: stage {prev!r} of run {run_dir.name!r} is missing or unfinished{where}, and "
                f"{needed_by} needs it. Run notebooks/{NOTEBOOKS[prev]} (05_vgg16_warmup.ipynb for the VGG16 run) "
                f"or fatlib.pipeline.warmup_stage({prev!r}, ...) with the same run, weights_root and settings "
                f"first (`python -m fatlib warmup --run {run_dir.name} --stage {prev}`; without --stage it runs every "
                "stage), or attach the session that ran it (input_roots / --input-roots)."
            )
    return found


def warmup_stage(
    stage: str,
    data,
    *,
    run: str,
    recipe=DEFAULT_RECIPE,
    model: str | None = None,
    weights_root="weights",
    cache_dir="cache",
    selection: dict | None = None,
    progress: bool = True,
    folds=None,
    cbs=(),
    input_roots=(),
    sources: dict | None = None,
    **overrides,
) -> StageResult | None:
    """Run (or resume) one warm-up stage ("stage1".."stage4") of ``weights_root/run`` on ``data``.

    Settings: the ``recipe`` (a name or path, :mod:`fatlib.recipes`; its ``[stage]`` and
    ``[stages.<stage>]``), then ``model`` and ``overrides`` (StageConfig fields: epochs, lr, batch_size,
    n_folds, preset, mel, model_kwargs, ...). Stages 3 and 4 first select noisy clips from the earlier
    stages' outputs and write ``<stage>/selected.csv``; the recipe's ``[selection.<stage>]``, then
    ``selection``, set the rule's parameters (``threshold``, ``max_per_fold_label``; published: 0.5
    and 5 for stage3, 1.0 and no cap for stage4). ``folds`` and ``cbs``: as in ``train_stage``.
    A DataError names the notebook to run first when a stage this one needs is missing.
    ``input_roots``: read-only outputs of earlier sessions (:class:`fatlib.runs.Roots`): earlier stages
    and caches are read there, and this stage's finished folds are copied from there into ``weights_root``.
    ``model`` and ``overrides`` are values somebody gave: auto scaling leaves them as they are; ``sources``
    says where each was given (default "argument"; the command line passes its options' names).
    """
    from .recipes import load_recipe
    from .select import run_rule
    from .train import folds_for_data, train_stage

    plan = _stage_plan(stage)
    planned = sorted(set(overrides) & set(PLANNED_FIELDS))
    if planned:
        raise DataError(f"warmup_stage({stage!r}): {planned} are set by the warm-up plan; pass the stage and model "
                        "instead (or use fatlib.train.train_stage for a custom stage).")
    run_dir = Path(weights_root) / run
    roots = Roots(input_roots)
    needs = list(dict.fromkeys([*([plan["init_from"]] if plan["init_from"] else []), *plan["sources"]]))
    found = require_stages(run_dir, sorted(needs), needed_by=stage, roots=roots)
    sel_path = run_dir / stage / "selected.csv" if plan["rule"] else None
    rec = load_recipe(recipe)
    given = {**({"model": model} if model else {}), **overrides}
    fields = {
        **rec.stage_fields(stage, n_dataset=data.n_train_clips, given=given),
        "name": stage, "train_on": plan["train_on"],
        "init_from": plan["init_from"] and str(run_dir / plan["init_from"]),
        "selection_csv": sel_path and str(sel_path),
    }
    cfg = StageConfig.from_dict(fields)
    sources = {k: (sources or {}).get(k, "argument") for k in given}
    cfg = folds_for_data(cfg, data, sources)
    if distrib.is_main_process():  # one writer; the other processes of a job wait, then read
        roots.adopt_stage(run_dir / stage)  # an earlier session's finished folds of this stage: resume after them
        if plan["rule"]:
            nz_folds = noisy_folds(data, run_dir=run_dir, n_folds=cfg.n_folds, seed=cfg.folds_seed)
            sel = run_rule(plan["rule"], stage_dirs=[found[s] for s in plan["sources"]], targets=data.noisy.targets,
                           folds=nz_folds, fnames=data.noisy.fnames, vocab=data.vocab,
                           **{**plan["selection"], **rec.selection.get(stage, {}), **(selection or {})})
            _write_selection(sel.to_frame(data.noisy.fnames, data.vocab), sel_path, n_folds=cfg.n_folds)
            if progress:
                print(f"{stage}: {len(sel)} of {len(data.noisy.fnames)} noisy clips selected -> {sel_path}")
    if selection and not plan["rule"]:
        raise DataError(f"warmup_stage({stage!r}): selection={selection} given, but only stage3 and stage4 select.")
    distrib.barrier()
    return train_stage(cfg, data, run_dir=run_dir, cache_dir=cache_dir, progress=progress, folds=folds, cbs=cbs,
                       input_roots=roots.inputs, note=rec.small_data_note(stage, data.n_train_clips, given),
                       given=sources)


def _write_selection(frame: pd.DataFrame, path: Path, *, n_folds: int) -> None:
    """Write ``selected.csv``; refuse to change it under folds already trained on the old one."""
    from .train import fold_done

    if path.exists() and any(fold_done(path.parent, k) for k in range(n_folds)):
        old = pd.read_csv(path, keep_default_na=False)
        keys = ["fname", "labels", "fold"]
        if not old[keys].astype(str).equals(frame[keys].astype(str)):
            raise DataError(f"{path}: folds of {path.parent.name} were trained on another selection (other "
                            "thresholds or earlier stages). Use the same settings, or delete the stage folder to retrain.")
    write_csv(path, frame)


def _n_selected(stage_dir: Path) -> int:
    path = stage_dir / "selected.csv"
    return len(pd.read_csv(path, keep_default_na=False)) if path.exists() else 0


def write_stage_tables(data, run_dir: Path, *, ensemble: list[str], listed: list[str], dirs: dict,
                       method: str = "mean", rescale: bool = False) -> tuple[float, list[dict]]:
    """Write ``oof_ensemble_curated.csv`` (the ``method`` combination of the ``ensemble`` stages' out-of-fold
    curated probabilities) and ``stages.csv`` (one row per ``listed`` stage, then the ensemble's) into
    ``run_dir``; ``dirs`` maps each stage to its folder. Returns (the ensemble's CV lwlrap, the rows).
    The one writer of both tables, for ``warmup`` and ``python -m fatlib run``."""
    from .ensemble import combine
    from .metrics import lwlrap

    ens = combine([stage_oof(Path(dirs[s]).parent, s, fnames=data.curated.fnames) for s in ensemble],
                  method=method, rescale=rescale)
    cv_ens = float(lwlrap(data.curated.targets, ens))
    write_csv(run_dir / "oof_ensemble_curated.csv",
              pd.concat([pd.DataFrame({"fname": data.curated.fnames}), pd.DataFrame(ens, columns=data.vocab)], axis=1))
    rows = []
    for s in listed:
        metrics = json.loads((Path(dirs[s]) / "metrics.json").read_text())
        cfg = StageConfig.load(Path(dirs[s]) / "config.json")
        rows.append({"stage": s, "model": cfg.model, "train_on": cfg.train_on, "n_selected": _n_selected(Path(dirs[s])),
                     "cv_lwlrap_curated": float(metrics["cv_lwlrap_curated"]),
                     "cv_lwlrap_noisy": metrics["cv_lwlrap_noisy"]})
    rows.append({"stage": "ensemble(" + "+".join(ensemble) + ")", "model": "", "train_on": "", "n_selected": 0,
                 "cv_lwlrap_curated": cv_ens, "cv_lwlrap_noisy": None})
    write_csv(run_dir / "stages.csv", pd.DataFrame(rows))
    return cv_ens, rows


def stage_ensemble(data, *, run: str, weights_root="weights", stages=ENSEMBLE_STAGES, progress: bool = True,
                   input_roots=()) -> dict:
    """Step 5: mean of the ``stages``' out-of-fold curated probabilities and its CV lwlrap.

    Writes ``oof_ensemble_curated.csv``, ``stages.csv`` (one row per finished stage + the ensemble) and
    ``summary.json`` into ``weights_root/run``; returns the summary dict. Stages are read from the
    working folder or ``input_roots`` (earlier sessions' outputs).
    """
    run_dir = Path(weights_root) / run
    stages = list(stages)
    roots = Roots(input_roots)
    found = require_stages(run_dir, stages, needed_by="the stage ensemble", roots=roots)
    dirs = {s: roots.find_stage(run_dir / s) for s in STAGES}
    done = [s for s in STAGES if dirs[s] is not None and stage_finished(dirs[s])]
    configs = {s: StageConfig.load(dirs[s] / "config.json") for s in done}
    cv_ens, rows = write_stage_tables(data, run_dir, ensemble=stages, listed=done, dirs={**dirs, **found})
    table = pd.DataFrame(rows)
    summary = {
        "run": run, "model": configs[stages[0]].model, "stages": rows, "ensemble_stages": stages,
        "cv_lwlrap_ensemble": cv_ens, "n_noisy": len(data.noisy.fnames), "n_curated": len(data.curated.fnames),
        "stage_configs": {s: c.to_dict() for s, c in configs.items()},
    }
    write_json(run_dir / "summary.json", summary)
    if progress:
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return summary


def warmup(
    data,
    *,
    run: str,
    recipe=DEFAULT_RECIPE,
    model: str | None = None,
    weights_root="weights",
    cache_dir="cache",
    selection: dict | None = None,
    stage_overrides: dict | None = None,
    progress: bool = True,
    cbs=(),
    input_roots=(),
    sources: dict | None = None,
    **overrides,
) -> dict:
    """Run (or resume) stages 1-4 and the stage ensemble; returns the summary dict.

    Settings come from the ``recipe`` (per stage), then ``model`` and ``overrides`` (StageConfig
    fields for every stage: epochs, lr, batch_size, n_folds, preset, mel, model_kwargs, augment, ...),
    then ``stage_overrides`` ("stage1".."stage4" -> fields of that stage). ``selection`` maps "stage3" /
    "stage4" to the selection parameters on top of the recipe's.
    ``input_roots``: earlier sessions' outputs (see :func:`warmup_stage`); a stage finished there is copied
    into ``weights_root`` (so this session's output holds the whole run) and not trained again.
    Launched as several processes (:mod:`fatlib.distrib`; ``fold_parallel=True`` to spread the folds),
    rank 0 writes every output and returns the summary; the other processes return None after it.
    """
    stage_overrides = dict(stage_overrides or {})
    selection = dict(selection or {})
    unknown = sorted((set(stage_overrides) | set(selection)) - set(STAGES))
    if unknown:
        raise DataError(f"stage_overrides / selection: unknown stages {unknown}; use stage1..stage4.")
    for stage in STAGES:  # each stage returns on every process only after its outputs are written
        warmup_stage(stage, data, run=run, recipe=recipe, model=model, weights_root=weights_root,
                     cache_dir=cache_dir, selection=selection.get(stage), progress=progress, cbs=cbs,
                     input_roots=input_roots, sources=sources,
                     **{**overrides, **stage_overrides.get(stage, {})})
    summary = None
    if distrib.is_main_process():
        summary = stage_ensemble(data, run=run, weights_root=weights_root, progress=progress, input_roots=input_roots)
    distrib.barrier()
    return summary


def stage_oof(run_dir, stage: str, *, fnames=None) -> np.ndarray:
    """A finished stage's out-of-fold curated probabilities (n_curated, n_classes); with ``fnames``,
    checked to be in that order."""
    path = Path(run_dir) / stage / "oof_curated.csv"
    if not path.exists():
        raise DataError(f"{path}: not found; train stage {stage!r} of this run first.")
    df = pd.read_csv(path)
    if fnames is not None and df["fname"].astype(str).tolist() != [str(f) for f in fnames]:
        raise DataError(f"{path}: its clips are not this data set's curated split; train the run on this data set.")
    return df.drop(columns=["fname"]).to_numpy(dtype=np.float32)
