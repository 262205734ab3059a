"""``python -m fatlib run RECIPE``: a whole recipe end to end, resumable.

Steps, by the recipe's ``pipeline`` (:mod:`fatlib.recipes`):

- "warmup": the 12th-place stages 1-4 (:func:`fatlib.pipeline.warmup_stage`: stages 3 and 4 select
  noisy clips first) and the stage ensemble;
- "single": the ``[stages.<name>]`` in file order; a stage with a ``[selection.<name>]`` table first
  writes ``<stage>/selected.csv`` with that rule (``fatlib.select.run_rule``) from its ``sources``;
- "pseudo_label": the stages as in "single", then ``[pseudo] rounds`` rounds: round r selects with
  the 3rd-place rule (round r of ``select_pseudo_labels``) from the previous stage's out-of-fold noisy
  predictions and trains stage ``round<r>`` on curated + those clips;

then the out-of-fold ensemble of ``[predict] stages`` on curated (CV lwlrap), the test predictions and
``submission.csv`` (when the data has a test split), and ``report.md``. Everything goes to
``<weights>/<run>/``; ``steps.json`` lists each step as it finishes. A rerun resumes: finished folds are
not trained again, selections are recomputed identically, a finished prediction is kept.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .io import write_json, write_text
from .recipes import Recipe, apply_sets, load_recipe

PSEUDO_DEFAULTS = {"from_stage": None, "rounds": 6, "round_size": 1000, "max_rounds": 5, "threshold": 0.5,
                   "init_from_previous": False}


def plan(recipe: Recipe) -> list[str]:
    """The steps the recipe names, in order (what ``steps.json`` holds once the run is finished)."""
    steps = []
    if recipe.pipeline == "warmup":
        from .pipeline import PLAN, STAGES

        for s in STAGES:
            steps += ([f"select {s}"] if PLAN[s]["rule"] else []) + [f"train {s}"]
    else:
        for s in recipe.stage_names():
            steps += ([f"select {s}"] if s in recipe.selection else []) + [f"train {s}"]
        if recipe.pipeline == "pseudo_label":
            for r in range(1, int(_pseudo(recipe)["rounds"]) + 1):
                steps += [f"select round{r}", f"train round{r}"]
    return steps + ["ensemble", "predict", "report"]


def _pseudo(recipe: Recipe) -> dict:
    p = {**PSEUDO_DEFAULTS, **recipe.pseudo}
    if p["from_stage"] is None:
        names = recipe.stage_names()
        p["from_stage"] = names[-1] if names else None
    return p


def _check(recipe: Recipe) -> None:
    """Problems a run would meet late, found before any work: one DataError naming the recipe file."""
    names = recipe.stage_names()
    problems = []
    if recipe.pipeline != "warmup" and not names:
        problems.append("no [stages.<name>] table: a single or pseudo_label recipe runs its stages in file order")
    for s, table in recipe.selection.items():
        if recipe.pipeline == "warmup":
            continue
        if s not in names:
            problems.append(f"[selection.{s}] names no stage")
        elif "rule" not in table or not table.get("sources"):
            problems.append(f"[selection.{s}] needs rule and sources")
        else:
            later = [src for src in table["sources"] if src not in names[:names.index(s)]]
            if later:
                problems.append(f"[selection.{s}] sources {later} are not earlier stages")
    if recipe.pipeline == "pseudo_label":
        p = _pseudo(recipe)
        if p["from_stage"] not in names:
            problems.append(f"[pseudo] from_stage={p['from_stage']!r} is not a stage of the recipe")
        if not isinstance(p["rounds"], int) or p["rounds"] < 1:
            problems.append(f"[pseudo] rounds={p['rounds']!r}: use an integer >= 1")
    known = names + ([f"round{r}" for r in range(1, int(_pseudo(recipe)["rounds"]) + 1)]
                     if recipe.pipeline == "pseudo_label" else [])
    if recipe.pipeline == "warmup":
        from .pipeline import STAGES

        known = list(STAGES)
    bad = [s for s in recipe.predict.get("stages", []) if s not in known]
    if bad:
        problems.append(f"[predict] stages {bad} are not stages this recipe trains ({known})")
    if problems:
        raise DataError(f"{recipe.path}: " + "; ".join(problems) + "; fix the recipe or the --set options")


class _Steps:
    """``steps.json`` of a run: the steps finished so far, in order."""

    def __init__(self, run_dir: Path, recipe: Recipe):
        self.path = run_dir / "steps.json"
        old = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.done = list(old.get("steps", []))
        self.recipe = recipe.name

    def __contains__(self, step: str) -> bool:
        return step in self.done

    def finish(self, step: str, note: str = "") -> None:
        if step not in self.done:
            self.done.append(step)
        write_json(self.path, {"recipe": self.recipe, "steps": self.done})
        print(f"[run] {step} done{': ' + note if note else ''}", flush=True)


def run_recipe(recipe, data, *, run: str | None = None, weights_root="weights", cache_dir="cache",
               sets=(), progress: bool = True, input_roots=()) -> dict:
    """Run (or resume) ``recipe`` (a name, a path or a Recipe) on ``data`` (a FatData) into
    ``weights_root/run`` (default run: the recipe's name); ``sets``: ``key=value`` changes
    (:func:`fatlib.recipes.apply_sets`). ``progress``: bars; a line per finished step is printed either
    way. Returns the run's summary dict (also ``run_summary.json``)."""
    t0 = time.time()
    rec = apply_sets(load_recipe(recipe), sets)
    _check(rec)
    run = run or rec.name
    run_dir = Path(weights_root) / run
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "recipe.json", {"recipe": rec.name, "path": str(rec.path), "sets": list(sets),
                                         "pipeline": rec.pipeline, "stage": rec.stage, "stages": rec.stages,
                                         "selection": rec.selection, "pseudo": rec.pseudo, "predict": rec.predict})
    steps = _Steps(run_dir, rec)
    common = dict(data=data, run_dir=run_dir, cache_dir=cache_dir, progress=progress, input_roots=input_roots)
    if rec.pipeline == "warmup":
        trained = _run_warmup(rec, steps, **common)
    else:
        trained = _run_stages(rec, steps, **common)
        if rec.pipeline == "pseudo_label":
            trained += _run_pseudo(rec, steps, **common)
    ens_stages = list(rec.predict.get("stages") or trained[-1:])
    summary = _ensemble(rec, data, run_dir, ens_stages, trained)
    steps.finish("ensemble", f"CV lwlrap {summary['cv_lwlrap_ensemble']:.4f} of {'+'.join(ens_stages)}")
    summary["test"] = _predict(rec, data, run_dir, ens_stages, steps, progress)
    steps.finish("predict", "no test split" if summary["test"] is None else str(summary["test"]["submission"]))
    summary["seconds"] = round(time.time() - t0, 1)
    write_json(run_dir / "run_summary.json", summary)
    report = write_recipe_report(run_dir, rec, summary, steps.done + ["report"])
    steps.finish("report", str(report))
    return summary


