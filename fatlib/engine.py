"""The engine: one recipe, run (or resumed) on one data set. ``python -m fatlib run RECIPE`` runs all of it;
``python -m fatlib warmup``, the demo and the notebooks run the same engine on the 12th-place recipe (or a
stage of it, :func:`run_stage`). A recipe file is the only description of a run (:mod:`fatlib.recipes`):

- its ``[stages.<name>]`` in file order; a stage with a ``[selection.<name>]`` table first writes
  ``<stage>/selected.csv`` with that rule (``fatlib.selection.run_rule``) from its ``sources`` and trains on
  curated + those clips; ``init_from`` naming an earlier stage starts fold k from that stage's fold k;
- "pseudo_label" recipes: ``[pseudo] rounds`` rounds right after ``[pseudo] from_stage``, each one more stage
  (``round<r>``) whose selection is round r of the 3rd-place rule on the previous stage's out-of-fold noisy
  predictions (:func:`expand`); the recipe's stages after ``from_stage`` come after the rounds, so they may read
  them (a ``[selection.<stage>]`` of rule "pseudo" with ``round_index`` r and ``sources`` the stage before round r
  recomputes round r's noisy subset for another model family; its round parameters are ``[pseudo]``'s);
- the ensemble: ``[predict] stages`` lists every member in priority order; the run keeps the first
  ``ensemble_size`` of them (:func:`members`: ``--ensemble-size``, ``[small_data]``, ``[predict]``, else all) and
  trains only the stages those need, through ``init_from``, selection ``sources`` and the pseudo-label rounds
  (:func:`needed_stages`);

then the out-of-fold ensemble of the kept members on curated (``stages.csv``, ``oof_ensemble_curated.csv``,
``summary.json``), the test predictions and ``submission.csv`` (when the data has a test split), and
``report.md``. Everything goes to ``<weights>/<run>/``; ``steps.json`` lists each step as it finishes. A rerun
resumes: finished folds are not trained again, selections are recomputed identically, a finished prediction
is kept. Launched as several processes (:mod:`fatlib.distrib`), every process trains; rank 0 alone writes the
run's files and returns the summary (the others return None).
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import distrib
from .atomic import write_csv, write_json, write_text
from .errors import DataError
from .guards import check_output_not_input, check_plain_name, data_inputs
from .members import check_ensemble_sizes, ensemble_line, members, needed_stages, needs_noisy, stage_reads
from .recipes import Recipe, apply_sets, load_recipe
from .settings import StageConfig
from .workspace import Roots, Workspace, stage_finished

PSEUDO_DEFAULTS = {"from_stage": None, "rounds": 6, "round_size": 1000, "max_rounds": 5, "threshold": 0.5,
                   "init_from_previous": False}
# the notebook that trains each stage of the 12th-place recipe (named when a later stage misses it)
NOTEBOOKS = {"stage1": "01_stage1_noisy.ipynb", "stage2": "02_stage2_curated.ipynb",
             "stage3": "03_stage3_selected_noisy.ipynb", "stage4": "04_stage4_selected_noisy.ipynb"}


def plan(recipe: Recipe, n_dataset: int | None = None, *, n_noisy: int | None = None) -> list[str]:
    """The steps the recipe names for a data set of ``n_dataset`` clips (None: unknown, no ``[small_data]``), in
    order (what ``steps.json`` holds once the run is finished): the stages the kept ensemble members need."""
    rec = expand(recipe)
    steps = []
    for s in needed_stages(rec, members(rec, n_dataset, n_noisy=n_noisy)["kept"]):
        steps += ([f"select {s}"] if s in rec.selection else []) + [f"train {s}"]
    return steps + ["ensemble", "predict", "report"]


def _pseudo(recipe: Recipe) -> dict:
    p = {**PSEUDO_DEFAULTS, **recipe.pseudo}
    if p["from_stage"] is None:
        names = recipe.stage_names()
        p["from_stage"] = names[-1] if names else None
    return p


ROUND_KEYS = ("round_size", "max_rounds", "threshold")  # a "pseudo" selection's parameters that [pseudo] gives


def expand(recipe: Recipe) -> Recipe:
    """``recipe`` with its pseudo-label rounds (a "pseudo_label" recipe) as stages of their own, right after
    ``[pseudo] from_stage`` (the recipe's later stages after them): stage ``round<r>`` selects round r of the
    3rd-place rule from the previous stage and trains on curated + it. The recipe's own "pseudo" selections get
    ``[pseudo]``'s round parameters where they set none."""
    if recipe.pipeline != "pseudo_label" or recipe.selection.get("round1", {}).get("rule") == "pseudo" \
            and "round1" in recipe.stages:
        return recipe
    rec = copy.deepcopy(recipe)
    p = _pseudo(rec)
    prev, rounds, selection = p["from_stage"], {}, {}
    for r in range(1, int(p["rounds"]) + 1):
        name = f"round{r}"
        rounds[name] = {"train_on": "curated", "init_from": prev if p["init_from_previous"] else None}
        selection[name] = {"rule": "pseudo", "sources": [prev], "round_index": r,
                           "round_size": int(p["round_size"]), "max_rounds": int(p["max_rounds"]),
                           "threshold": float(p["threshold"])}
        prev = name
    for table in rec.selection.values():
        if table.get("rule") == "pseudo":
            for k in ROUND_KEYS:
                table.setdefault(k, selection["round1"][k] if selection else PSEUDO_DEFAULTS[k])
    stages = {}
    for name, table in rec.stages.items():
        stages[name] = table
        if name == p["from_stage"]:
            stages.update(rounds)
    rec.stages = stages if p["from_stage"] in rec.stages else {**stages, **rounds}
    rec.selection.update(selection)
    return rec


def _check(recipe: Recipe) -> None:
    """Problems a run would meet late, found before any work: one DataError naming the recipe file."""
    from .setting_rules import check_recipe
    from .train import check_components

    check_recipe(recipe, stage_config=StageConfig, check_stage=check_components)  # every setting, before any work
    names = recipe.stage_names()
    problems = []
    if not names:
        problems.append("no [stages.<name>] table: a recipe runs its stages in file order")
    pseudo_ok = recipe.pipeline != "pseudo_label" or (_pseudo(recipe)["from_stage"] in names and isinstance(
        _pseudo(recipe)["rounds"], int) and _pseudo(recipe)["rounds"] >= 1)
    if pseudo_ok and recipe.pipeline == "pseudo_label":
        names = expand(recipe).stage_names()  # the rounds where they run: later stages may read them
    for s, table in recipe.selection.items():
        if s not in names:
            problems.append(f"[selection.{s}] names no stage")
        elif "rule" not in table or not table.get("sources"):
            problems.append(f"[selection.{s}] needs rule and sources")
        else:
            later = [src for src in table["sources"] if src not in names[:names.index(s)]]
            if later:
                problems.append(f"[selection.{s}] sources {later} are not earlier stages")
            if table["rule"] == "pseudo" and "round_index" not in table:
                problems.append(f"[selection.{s}] rule pseudo needs round_index (the round whose noisy subset it takes)")
    for s in names:
        init = recipe.stage_fields(s).get("init_from")
        if init and "/" not in str(init) and init not in names[:names.index(s)]:
            problems.append(f"[stages.{s}] init_from={init!r} is not an earlier stage")
    if recipe.pipeline == "pseudo_label":
        p = _pseudo(recipe)
        if p["from_stage"] not in names:
            problems.append(f"[pseudo] from_stage={p['from_stage']!r} is not a stage of the recipe")
        if not isinstance(p["rounds"], int) or p["rounds"] < 1:
            problems.append(f"[pseudo] rounds={p['rounds']!r}: use an integer >= 1")
    known = names
    listed = recipe.predict.get("stages", [])
    bad = [s for s in listed if s not in known]
    if bad:
        problems.append(f"[predict] stages {bad} are not stages this recipe trains ({known})")
    if len(set(listed)) != len(listed):
        problems.append(f"[predict] stages {listed} names a stage twice")
    if problems:
        raise DataError(f"{recipe.path}: " + "; ".join(problems) + "; fix the recipe or the --set options")
    check_ensemble_sizes(recipe)


def _check_data(rec: Recipe, data, run_dir: Path, stages=None) -> None:
    """Before the run folder is made: each stage's fold count (after auto scaling) fits every split, and no stage
    needs a noisy split the data set lacks (refused here, not after the stages before it have trained)."""
    from .setting_rules import check_n_folds

    for name in stages or rec.stage_names():
        use = needs_noisy(rec, name) if len(data.noisy.fnames) == 0 else None
        if use:
            raise DataError(f"{data.root}: stage {name!r} of recipe {rec.name} {use} the noisy split, and this data set "
                            "has none (train_noisy.csv missing or empty); add the noisy split, or run a recipe whose "
                            "ensemble members do not need it (`python -m fatlib run RECIPE --plan` shows each stage's "
                            "data).")
        check_n_folds(stage_config(rec, name, data, run_dir).n_folds, data, option="--set n_folds={n}")


class _Steps:
    """``steps.json`` of a run: the steps finished so far, in order (written by the main process only)."""

    def __init__(self, run_dir: Path, recipe: Recipe):
        self.path = run_dir / "steps.json"
        old = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.done = list(old.get("steps", []))
        self.recipe = recipe.name

    def __contains__(self, step: str) -> bool:
        return step in self.done

    def finish(self, step: str, note: str = "") -> None:
        if not distrib.is_main_process():
            return
        if step not in self.done:
            self.done.append(step)
        write_json(self.path, {"recipe": self.recipe, "steps": self.done})
        print(f"[run] {step} done{': ' + note if note else ''}", flush=True)


# ------------------------------------------------------------------------------------------- stages
def require_stages(run_dir, stages, *, needed_by: str, roots: Roots | None = None) -> dict[str, Path]:
    """The finished folder of each of ``stages`` of ``run_dir`` (in the working folder or an input root
    of ``roots``); a DataError naming the notebook/command to run when one is missing or unfinished."""
    run_dir, roots = Path(run_dir), roots or Roots()
    found = {}
    for prev in stages:
        found[prev] = roots.find_stage(run_dir / prev)
        if found[prev] is None or not stage_finished(found[prev]):
            where = f" (nor in the input roots {[str(r) for r in roots.inputs]})" if roots.inputs else ""
            notebook = (f"Run notebooks/{NOTEBOOKS[prev]} (05_vgg16_warmup.ipynb for the VGG16 run) or "
                        if prev in NOTEBOOKS else "Run notebooks/05_vgg16_warmup.ipynb or " if prev.startswith("vgg_stage")
                        else "Run ")
            raise DataError(
                f"{run_dir / prev}: stage {prev!r} of run {run_dir.name!r} is missing or unfinished{where}, and "
                f"{needed_by} needs it. {notebook}that stage with the same run, weights_root and settings first "
                f"(`python -m fatlib warmup --run {run_dir.name} --stage {prev}` for the warm-up; `python -m fatlib "
                "run RECIPE` runs every stage), or attach the session that ran it (input_roots / --input-roots)."
            )
    return found


def stage_config(rec: Recipe, stage: str, data, run_dir: Path) -> StageConfig:
    """The settings stage ``stage`` of ``rec`` trains with on ``data`` in ``run_dir`` (before auto scaling):
    the recipe's fields (``[small_data]`` on a small data set, the given fields on top), a selection's
    ``train_on``/``selection_csv``, ``init_from`` of an earlier stage as its folder, the folds for the data."""
    from .train import folds_for_data

    return folds_for_data(_asked_config(rec, stage, data, run_dir), data, rec.given_fields(stage))


def _asked_config(rec: Recipe, stage: str, data, run_dir: Path) -> StageConfig:
    fields = {**rec.stage_fields(stage, n_dataset=data.n_train_clips), "name": stage}
    if stage in rec.selection:
        fields.update(train_on="curated+selected", selection_csv=str(Path(run_dir) / stage / "selected.csv"))
    init = fields.get("init_from")
    if init and "/" not in str(init):  # an earlier stage of this run
        fields["init_from"] = str(Path(run_dir) / init)
    return StageConfig.from_dict(fields)


def stage_sources(rec: Recipe, stage: str, data) -> dict:
    """Where each setting of :func:`stage_config` comes from (:meth:`fatlib.recipes.Recipe.sources`; a
    selection's ``train_on``/``selection_csv`` from its ``[selection.<stage>]`` table; ``n_folds`` from auto
    scaling where it lowered the recipe's)."""
    from .settings import Source
    from .train import scaled_sources

    sources = rec.sources(stage, n_dataset=data.n_train_clips)
    if stage in rec.selection:
        for f in ("train_on", "selection_csv"):
            sources[f] = Source("recipe", rec._where(f"selection.{stage}", "rule"))
    if rec.selection.get(stage, {}).get("rule") == "pseudo" and (f"selection.{stage}", "rule") not in rec.lines:
        for f in ("train_on", "selection_csv"):  # a round of [pseudo] (expand): its table and lines say so
            sources[f] = Source("recipe", rec._where("pseudo", "rounds"))
        sources["init_from"] = Source("recipe", rec._where("pseudo", "init_from_previous"))
    asked = _asked_config(rec, stage, data, Path("."))
    return scaled_sources(sources, asked, stage_config(rec, stage, data, Path(".")), n_dataset=data.n_train_clips)


def write_selection(frame: pd.DataFrame, path: Path, *, n_folds: int) -> None:
    """Write ``selected.csv``; refuse to change it under folds already trained on the old one."""
    from .train import fold_done

    if path.exists() and any(fold_done(path.parent, k) for k in range(n_folds)):
        old = pd.read_csv(path, keep_default_na=False)
        keys = ["fname", "labels", "fold"]
        if not old[keys].astype(str).equals(frame[keys].astype(str)):
            raise DataError(f"{path}: folds of {path.parent.name} were trained on another selection (other "
                            "thresholds or earlier stages). Use the same settings, or delete the stage folder to retrain.")
    write_csv(path, frame)


def run_stage(rec: Recipe, stage: str, data, *, run: str, ws: Workspace, folds=None, cbs=(),
              steps: _Steps | None = None):
    """Run (or resume) stage ``stage`` of ``rec`` on ``data`` in run ``run`` of workspace ``ws``: first its selection (when the
    recipe has one: ``selected.csv``), then :func:`fatlib.train.train_stage`. The stages it reads must be
    finished (a DataError names the notebook or command otherwise). Returns the StageResult (None while
    folds are left, and on processes other than the main one)."""
    from .folds import noisy_folds
    from .selection import run_rule
    from .train import train_stage

    if stage not in rec.stage_names():
        raise DataError(f"unknown stage {stage!r} of recipe {rec.name} ({rec.path}); use one of {rec.stage_names()}.")
    run_dir, roots, progress = ws.run_dir(run), ws.roots, ws.progress
    found = require_stages(run_dir, stage_reads(rec, stage), needed_by=stage, roots=roots)
    cfg = stage_config(rec, stage, data, run_dir)
    table = rec.selection.get(stage)
    if table and distrib.is_main_process():  # one writer; the other processes of a job wait, then read
        if len(data.noisy.fnames) == 0:
            raise DataError(f"{data.root}: the recipe selects noisy clips before {stage!r}, but there is no noisy split")
        roots.adopt_stage(run_dir / stage)  # an earlier session's finished folds of this stage: resume after them
        nz_folds = noisy_folds(data, run_dir=run_dir, n_folds=cfg.n_folds, seed=cfg.folds_seed)
        params = {k: v for k, v in table.items() if k not in ("rule", "sources")}
        sel = run_rule(table["rule"], stage_dirs=[found[s] for s in table["sources"]], targets=data.noisy.targets,
                       folds=nz_folds, fnames=data.noisy.fnames, vocab=data.vocab, **params)
        path = Path(cfg.selection_csv)
        write_selection(sel.to_frame(data.noisy.fnames, data.vocab), path, n_folds=cfg.n_folds)
        if steps is not None:
            steps.finish(f"select {stage}", f"{len(sel)} of {len(data.noisy.fnames)} noisy clips by rule {table['rule']}")
        elif progress:
            print(f"{stage}: {len(sel)} of {len(data.noisy.fnames)} noisy clips selected -> {path}")
    distrib.barrier()
    res = train_stage(cfg, data, run_dir=run_dir, cache_dir=ws.cache, progress=progress, folds=folds, cbs=cbs,
                      input_roots=ws.input_roots, note=rec.small_data_note(stage, data.n_train_clips),
                      sources=stage_sources(rec, stage, data))
    if steps is not None and res is not None:
        steps.finish(f"train {stage}", f"CV lwlrap curated {res.cv_curated:.4f}")
    return res


# ----------------------------------------------------------------------------------------- ensemble
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


def _n_selected(stage_dir: Path) -> int:
    path = stage_dir / "selected.csv"
    return len(pd.read_csv(path, keep_default_na=False)) if path.exists() else 0


def write_ensemble(rec: Recipe, data, *, run: str, ws: Workspace, stages=None) -> dict:
    """The run's out-of-fold ensemble of ``stages`` (default: the recipe's ``[predict] stages``, else its
    last stage) on curated, combined as ``[predict] ensemble``/``rescale``: writes ``oof_ensemble_curated.csv``,
    ``stages.csv`` (one row per finished stage of the recipe, then the ensemble's) and ``summary.json``;
    returns the summary. Stages are read from the working folder or the workspace's input roots."""
    from .ensemble import combine
    from .metrics import lwlrap

    run_dir, roots = ws.run_dir(run), ws.roots
    names = rec.stage_names()
    stages = list(stages or members(rec, data.n_train_clips, n_noisy=len(data.noisy.fnames))["kept"])
    found = require_stages(run_dir, stages, needed_by="the stage ensemble", roots=roots)
    dirs = {s: roots.find_stage(run_dir / s) for s in names}
    listed = [s for s in names if dirs[s] is not None and stage_finished(dirs[s])]
    method, rescale = rec.predict.get("ensemble", "mean"), bool(rec.predict.get("rescale", False))
    ens = combine([stage_oof(found[s].parent, s, fnames=data.curated.fnames) for s in stages],
                  method=method, rescale=rescale)
    cv_ens = float(lwlrap(data.curated.targets, ens))
    write_csv(run_dir / "oof_ensemble_curated.csv",
              pd.concat([pd.DataFrame({"fname": data.curated.fnames}), pd.DataFrame(ens, columns=data.vocab)], axis=1))
    configs = {s: StageConfig.load(dirs[s] / "config.json") for s in listed}
    rows = []
    for s in listed:
        metrics = json.loads((dirs[s] / "metrics.json").read_text())
        rows.append({"stage": s, "model": configs[s].model, "train_on": configs[s].train_on,
                     "n_selected": _n_selected(dirs[s]), "cv_lwlrap_curated": float(metrics["cv_lwlrap_curated"]),
                     "cv_lwlrap_noisy": metrics["cv_lwlrap_noisy"]})
    rows.append({"stage": "ensemble(" + "+".join(stages) + ")", "model": "", "train_on": "", "n_selected": 0,
                 "cv_lwlrap_curated": cv_ens, "cv_lwlrap_noisy": None})
    write_csv(run_dir / "stages.csv", pd.DataFrame(rows))
    summary = {"run": run_dir.name, "recipe": rec.name, "title": rec.title, "pipeline": rec.pipeline,
               "model": configs[stages[0]].model if stages[0] in configs else "", "stages": rows,
               "ensemble_stages": stages, "ensemble": method, "rescale": rescale, "cv_lwlrap_ensemble": cv_ens,
               "n_noisy": len(data.noisy.fnames), "n_curated": len(data.curated.fnames),
               "stage_configs": {s: c.to_dict() for s, c in configs.items()}}
    write_json(run_dir / "summary.json", summary)
    if ws.progress:
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return summary


# ------------------------------------------------------------------------------------------- a run
def run_recipe(recipe, data, *, run: str | None = None, weights_root="weights", cache_dir="cache",
               sets=(), progress: bool = True, input_roots=(), predict: bool = True, report: bool = True,
               cbs=(), out_dir=None, workspace: Workspace | None = None, ensemble_size: int | None = None) -> dict | None:
    """Run (or resume) ``recipe`` (a name, a path or a Recipe) on ``data`` (a FatData) into
    ``weights_root/run`` (default run: the recipe's name); ``sets``: ``key=value`` changes
    (:func:`fatlib.recipes.apply_sets`). ``progress``: bars; a line per finished step is printed either
    way. ``workspace``: those four in one :class:`fatlib.workspace.Workspace` (it wins over them). ``predict``/``report``: the test predictions and ``report.md`` after the ensemble; ``out_dir``: where
    ``submission.csv`` (with its ``submission_eval/``) and ``report.md`` go (default: the run folder).
    ``ensemble_size``: keep the first N members of ``[predict] stages`` (given: wins over the recipe's; the run
    trains only the stages those members need). Returns the
    run's summary dict (also ``run_summary.json``); None on the processes other than the main one."""
    t0 = time.time()
    rec = apply_sets(load_recipe(recipe), sets)
    if ensemble_size is not None:
        rec.give_ensemble_size(ensemble_size, source=f"run_recipe(ensemble_size={ensemble_size})")
    _check(rec)
    rec = expand(rec)
    ws = workspace or Workspace(weights_root, cache_dir, input_roots, progress)
    run = check_plain_name(run or rec.name, what="run name (--run, else the recipe's name)", source=str(rec.path))
    run_dir = ws.run_dir(run)
    check_output_not_input(run_dir, inputs=data_inputs(data), what="run folder", folder=True, within=ws.input_roots)
    check_output_not_input(ws.cache, inputs=data_inputs(data), what="--cache-dir", folder=True)
    ens = members(rec, data.n_train_clips, n_noisy=len(data.noisy.fnames))
    _check_data(rec, data, run_dir, ens["needed"])
    main = distrib.is_main_process()
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "recipe.json", {
            "recipe": rec.name, "path": str(rec.path), "sets": list(sets), "pipeline": rec.pipeline,
            "stage": rec.stage, "stages": rec.stages, "selection": rec.selection, "pseudo": rec.pseudo,
            # [predict] as the run predicts (the Tagger's defaults): the kept members; every member under "members"
            "predict": {**rec.predict, "stages": ens["kept"]}, "members": ens["all"],
            "given": {k: {f: [v, src] for f, (v, src) in t.items()} for k, t in rec.given.items()},
            "ensemble_size": ens["size"], "ensemble_size_source": ens["source"].to_dict(), "kept": ens["kept"],
            "skipped_stages": ens["skipped"]})
    if main:
        print(f"[run] {ensemble_line(ens)}", flush=True)
    steps = _Steps(run_dir, rec)
    for s in ens["needed"]:  # each stage returns on every process only after its outputs are written
        res = run_stage(rec, s, data, run=run, ws=ws, cbs=cbs, steps=steps)
        if res is None and main:
            raise DataError(f"{run_dir / s}: not every fold finished; rerun to resume")
    summary = None
    if main:
        summary = write_ensemble(rec, data, run=run, ws=ws, stages=ens["kept"])
        steps.finish("ensemble", f"CV lwlrap {summary['cv_lwlrap_ensemble']:.4f} of {'+'.join(summary['ensemble_stages'])}")
        if predict:
            summary["test"] = _predict(rec, data, run_dir, summary["ensemble_stages"], steps, ws.progress,
                                       Path(out_dir or run_dir))
            steps.finish("predict", "no test split" if summary["test"] is None else str(summary["test"]["submission"]))
        summary["seconds"] = round(time.time() - t0, 1)
        write_json(run_dir / "run_summary.json", summary)
        if report:
            path = write_recipe_report(run_dir, rec, summary, steps.done + ["report"], out_dir=out_dir)
            steps.finish("report", str(path))
    distrib.barrier()
    return summary


