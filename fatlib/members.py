"""A recipe's ensemble members: ``[predict] stages`` lists every member in priority order; a run keeps the first
``ensemble_size`` of them (:meth:`fatlib.recipes.Recipe.ensemble_size`: given, else ``[small_data]``, else
``[predict]``, else all) and trains only the stages those need, through ``init_from``, selection ``sources`` and
the pseudo-label rounds (whose selections name the previous round). Used by :mod:`fatlib.engine` (the run) and
:mod:`fatlib.plan` (``--plan``). No torch here.
"""
from __future__ import annotations

from .recipes import Recipe
from .settings import source_text


def members(rec: Recipe, n_dataset: int | None = None, *, n_noisy: int | None = None) -> dict:
    """The ensemble of ``rec`` (expanded) on a data set of ``n_dataset`` clips: ``all`` (``[predict] stages``, else
    the last stage), ``size`` and its ``source`` (:meth:`fatlib.recipes.Recipe.ensemble_size`), ``kept`` (the first
    ``size`` members), ``needed`` (the stages they need, file order) and ``skipped`` (the recipe's other stages).

    On a data set without a noisy split (``n_noisy`` 0) the members that need the noisy set (:func:`needs_noisy`) are
    passed over (``passed_over``) and the next ones kept in their place, so that a default ensemble size still
    runs on curated-only data; when no member is left, the first ones are kept and the run refuses them with
    its own message."""
    every = list(rec.predict.get("stages") or rec.stage_names()[-1:])
    size, source = rec.ensemble_size(n_dataset)
    passed_over = []
    if n_noisy == 0:
        passed_over = [m for m in every if any(needs_noisy(rec, s) for s in needed_stages(rec, [m]))]
        if len(passed_over) == len(every):
            passed_over = []
    usable = [m for m in every if m not in passed_over]
    kept = usable if size is None else usable[:size]
    needed = needed_stages(rec, kept)
    return {"all": every, "size": len(kept), "source": source, "kept": kept, "needed": needed,
            "skipped": [s for s in rec.stage_names() if s not in needed], "passed_over": passed_over}


def needs_noisy(rec: Recipe, stage: str) -> str | None:
    """What stage ``stage`` of ``rec`` (expanded) does with the noisy split ("trains on" it, or "selects clips of"
    it before training), else None: such a stage cannot run on a data set without one."""
    if rec.stage_fields(stage).get("train_on", rec.stage.get("train_on")) == "noisy":
        return "trains on"
    return "selects clips of" if stage in rec.selection else None


def needed_stages(rec: Recipe, kept) -> list[str]:
    """The stages of ``rec`` (expanded) that training ``kept`` takes, in file order: each kept stage and, through
    ``init_from``, selection ``sources`` and pseudo-label rounds (their sources), every stage it reads."""
    todo, need = list(kept), set()
    while todo:
        s = todo.pop()
        if s in need or s not in rec.stages:
            continue
        need.add(s)
        todo += stage_reads(rec, s)
    return [s for s in rec.stage_names() if s in need]


def stage_reads(rec: Recipe, stage: str) -> list[str]:
    """The earlier stages ``stage`` reads: its ``init_from`` and its selection's sources."""
    init = rec.stage_fields(stage).get("init_from")
    sources = list(rec.selection.get(stage, {}).get("sources", []))
    return list(dict.fromkeys(([init] if init and "/" not in str(init) else []) + sources))


def check_ensemble_sizes(recipe: Recipe) -> None:
    """Every ensemble size the recipe can run with (``[predict]``, ``[small_data]``, a given one) is a whole
    number from 1 to the number of ``[predict] stages``: a DataError naming where it was set and the fix."""
    from .setting_rules import check_ensemble_size

    n = len(recipe.predict.get("stages") or [None])
    where = {"predict": recipe.predict, "small_data": recipe.small_data}
    for table, values in where.items():
        if "ensemble_size" in values:
            check_ensemble_size(values["ensemble_size"], n_members=n, recipe=recipe.name,
                                source=f"{recipe.path} [{table}]")
    if recipe.ensemble_given is not None:
        value, source = recipe.ensemble_given
        check_ensemble_size(value, n_members=n, recipe=recipe.name, source=f"{source} (recipe {recipe.path.name})")


def ensemble_line(ens: dict) -> str:
    """One line saying which members a run keeps, where its ensemble size came from, and what it skips."""
    src = ens["source"]
    how = "ensemble_size not set: every member" if src.kind == "default" else \
        f"ensemble_size {ens['size']} <- {source_text(src)}"
    line = f"ensemble: {ens['size']} of {len(ens['all'])} members ({how}): {' + '.join(ens['kept'])}"
    if ens.get("passed_over"):
        line += (f"; passed over (they need the noisy set, which this data set lacks): "
                 f"{', '.join(ens['passed_over'])}")
    if ens["skipped"]:
        line += f"; stages not trained (no kept member needs them): {', '.join(ens['skipped'])}"
    return line