def _run_warmup(rec, steps, *, data, run_dir, cache_dir, progress, input_roots) -> list[str]:
    from .pipeline import PLAN, PLANNED_FIELDS, STAGES, warmup_stage

    for s in STAGES:
        given = rec.given_fields(s)  # --set values: auto scaling leaves them as they are
        over = {k: rec.stage_fields(s)[k] for k in given if k not in PLANNED_FIELDS or k == "model"}
        res = warmup_stage(s, data, run=run_dir.name, recipe=rec, model=over.pop("model", None),
                           weights_root=run_dir.parent, cache_dir=cache_dir, progress=progress,
                           input_roots=input_roots, sources=given, **over)
        if PLAN[s]["rule"]:
            steps.finish(f"select {s}", f"{_n_rows(run_dir / s / 'selected.csv')} noisy clips")
        steps.finish(f"train {s}", _cv_note(res))
    return list(STAGES)


def _stage_config(rec: Recipe, name: str, run_dir: Path, **fields):
    from .settings import StageConfig

    base = {**rec.stage_fields(name), **fields, "name": name}
    if base.get("init_from") and "/" not in str(base["init_from"]):  # an earlier stage of this run
        base["init_from"] = str(run_dir / base["init_from"])
    return StageConfig.from_dict(base)


def _select(rule: str, sources, data, run_dir: Path, stage: str, n_folds: int, folds_seed: int, **params) -> Path:
    from .folds import noisy_folds
    from .pipeline import _write_selection
    from .select import run_rule

    if len(data.noisy.fnames) == 0:
        raise DataError(f"{data.root}: the recipe selects noisy clips before {stage!r}, but there is no noisy split")
    folds = noisy_folds(data, run_dir=run_dir, n_folds=n_folds, seed=folds_seed)
    sel = run_rule(rule, stage_dirs=[run_dir / s for s in sources], targets=data.noisy.targets, folds=folds,
                   fnames=data.noisy.fnames, vocab=data.vocab, **params)
    path = run_dir / stage / "selected.csv"
    _write_selection(sel.to_frame(data.noisy.fnames, data.vocab), path, n_folds=n_folds)
    return path


def _train(cfg, data, run_dir, cache_dir, progress, input_roots, given=None):
    from .train import train_stage

    res = train_stage(cfg, data, run_dir=run_dir, cache_dir=cache_dir, progress=progress, input_roots=input_roots,
                      given=given)
    if res is None:
        raise DataError(f"{run_dir / cfg.name}: not every fold finished (a distributed worker?); rerun to resume")
    return res


def _run_stages(rec, steps, *, data, run_dir, cache_dir, progress, input_roots) -> list[str]:
    names = rec.stage_names()
    for s in names:
        fields = {}
        table = rec.selection.get(s)
        cfg0 = _stage_config(rec, s, run_dir, **({"train_on": "curated", "selection_csv": None} if table else {}))
        if table:
            params = {k: v for k, v in table.items() if k not in ("rule", "sources")}
            path = _select(table["rule"], table["sources"], data, run_dir, s, cfg0.n_folds, cfg0.folds_seed, **params)
            steps.finish(f"select {s}", f"{_n_rows(path)} noisy clips by rule {table['rule']}")
            fields = {"train_on": "curated+selected", "selection_csv": str(path)}
        res = _train(_stage_config(rec, s, run_dir, **fields), data, run_dir, cache_dir, progress, input_roots,
                     rec.given_fields(s))
        steps.finish(f"train {s}", _cv_note(res))
    return names


