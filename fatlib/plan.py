"""What a run will do, before it runs: ``python -m fatlib run RECIPE --plan`` and ``train-stage ... --plan``.

:func:`plan_run` resolves every stage of a recipe as the engine will (:func:`fatlib.engine.stage_config`,
:func:`fatlib.engine.stage_sources`, then :func:`fatlib.train.folds_for_data` and
:func:`fatlib.train.effective_config`, the auto scaling ``train_stage`` applies), without training, building a
cache or writing a file: each setting with where it came from (:class:`fatlib.settings.Source`: the recipe
file and line with its comment, the ``[small_data]`` table, auto scaling, an option, ``--set``, or StageConfig's
default, "not published: fatlib's choice"), the selections, the ensemble, the output folders and the work
(clips and optimizer steps per fold, folds, models). :func:`render_plan` writes it as text.

The data set's CSVs size the plan (:func:`data_size`; no audio is read); without a data set it is planned for
FSDKaggle2019's size and says so. A selected stage's noisy clips are known only after its selection: the plan
counts the most the rule can keep (``selected_at_most``) and says so.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError
from .settings import RUNTIME_FIELDS, SOURCE_LABELS, Source, StageConfig, source_text

# FSDKaggle2019 (Fonseca et al. 2019): the size the recipes' values are for
FSDKAGGLE2019 = {"n_curated": 4970, "n_noisy": 19815, "n_classes": 80}


@dataclass(frozen=True)
class DataSize:
    """The size of the data a plan is for (``assumed``: no data set was found; FSDKaggle2019's size)."""

    n_curated: int
    n_noisy: int
    n_classes: int
    n_test: int | None
    where: str
    assumed: bool = False

    @property
    def n_train_clips(self) -> int:
        return self.n_curated + self.n_noisy

    @classmethod
    def of(cls, data) -> DataSize:
        """The size of a loaded :class:`fatlib.dataset.FatData`."""
        return cls(len(data.curated.fnames), len(data.noisy.fnames), len(data.vocab), len(data.test.fnames), str(data.root))


def data_size(data_dir=None) -> DataSize:
    """The data set's size from its CSVs (no audio read): ``data_dir``, else ``input/``, else the Kaggle path; with
    none of them (and no ``data_dir`` given) FSDKaggle2019's size, ``assumed``. A ``data_dir`` that holds no
    data set is a DataError, as for a run."""
    from .dataset import FatData, find_data_dir

    if data_dir is None:
        from .dataset import KAGGLE_DATA_DIR, LOCAL_DATA_DIR

        try:
            find_data_dir(None)
        except DataError:
            return DataSize(**FSDKAGGLE2019, n_test=None, assumed=True,
                            where=f"no data set found in {LOCAL_DATA_DIR} or {KAGGLE_DATA_DIR} (give --data): planned "
                            "for FSDKaggle2019's size")
    return DataSize.of(FatData.from_dir(data_dir, check_files=False))


@dataclass
class StagePlan:
    name: str
    config: StageConfig  # the settings the stage trains with (after auto scaling)
    sources: dict  # field -> Source
    comments: dict  # field -> the comment on its recipe line ("" when none)
    n_train_per_fold: int
    steps_per_epoch: int
    folds: list  # fold indices trained
    out_dir: Path
    selection: dict | None = None  # the [selection.<stage>] table with "selected_at_most"
    chosen: str = ""  # auto scaling's line, as the stage log writes it
    note: str | None = None  # [small_data]'s line
    problem: str | None = None  # why the run would refuse this stage on this data set (checked before any work)

    @property
    def steps_per_fold(self) -> int:
        return self.steps_per_epoch * self.config.epochs


@dataclass
class RunPlan:
    recipe: str
    path: Path
    title: str
    pipeline: str
    data: DataSize
    run_dir: Path
    cache_dir: Path
    stages: list = field(default_factory=list)
    ensemble: dict | None = None  # stages (kept), members (all), size, source, skipped, method, rescale, tta, ...

    @property
    def n_models(self) -> int:
        return sum(len(s.folds) for s in self.stages)

    @property
    def n_steps(self) -> int:
        return sum(len(s.folds) * s.steps_per_fold for s in self.stages)


def selected_at_most(table: dict, size: DataSize, n_folds: int) -> int:
    """The most noisy clips the selection ``table`` (a ``[selection.<stage>]`` table) can keep on ``size``."""
    rule, n = table.get("rule"), size.n_noisy
    if rule == "stage3" and table.get("max_per_fold_label") is not None:
        n = min(n, int(table["max_per_fold_label"]) * n_folds * size.n_classes)
    elif rule == "logloss":
        if table.get("max_per_class") is not None:
            n = min(n, int(table["max_per_class"]) * size.n_classes)
        n = min(n, int(table.get("n_best", 5000)))
    elif rule == "pseudo" and int(table.get("round_index", 1)) <= int(table.get("max_rounds", 5)):
        n = min(n, int(table.get("round_index", 1)) * int(table.get("round_size", 1000)))  # later rounds: every clip
    return n


def _comments(path: Path, sources: dict) -> dict:
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    out = {}
    for f, src in sources.items():
        m = re.match(r"[^:\[]+:(\d+)", src.where) if src.kind in ("recipe", "small_data") else None
        line = lines[int(m.group(1)) - 1] if m and int(m.group(1)) <= len(lines) else ""
        out[f] = line.split("#", 1)[1].strip() if "#" in line else ""
    return out


def plan_stage(cfg: StageConfig, sources: dict, size: DataSize, *, run_dir, n_selected: int = 0, folds=None,
               selection: dict | None = None, note: str | None = None, recipe_path: Path | None = None) -> StagePlan:
    """One stage as :func:`fatlib.train.train_stage` will train it on ``size``: its folds
    (:func:`fatlib.train.folds_for_data`), then batch size, lr, epochs and width (:func:`fatlib.train.effective_config`)
    for the clips of an average fold (``n_selected`` selected noisy clips on top of curated), each field's source."""
    from .train import effective_config, folds_for_data, scaled_sources

    sources = dict(sources)
    given = {f: src.where for f, src in sources.items() if src.given}
    asked = cfg.validate()
    cfg = folds_for_data(asked, size, given)
    sources = scaled_sources(sources, asked, cfg, n_dataset=size.n_train_clips)
    k = cfg.n_folds
    pool = size.n_noisy if cfg.train_on == "noisy" else size.n_curated + (n_selected if cfg.selection_csv else 0)
    n_train = max(1, round(pool * (k - 1) / k))  # as fatlib.stage_inputs.fold_train_clips
    problem = None
    if pool < k:  # as fatlib.setting_rules.check_n_folds: the run stops before any work
        split = "noisy" if cfg.train_on == "noisy" else "curated"
        problem = (f"the run refuses this stage here: train_on={cfg.train_on!r} needs at least n_folds={k} clips, "
                   f"the data set has {pool} {split} clips")
    eff, chosen = effective_config(cfg, n_train=n_train, n_dataset=size.n_train_clips, given=given)
    sources = scaled_sources(sources, cfg, eff, n_train=n_train)
    steps = max(1, n_train // eff.batch_size)  # the last partial batch is dropped
    return StagePlan(cfg.name, eff, sources, _comments(recipe_path, sources) if recipe_path else {}, n_train, steps,
                     list(folds) if folds is not None else list(range(k)), Path(run_dir) / cfg.name,
                     selection=selection, chosen=chosen, note=note, problem=problem)


def plan_run(recipe, data=None, *, run: str | None = None, weights_root="weights", cache_dir="cache", sets=(),
             ensemble_size: int | None = None) -> RunPlan:
    """The plan of ``run_recipe(recipe, data, run=..., sets=..., ensemble_size=...)``; ``data``: a FatData, a
    :class:`DataSize`, a data folder, or None (:func:`data_size`'s default folders, else FSDKaggle2019's size). Only
    the stages the kept ensemble members need are planned (the others are named as skipped). Nothing is trained or
    written."""
    from .engine import _check, expand, stage_config, stage_sources
    from .guards import check_plain_name
    from .members import members, needs_noisy
    from .recipes import apply_sets, load_recipe

    size = data if isinstance(data, DataSize) else DataSize.of(data) if hasattr(data, "vocab") else data_size(data)
    rec = apply_sets(load_recipe(recipe), sets)
    if ensemble_size is not None:
        rec.give_ensemble_size(ensemble_size, source=f"run_recipe(ensemble_size={ensemble_size})")
    _check(rec)
    rec = expand(rec)
    run = check_plain_name(run or rec.name, what="run name (--run, else the recipe's name)", source=str(rec.path))
    run_dir = Path(weights_root) / run
    plan = RunPlan(rec.name, rec.path, rec.title, rec.pipeline, size, run_dir, Path(cache_dir))
    ens = members(rec, size.n_train_clips, n_noisy=size.n_noisy)
    for s in ens["needed"]:
        cfg = stage_config(rec, s, size, run_dir)
        table = rec.selection.get(s)
        selection = None if table is None else {**table, "selected_at_most": selected_at_most(table, size, cfg.n_folds)}
        plan.stages.append(plan_stage(cfg, stage_sources(rec, s, size), size, run_dir=run_dir, selection=selection,
                                      n_selected=selection["selected_at_most"] if selection else 0,
                                      note=rec.small_data_note(s, size.n_train_clips), recipe_path=rec.path))
        if size.n_noisy == 0 and needs_noisy(rec, s) == "selects clips of" and not plan.stages[-1].problem:
            plan.stages[-1].problem = ("the run refuses this stage here: it selects clips of the noisy split first, "
                                       "and the data set has 0 noisy clips")
    names = ens["kept"]
    by_name = {p.name: p for p in plan.stages}
    plan.ensemble = {"stages": names, "members": ens["all"], "size": ens["size"], "source": ens["source"],
                     "skipped": ens["skipped"], "passed_over": ens["passed_over"],
                     "method": rec.predict.get("ensemble", "mean"),
                     "rescale": bool(rec.predict.get("rescale", False)), "tta": rec.predict.get("tta", "windows"),
                     "step_frames": rec.predict.get("step_frames"),
                     "n_models": sum(by_name[n].config.n_folds for n in names),
                     "models": {n: by_name[n].config.model for n in names}}
    return plan


# -------------------------------------------------------------------------------------------- text
def _value(v) -> str:
    import json

    return json.dumps(v) if isinstance(v, (dict, list, str, bool)) or v is None else f"{v:g}" if isinstance(v, float) else str(v)


_source = source_text  # fatlib.settings: a value's source as --plan and the run log write it


def render_stage(sp: StagePlan) -> list[str]:
    c = sp.config
    start = f"from {c.init_from}" if c.init_from else "from scratch"
    lines = [f"stage {sp.name}: {c.model} on {c.train_on} ({start}) -> {sp.out_dir}/"]
    if sp.problem:
        lines.append(f"  NOT RUNNABLE: {sp.problem}")
    if sp.note:
        lines.append(f"  {sp.note}")
    if sp.selection:
        sel = {k: v for k, v in sp.selection.items() if k not in ("selected_at_most",)}
        lines.append(f"  selection first: rule {sel.pop('rule')} over {', '.join(sel.pop('sources'))} "
                     f"({', '.join(f'{k} {_value(v)}' for k, v in sel.items())}) -> {sp.out_dir}/selected.csv; "
                     f"at most {sp.selection['selected_at_most']:,} noisy clips (the count is known after the selection; "
                     "the work below is for that many)")
    lines.append(f"  work: {len(sp.folds)} of {c.n_folds} folds, {sp.n_train_per_fold:,} training clips per fold, "
                 f"batch {c.batch_size}: {sp.steps_per_epoch:,} steps per epoch x {c.epochs} epochs = "
                 f"{sp.steps_per_fold:,} optimizer steps per fold, {sp.steps_per_fold * len(sp.folds):,} in all; "
                 f"{len(sp.folds)} models")
    lines.append(f"  auto scaling: {sp.chosen}")
    lines.append("  settings (value  <- source):")
    defaults = []
    for f in StageConfig.__dataclass_fields__:
        if f == "name":
            continue
        src = sp.sources.get(f, Source("default"))
        if src.kind == "default":
            defaults.append(f"{f}={_value(getattr(c, f))}")
        else:
            lines.append(f"    {f} = {_value(getattr(c, f))}  <- {_source(src, sp.comments.get(f, ''))}")
    lines.append(f"    {SOURCE_LABELS['default']}: " + ", ".join(d for d in defaults if d.split("=")[0] not in RUNTIME_FIELDS))
    runtime = [d for d in defaults if d.split("=")[0] in RUNTIME_FIELDS]
    if runtime:
        lines.append("    runtime (this machine; not part of the recipe): " + ", ".join(runtime))
    return lines


def render_plan(plan: RunPlan) -> str:
    """The plan as text: the data, every stage (settings and sources, selection, work), the ensemble, the outputs."""
    d = plan.data
    test = "" if d.n_test is None else f", {d.n_test:,} test clips"
    lines = [f"plan of recipe {plan.recipe} ({plan.path}): {plan.title}", f"pipeline {plan.pipeline}; nothing is trained "
             "or written by --plan",
             f"data: {d.n_curated:,} curated + {d.n_noisy:,} noisy clips, {d.n_classes} classes{test} ({d.where})", ""]
    for i, sp in enumerate(plan.stages, 1):
        lines += [f"{i}. " + line if j == 0 else line for j, line in enumerate(render_stage(sp))] + [""]
    if plan.ensemble:
        e = plan.ensemble
        step = f" every {e['step_frames']} frames" if e["step_frames"] else ""
        src = e["source"]
        how = ("ensemble_size not set: every member" if src.kind == "default"
               else f"ensemble_size {e['size']} <- {_source(src, _comments(plan.path, {'e': src}).get('e', ''))}")
        lines += [f"ensemble members ([predict] stages, in priority order): {e['size']} of {len(e['members'])} kept "
                  f"({how})"]
        lines += [f"  {i}. {m}" + (f" ({e['models'][m]})" if m in e["models"] else
                                   "  -- passed over: needs the noisy set, which this data set lacks"
                                   if m in e.get("passed_over", ()) else "  -- not kept")
                  for i, m in enumerate(e["members"], 1)]
        if e["skipped"]:
            lines.append(f"stages skipped (no kept member needs them; nothing trained): {', '.join(e['skipped'])}")
        lines += [f"ensemble: {e['method']} of {' + '.join(e['stages'])} ({len(e['stages'])} model{'s' if len(e['stages']) > 1 else ''}, {e['n_models']} "
                  f"fold models{', each class rescaled to [0, 1]' if e['rescale'] else ''}), test clips by {e['tta']} "
                  f"TTA{step}",
                  f"outputs: {plan.run_dir}/ (a folder per stage, steps.json, stages.csv, oof_ensemble_curated.csv, "
                  f"summary.json, submission.csv, report.md); feature caches in {plan.cache_dir}/"]
    lines.append(f"work in all: {len(plan.stages)} stage(s), {plan.n_models} models, {plan.n_steps:,} optimizer steps")
    return "\n".join(lines) + "\n"