def _predict(rec, data, run_dir: Path, stages, steps, progress, out_dir: Path) -> dict | None:
    from .predict import predict_test

    if len(data.test.fnames) == 0:
        return None
    out = out_dir / "submission.csv"
    done = run_dir / "test.json"
    tta = rec.predict.get("tta", "windows")
    if "predict" in steps and out.exists() and done.exists():  # finished before with the same stages and TTA
        old = json.loads(done.read_text())
        if old.get("stages") == list(stages) and old.get("tta") == tta and old.get("step_frames") == \
                rec.predict.get("step_frames") and old.get("submission") == str(out):
            return old
    kw = {"step_frames": rec.predict["step_frames"]} if rec.predict.get("step_frames") else {}
    res = predict_test(data, run_dir, stages=stages, tta=tta,
                       ensemble=rec.predict.get("ensemble", "mean"), rescale=bool(rec.predict.get("rescale", False)),
                       out=out, progress=progress, **kw)
    ev = res["evaluation"]
    test = {"submission": str(out), "tta": tta, "step_frames": rec.predict.get("step_frames"),
            "stages": list(stages), "n_models": res["n_models"], "n_clips": len(data.test.fnames),
            "groups": res["groups"], "lwlrap": None if ev is None else ev["lwlrap"],
            "by_usage": None if ev is None else ev.get("by_usage")}
    write_json(done, test)
    return test


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"