def _run_pseudo(rec, steps, *, data, run_dir, cache_dir, progress, input_roots) -> list[str]:
    p = _pseudo(rec)
    prev, names = p["from_stage"], []
    for r in range(1, int(p["rounds"]) + 1):
        name = f"round{r}"
        base = _stage_config(rec, name, run_dir, train_on="curated", selection_csv=None, init_from=None)
        path = _select("pseudo", [prev], data, run_dir, name, base.n_folds, base.folds_seed, round_index=r,
                       round_size=int(p["round_size"]), max_rounds=int(p["max_rounds"]), threshold=float(p["threshold"]))
        kind = "relabelled" if r > int(p["max_rounds"]) else "agreeing"
        steps.finish(f"select {name}", f"{_n_rows(path)} {kind} noisy clips from {prev}")
        cfg = base.replace(train_on="curated+selected", selection_csv=str(path),
                           init_from=str(run_dir / prev) if p["init_from_previous"] else None)
        res = _train(cfg, data, run_dir, cache_dir, progress, input_roots, rec.given_fields(name))
        steps.finish(f"train {name}", _cv_note(res))
        prev = name
        names.append(name)
    return names


def _ensemble(rec, data, run_dir: Path, stages, trained) -> dict:
    from .pipeline import write_stage_tables

    method, rescale = rec.predict.get("ensemble", "mean"), bool(rec.predict.get("rescale", False))
    cv, rows = write_stage_tables(data, run_dir, ensemble=list(stages), listed=list(trained),
                                  dirs={s: run_dir / s for s in {*stages, *trained}}, method=method, rescale=rescale)
    rows = rows[:-1]
    return {"run": run_dir.name, "recipe": rec.name, "title": rec.title, "pipeline": rec.pipeline, "stages": rows,
            "ensemble_stages": list(stages), "ensemble": method, "rescale": rescale, "cv_lwlrap_ensemble": cv,
            "n_curated": len(data.curated.fnames), "n_noisy": len(data.noisy.fnames)}


def _predict(rec, data, run_dir: Path, stages, steps, progress) -> dict | None:
    from .predict import predict_test

    if len(data.test.fnames) == 0:
        return None
    out = run_dir / "submission.csv"
    done = run_dir / "test.json"
    tta = rec.predict.get("tta", "windows")
    if "predict" in steps and out.exists() and done.exists():  # finished before with the same stages and TTA
        old = json.loads(done.read_text())
        if old.get("stages") == list(stages) and old.get("tta") == tta and old.get("step_frames") == \
                rec.predict.get("step_frames"):
            return old
    kw = {"step_frames": rec.predict["step_frames"]} if rec.predict.get("step_frames") else {}
    res = predict_test(data, run_dir, stages=stages, tta=tta,
                       ensemble=rec.predict.get("ensemble", "mean"), rescale=bool(rec.predict.get("rescale", False)),
                       out=out, progress=progress, **kw)
    ev = res["evaluation"]
    test = {"submission": str(out), "tta": tta, "step_frames": rec.predict.get("step_frames"),
            "stages": list(stages), "n_models": res["n_models"],
            "groups": res["groups"], "lwlrap": None if ev is None else ev["lwlrap"],
            "by_usage": None if ev is None else ev.get("by_usage")}
    write_json(done, test)
    return test


def _n_rows(path: Path) -> int:
    return len(pd.read_csv(path, keep_default_na=False)) if Path(path).exists() else 0


def _cv_note(res) -> str:
    return "" if res is None else f"CV lwlrap curated {res.cv_curated:.4f}"


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"


def write_recipe_report(run_dir: Path, rec: Recipe, summary: dict, steps) -> Path:
    """``report.md`` of a recipe run: its steps, each stage's CV lwlrap, the ensemble and the test score."""
    lines = [f"# {rec.title or rec.name}", "", f"Recipe `{rec.path}` (pipeline {rec.pipeline}), run "
             f"`{summary['run']}`: {summary['n_curated']} curated and {summary['n_noisy']} noisy clips, "
             f"{summary.get('seconds', 0):.0f} s in this session.", "", "## Steps", ""]
    lines += [f"{i}. {s}" for i, s in enumerate(steps, 1)]
    lines += ["", "## Stages (out-of-fold, curated)", "",
              "| stage | model | trained on | noisy clips selected | CV lwlrap curated | CV lwlrap noisy |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in summary["stages"]:
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
    lines += ["", "## Training curves", ""] + [f"![{r['stage']}]({r['stage']}/curve.png)" for r in summary["stages"]]
    return write_text(run_dir / "report.md", "\n".join(lines) + "\n")
