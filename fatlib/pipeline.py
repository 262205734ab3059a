"""The 12th-place warm-up (``REFERENCE.md``, "Training and the noisy set"), as the notebooks and
``python -m fatlib warmup`` call it. The plan itself is the recipe ``fatlib/recipes/12th_place.toml``
(stage 1 noisy; stage 2 curated from 1; stages 3 and 4 curated + their selections of noisy clips, each from
the stage before; the ensemble of stages 2-4), run by the engine (:mod:`fatlib.engine`). The recipe holds two
warm-ups, CNN-model-1's (``stage1``..``stage4``) and VGG16-BN's (``vgg_stage1``..``vgg_stage4``); a warm-up run
is one of them (:func:`warmup_half`: ``model="vgg16_bn"`` takes the VGG16-BN stages), in a run folder of its
own whose stages are named ``stage1``..``stage4`` either way (the notebooks' and the inference kernel's layout):

- ``warmup_stage``: one stage (3 and 4 first write their ``<stage>/selected.csv``), so each stage can
  live in its own notebook;
- ``stage_ensemble``: the ensemble, ``weights/<run>/summary.json``, ``stages.csv``, ``oof_ensemble_curated.csv``;
- ``warmup``: every stage and the ensemble, for any registered model (``cnn_model_1``; ``vgg16_bn`` for the
  VGG16 variant).

The values a caller passes (``model``, StageConfig fields, per-stage fields, selection parameters) go on top
of the recipe's and are used as given (auto scaling leaves them alone). Every stage is resumable.
"""
from __future__ import annotations

import copy

from .engine import require_stages, run_recipe, run_stage, stage_oof, write_ensemble  # noqa: F401
from .errors import DataError
from .recipes import DEFAULT_RECIPE, Recipe, load_recipe
from .stage_outputs import StageResult
from .workspace import Workspace

STAGES = ("stage1", "stage2", "stage3", "stage4")  # the 12th-place recipe's stages (notebooks 01-04)
ENSEMBLE_STAGES = ("stage2", "stage3", "stage4")
VGG_MODEL = "vgg16_bn"
VGG_STAGES = tuple(f"vgg_{s}" for s in STAGES)  # the recipe's VGG16-BN warm-up (notebook 05)


def warmup_half(recipe, model: str | None = None) -> Recipe:
    """The warm-up of ``recipe`` that ``model`` runs, as a recipe of its own with stages ``stage1``..``stage4``
    and the ensemble of stages 2-4: for ``model="vgg16_bn"`` the VGG16-BN stages (``vgg_stage1``..``vgg_stage4``
    and their selections, renamed; their values' provenance stays their own recipe lines) when the recipe has
    them, else the CNN-model-1 stages. The other stages, and ``ensemble_size`` (a warm-up's ensemble is its own
    stages 2-4), are left out."""
    rec = copy.deepcopy(load_recipe(recipe))
    names = VGG_STAGES if model == VGG_MODEL and set(VGG_STAGES) <= set(rec.stages) else STAGES
    if not set(names) <= set(rec.stages):
        return rec  # a recipe of another plan: as it is
    rename = dict(zip(names, STAGES))
    rec.stages = {rename[s]: {**t, **({"init_from": rename.get(t["init_from"], t["init_from"])} if t.get("init_from")
                                      else {})} for s, t in rec.stages.items() if s in rename}
    rec.selection = {rename[s]: {**t, "sources": [rename.get(x, x) for x in t.get("sources", [])]}
                     for s, t in rec.selection.items() if s in rename}
    rec.aliases = {f"{head}.{new}": rec.aliases.get(f"{head}.{old}", f"{head}.{old}")
                   for old, new in rename.items() for head in ("stages", "selection")}  # provenance: the file's lines
    members = [rename[s] for s in rec.predict.get("stages", []) if s in rename]
    rec.predict = {k: v for k, v in rec.predict.items() if k != "ensemble_size"}
    rec.predict["stages"] = members or list(ENSEMBLE_STAGES)
    rec.small_data = {k: v for k, v in rec.small_data.items() if k != "ensemble_size"}
    rec.ensemble_given = None
    return rec


PLANNED_FIELDS = ("name", "model", "train_on", "init_from", "selection_csv")  # set by the recipe, not by overrides