def write_recipe_report(run_dir: Path, rec: Recipe, summary: dict, steps, *, out_dir=None) -> Path:
    """``report.md`` of a run (the one report writer: ``run``, ``make demo``): its steps, each stage's CV lwlrap,
    the ensemble, the test score with its per-class picture, the training curves. Written into ``out_dir``
    (default: the run folder), its links relative to it."""
    import os

    out_dir = Path(out_dir or run_dir)
    rel = lambda p: Path(os.path.relpath(p, out_dir)).as_posix()  # noqa: E731
    lines = [f"# {rec.title or rec.name}", "", f"Recipe `{rec.path}` (pipeline {rec.pipeline}), run "
             f"`{summary['run']}`: {summary['n_curated']} curated and {summary['n_noisy']} noisy clips, "
             f"{summary.get('seconds', 0):.0f} s in this session.", "", "## Steps", ""]
    lines += [f"{i}. {s}" for i, s in enumerate(steps, 1)]
    lines += ["", "## Stages (out-of-fold, curated)", "",
              "| stage | model | trained on | noisy clips selected | CV lwlrap curated | CV lwlrap noisy |",
              "| --- | --- | --- | --- | --- | --- |"]
    stage_rows = [r for r in summary["stages"] if not r["stage"].startswith("ensemble(")]
    for r in stage_rows:
        lines.append(f"| {r['stage']} | {r['model']} | {r['train_on']} | {r['n_selected']} | "
                     f"{_fmt(r['cv_lwlrap_curated'])} | {_fmt(r['cv_lwlrap_noisy'])} |")
    lines += ["", f"Ensemble ({summary['ensemble']}{', per-class rescaled' if summary['rescale'] else ''}) of "
              f"{', '.join(summary['ensemble_stages'])}: CV lwlrap **{summary['cv_lwlrap_ensemble']:.4f}**", "",
              "## Test set", ""]
    test = summary.get("test")
    if test is None:
        lines.append("No test split: nothing predicted.")
    else:
        score = "not scored (no test labels)" if test["lwlrap"] is None else f"lwlrap **{test['lwlrap']:.4f}**"
        lines.append(f"`submission.csv` ({test['tta']} TTA, {test['n_models']} fold models): {score}")
        for split, v in sorted((test.get("by_usage") or {}).items()):
            lines.append(f"- {split}: {_fmt(v)}")
        per_class = Path(test["submission"]).parent / "submission_eval" / "per_class_lwlrap.png"
        if per_class.exists():
            lines += ["", f"![per-class lwlrap]({rel(per_class)})"]
    lines += ["", "## Training curves", ""] + [f"![{r['stage']}]({rel(Path(run_dir) / r['stage'] / 'curve.png')})"
                                               for r in stage_rows]
    return write_text(out_dir / "report.md", "\n".join(lines) + "\n")