def warmup_recipe(recipe=DEFAULT_RECIPE, *, model: str | None = None, overrides: dict | None = None,
                  stage_overrides: dict | None = None, selection: dict | None = None,
                  sources: dict | None = None) -> Recipe:
    """A copy of ``recipe`` with the caller's values given on top: ``model`` and ``overrides`` for every
    stage, ``stage_overrides`` (stage -> fields) and ``selection`` (stage -> rule parameters) for one;
    ``sources``: where each field was given (default "argument"). The recipe's warm-up for ``model``
    (:func:`warmup_half`: VGG16-BN's stages for ``vgg16_bn``, else CNN-model-1's), as stages 1-4."""
    rec = warmup_half(recipe, model)
    overrides, stage_overrides, selection = dict(overrides or {}), dict(stage_overrides or {}), dict(selection or {})
    planned = sorted(set(overrides).union(*map(set, stage_overrides.values())) & set(PLANNED_FIELDS))
    if planned:
        raise DataError(f"warm-up: {planned} are set by the warm-up plan (recipe {rec.path}); pass the stage and "
                        "model instead (or use fatlib.train.train_stage for a custom stage).")
    unknown = sorted((set(stage_overrides) | set(selection)) - set(rec.stage_names()))
    if unknown:
        raise DataError(f"stage_overrides / selection: unknown stages {unknown}; use {', '.join(rec.stage_names())}.")
    no_rule = sorted(s for s in selection if s not in rec.selection)
    if no_rule:
        raise DataError(f"selection for {no_rule} given, but only {', '.join(rec.selection)} select.")
    sources = dict(sources or {})
    given = {**({"model": model} if model else {}), **overrides}
    for k, v in given.items():
        rec.give({k: v}, source=sources.get(k, "argument"))
    for stage, fields in stage_overrides.items():
        for k, v in fields.items():
            rec.give({k: v}, source=sources.get(k, "argument"), stage=stage)
    for stage, params in selection.items():
        rec.selection[stage] = {**rec.selection[stage], **params}
    return rec


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
    n_folds, preset, mel, model_kwargs, ...), used as given. Stages 3 and 4 first select noisy clips from
    the earlier stages' outputs and write ``<stage>/selected.csv``; the recipe's ``[selection.<stage>]``, then
    ``selection``, set the rule's parameters (``threshold``, ``max_per_fold_label``; published: 0.5
    and 5 for stage3, 1.0 and no cap for stage4). ``folds`` and ``cbs``: as in ``train_stage``.
    A DataError names the notebook to run first when a stage this one needs is missing.
    ``input_roots``: read-only outputs of earlier sessions (:class:`fatlib.workspace.Roots`): earlier stages
    and caches are read there, and this stage's finished folds are copied from there into ``weights_root``.
    ``sources`` says where each value was given (default "argument"; the command line passes its options' names).
    """
    rec = warmup_half(recipe, model)
    if stage not in rec.stage_names():
        raise DataError(f"unknown warm-up stage {stage!r}; use one of {tuple(rec.stage_names())}.")
    rec = warmup_recipe(rec, model=model, overrides=overrides, selection={stage: selection} if selection else None,
                        sources=sources)
    ws = Workspace(weights_root, cache_dir, input_roots, progress)
    return run_stage(rec, stage, data, run=run, ws=ws, folds=folds, cbs=cbs)


def stage_ensemble(data, *, run: str, weights_root="weights", stages=ENSEMBLE_STAGES, progress: bool = True,
                   input_roots=(), recipe=DEFAULT_RECIPE) -> dict:
    """The mean of the ``stages``' out-of-fold curated probabilities and its CV lwlrap.

    Writes ``oof_ensemble_curated.csv``, ``stages.csv`` (one row per finished stage + the ensemble) and
    ``summary.json`` into ``weights_root/run``; returns the summary dict. Stages are read from the
    working folder or ``input_roots`` (earlier sessions' outputs).
    """
    ws = Workspace(weights_root, input_roots=input_roots, progress=progress)
    return write_ensemble(warmup_half(recipe), data, run=run, ws=ws, stages=list(stages))


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
) -> dict | None:
    """Run (or resume) stages 1-4 and the stage ensemble; returns the summary dict.

    Settings come from the ``recipe`` (per stage), then ``model`` and ``overrides`` (StageConfig
    fields for every stage: epochs, lr, batch_size, n_folds, preset, mel, model_kwargs, augment, ...),
    then ``stage_overrides`` ("stage1".."stage4" -> fields of that stage), all used as given. ``selection``
    maps "stage3" / "stage4" to the selection parameters on top of the recipe's.
    ``input_roots``: earlier sessions' outputs (see :func:`warmup_stage`); a stage finished there is copied
    into ``weights_root`` (so this session's output holds the whole run) and not trained again.
    Launched as several processes (:mod:`fatlib.distrib`; ``fold_parallel=True`` to spread the folds),
    rank 0 writes every output and returns the summary; the other processes return None after it.
    """
    rec = warmup_recipe(recipe, model=model, overrides=overrides, stage_overrides=stage_overrides,
                        selection=selection, sources=sources)
    return run_recipe(rec, data, run=run, workspace=Workspace(weights_root, cache_dir, input_roots, progress),
                      predict=False, report=False, cbs=cbs)
