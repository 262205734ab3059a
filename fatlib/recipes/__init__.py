"""Recipes: the published settings of each solution as a small TOML file (data, not code).

A recipe names the features, model, crop, augmentations, loss, schedule, folds, selection or
pseudo-labelling, TTA and ensemble of one write-up. Its tables:

- top level: ``name``, ``title``, ``pipeline`` ("single": the ``[stages.<name>]`` in file order, each
  after its selection if it has one; "pseudo_label": those stages, then rounds of pseudo-labelled noisy
  clips; "warmup", an older name of "single");
- ``[stage]``: :class:`fatlib.train.StageConfig` fields for every stage;
- ``[stages.<name>]``: fields for one stage on top of ``[stage]`` (e.g. its epochs);
- ``[selection.<name>]``: the selection before that stage: ``rule`` (``fatlib.selection.RULES``), ``sources``
  (the earlier stages whose outputs it reads) and the rule's parameters; the stage then trains on
  curated + the selected noisy clips;
- ``[pseudo]`` ("pseudo_label" recipes): ``from_stage``, ``rounds``, ``round_size``, ``max_rounds``,
  ``threshold``, ``init_from_previous`` (see ``fatlib.engine``);
- ``[predict]``: ``tta``, ``stages`` (the recipe's whole ensemble, in priority order), ``ensemble``,
  ``rescale``, ``step_frames``, ``ensemble_size`` (keep the first N of ``stages``; default: all);
- ``[small_data]``: StageConfig fields that replace ``[stage]``'s on a data set of fewer than
  ``fatlib.autoscale.SMALL_DATA_CLIPS`` clips (curated + noisy) when auto scaling is on, below
  ``--config``, the command-line options and ``--set`` (every command: one engine). The default
  recipe's: the model and features that learned best from a few hundred real clips (README, "Real audio").
  A value a ``[stages.<name>]`` table sets itself stands over ``[small_data]`` (a stage that names its own
  ``model``, e.g. the 12th place's VGG16-BN stages, keeps it). ``ensemble_size`` there: the ensemble size on
  such a data set.

The ensemble size (:meth:`Recipe.ensemble_size`): ``--ensemble-size`` / ``--set predict.ensemble_size=N`` /
a library call's argument, else ``[small_data] ensemble_size`` where ``[small_data]`` applies, else
``[predict] ensemble_size``, else every member. The engine trains only the stages the kept members need
(:func:`fatlib.members.needed_stages`).

The ``[stages.<name>]`` tables run in file order; ``init_from`` there may name an earlier stage. Values
given on top of the file (``--set``, options, a library call's arguments: :meth:`Recipe.give`) are used
as given: auto scaling fills only the others. ``python -m fatlib run RECIPE`` runs a whole recipe
(:mod:`fatlib.engine`); ``--set key=value`` changes a loaded recipe (:func:`apply_sets`).

``load_recipe(name_or_path)`` reads one of the files shipped here (``list_recipes()``) or any path;
command-line options and ``--config`` override its values. The command line's defaults are the
:data:`DEFAULT_RECIPE`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..setting_rules import check_recipe, check_recipe_layout, check_set

DEFAULT_RECIPE = "12th_place"
HERE = Path(__file__).resolve().parent
PIPELINES = ("single", "pseudo_label", "warmup")  # "warmup": an older name of "single"
TOP_KEYS = {"name", "title", "pipeline", "stage", "stages", "selection", "predict", "notes", "pseudo", "small_data"}
SELECTION_KEYS = {"rule", "sources", "threshold", "max_per_fold_label", "n_best", "max_per_class", "round_size",
                  "max_rounds", "round_index"}
PSEUDO_KEYS = {"from_stage", "rounds", "round_size", "max_rounds", "threshold", "init_from_previous"}
PREDICT_KEYS = {"tta", "stages", "ensemble", "rescale", "step_frames", "ensemble_size"}
# [small_data] keys that are not StageConfig fields: the run's, not a stage's
SMALL_DATA_RUN_KEYS = {"ensemble_size"}


def _toml():
    try:
        import tomllib  # Python >= 3.11
    except ModuleNotFoundError:  # Python 3.9/3.10 (e.g. an older Kaggle image): tomli, or pip's copy of it
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            from pip._vendor import tomli as tomllib
    return tomllib


def show_value(value) -> str:
    """A recipe value as the command line writes it (lists space-separated)."""
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def list_recipes() -> list[str]:
    """Names of the recipes shipped with fatlib."""
    return sorted(p.stem for p in HERE.glob("*.toml"))


@dataclass
class Recipe:
    name: str
    path: Path
    title: str = ""
    pipeline: str = "single"
    stage: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)
    predict: dict = field(default_factory=dict)
    pseudo: dict = field(default_factory=dict)
    small_data: dict = field(default_factory=dict)
    # StageConfig fields somebody gave on top of the file (--set, options, a library call's arguments):
    # scope ("" for every stage, else a stage name) -> {field: (value, where it was given)}
    given: dict = field(default_factory=dict)
    lines: dict = field(default_factory=dict)  # (table, key) -> line number in the file, for provenance
    ensemble_given: tuple | None = None  # (ensemble size, where it was given: "--ensemble-size", "--set ...")
    aliases: dict = field(default_factory=dict)  # table -> the file's table it was copied from (a renamed stage)

    def sources(self, stage: str | None = None, *, n_dataset: int | None = None, given: dict | None = None,
                values: dict | None = None) -> dict:
        """Where each StageConfig field of ``stage`` comes from (:class:`fatlib.settings.Source`): StageConfig's
        default, the recipe's ``[stage]`` / ``[stages.<stage>]`` (file and line), ``[small_data]``, a value given
        to the recipe (:meth:`give`), or ``given`` (field -> where: "--epochs", "--config c.json", ...), whose
        ``values`` decide, as in :meth:`stage_fields`, whether ``[small_data]`` applies."""
        from ..settings import Source, StageConfig

        out = {f: Source("default") for f in StageConfig.__dataclass_fields__}
        for table, own in (("stage", self.stage), (f"stages.{stage}", self.stages.get(stage, {}) if stage else {})):
            for k in own:
                out[k] = Source("recipe", self._where(table, k))
        if self.uses_small_data(stage, n_dataset, values):
            for k in self._small(stage):
                out[k] = Source("small_data", self._where("small_data", k))
        for k, where in {**self.given_fields(stage), **(given or {})}.items():
            if k in out:
                out[k] = Source.of_given(where)
        return out

    def _where(self, table: str, key: str) -> str:
        table = self.aliases.get(table, table)
        line = self.lines.get((table, key))
        return f"{self.path.name}:{line} [{table}]" if line else f"{self.path.name} [{table}]"

    def give(self, fields: dict, *, source: str, stage: str | None = None) -> Recipe:
        """Record ``fields`` as given (for ``stage``, or every stage) by ``source``; they go on top of the
        recipe's tables and ``[small_data]``, and auto scaling leaves them alone. Returns self."""
        scope = self.given.setdefault(stage or "", {})
        for k, v in fields.items():
            scope[k] = (v, source)
        return self

    def given_fields(self, stage: str | None = None) -> dict[str, str]:
        """The StageConfig fields of ``stage`` somebody gave, with where each was given."""
        return {k: src for k, (_, src) in self._given(stage).items()}

    def _given(self, stage: str | None) -> dict:
        return {**self.given.get("", {}), **(self.given.get(stage, {}) if stage else {})}

    def stage_fields(self, stage: str | None = None, *, n_dataset: int | None = None,
                     given: dict | None = None) -> dict[str, Any]:
        """StageConfig fields of ``stage``: ``[stage]`` with ``[stages.<stage>]`` on top, then
        ``[small_data]`` where :meth:`uses_small_data` says so, then the fields given to the recipe
        (:meth:`give`), then the ``given`` fields (options, --config)."""
        fields = self._own(stage)
        if self.uses_small_data(stage, n_dataset, given):
            fields.update(self._small(stage))
        return {**fields, **{k: v for k, (v, _) in self._given(stage).items()}, **(given or {})}

    def _own(self, stage: str | None) -> dict:
        return {**self.stage, **(self.stages.get(stage, {}) if stage else {})}

    def _small(self, stage: str | None) -> dict:
        """The StageConfig fields ``[small_data]`` replaces for ``stage``: its fields but ``ensemble_size``, less
        those ``[stages.<stage>]`` sets itself (a stage's own value, e.g. the VGG16-BN stages' model, stands)."""
        own = self.stages.get(stage, {}) if stage else {}
        return {k: v for k, v in self.small_data.items() if k not in SMALL_DATA_RUN_KEYS and k not in own}

    def give_ensemble_size(self, n, *, source: str) -> Recipe:
        """Record the ensemble size ``n`` as given by ``source`` ("--ensemble-size", "--set ...", "argument"):
        it wins over ``[small_data]`` and ``[predict]``. Returns self."""
        from ..setting_rules import check_ensemble_size

        self.ensemble_given = (check_ensemble_size(n, source=f"{source} (recipe {self.path.name})"), source)
        return self

    def ensemble_size(self, n_dataset: int | None = None, given: dict | None = None):
        """(the ensemble size, its :class:`fatlib.settings.Source`) on a data set of ``n_dataset`` clips: a given
        value, else ``[small_data] ensemble_size`` where ``[small_data]`` applies, else ``[predict] ensemble_size``,
        else (None, default): every member of ``[predict] stages``."""
        from ..settings import Source

        if self.ensemble_given is not None:
            n, where = self.ensemble_given
            return n, Source.of_given(where)
        if "ensemble_size" in self.small_data and self.uses_small_data(None, n_dataset, given):
            return self.small_data["ensemble_size"], Source("small_data", self._where("small_data", "ensemble_size"))
        if "ensemble_size" in self.predict:
            return self.predict["ensemble_size"], Source("recipe", self._where("predict", "ensemble_size"))
        return None, Source("default")

    def uses_small_data(self, stage: str | None, n_dataset: int | None, given: dict | None = None) -> bool:
        """Whether ``[small_data]`` replaces the stage's fields on a data set of ``n_dataset`` clips (None:
        unknown, no): under ``SMALL_DATA_CLIPS`` clips, with auto scaling on, and neither ``model`` nor
        ``preset`` given (a model of your choice keeps the recipe's features, and the other way round)."""
        from ..autoscale import SMALL_DATA_CLIPS

        given = {**{k: v for k, (v, _) in self._given(stage).items()}, **(given or {})}
        return (bool(self.small_data) and n_dataset is not None and n_dataset < SMALL_DATA_CLIPS
                and {**self._own(stage), **given}.get("auto_scale", True) is not False
                and not {"model", "preset"} & set(given))

    def small_data_note(self, stage: str | None, n_dataset: int | None, given: dict | None = None) -> str | None:
        """One line for the log saying what ``[small_data]`` changed (None when it does not apply)."""
        from ..autoscale import SMALL_DATA_CLIPS

        if not self.uses_small_data(stage, n_dataset, given) or not self._small(stage):
            return None
        what = ", ".join(f"{k} {show_value(v)}" for k, v in self._small(stage).items())
        return (f"small data set ({n_dataset} clips < {SMALL_DATA_CLIPS}): {what} (recipe {self.name}'s [small_data]; "
                "--model/--preset or --no-auto-scale for the recipe's own)")

    def stage_names(self) -> list[str]:
        return list(self.stages)


def resolve_recipe_path(name_or_path: str | os.PathLike) -> Path:
    text = str(name_or_path)
    if text in list_recipes():
        return HERE / f"{text}.toml"
    path = Path(text)
    if path.is_file():
        return path
    raise DataError(f"recipe {text!r}: neither a shipped recipe ({', '.join(list_recipes())}) nor a file; "
                    "pass one of those names or the path of a .toml recipe")


def _key_lines(text: str) -> dict:
    """(table, key) -> 1-based line of each ``key = value`` of a TOML text (top-level keys: table "")."""
    import re

    table, out = "", {}
    for i, line in enumerate(text.splitlines(), 1):
        head = re.match(r"^\s*\[([^\[\]]+)\]", line)
        if head:
            table = head.group(1).strip()
            continue
        key = re.match(r"^\s*([A-Za-z0-9_]+)\s*=", line)
        if key:
            out.setdefault((table, key.group(1)), i)
    return out


_PARSED: dict = {}  # (path, mtime, size) -> (raw TOML, key lines): each file is read and parsed once per process


def _parse(path: Path):
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
        if key not in _PARSED:
            text = path.read_text(encoding="utf-8")
            _PARSED[key] = (_toml().loads(text), _key_lines(text))
        raw, lines = _PARSED[key]
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: not a readable TOML recipe ({e}); fix the file or pick a shipped recipe") from e
    import copy

    return copy.deepcopy(raw), dict(lines)


def load_recipe(name_or_path: str | os.PathLike | Recipe = DEFAULT_RECIPE) -> Recipe:
    """Read and check a recipe (a shipped name or a path; a Recipe is returned as it is); problems are
    one DataError naming the file. A file is parsed once per process (again when it changes)."""
    from ..settings import StageConfig

    if isinstance(name_or_path, Recipe):
        return name_or_path
    path = resolve_recipe_path(name_or_path)
    raw, lines = _parse(path)
    check_recipe_layout(raw, source=str(path))  # tables where tables belong, before their keys are read
    problems = []
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        problems.append(f"unknown keys {unknown} (valid: {sorted(TOP_KEYS)})")
    def unknown(where: str, table: dict, valid, what: str) -> None:
        bad = sorted(set(table) - set(valid))
        if bad:
            problems.append(f"[{where}] has unknown {what} {bad}" + (f" (valid: {sorted(valid)})" if what == "keys" else ""))

    fields = set(StageConfig.__dataclass_fields__)
    tables = [("stage", raw.get("stage", {}))] + [(f"stages.{k}", v) for k, v in raw.get("stages", {}).items()]
    tables.append(("small_data", {k: v for k, v in raw.get("small_data", {}).items() if k not in SMALL_DATA_RUN_KEYS}))
    for where, table in tables:
        unknown(where, table, fields, "StageConfig fields")
    unknown("predict", raw.get("predict", {}), PREDICT_KEYS, "keys")
    for stage, table in raw.get("selection", {}).items():
        unknown(f"selection.{stage}", table, SELECTION_KEYS, "keys")
    unknown("pseudo", raw.get("pseudo", {}), PSEUDO_KEYS, "keys")
    pipeline = raw.get("pipeline", "single")
    if pipeline not in PIPELINES:
        problems.append(f"pipeline={pipeline!r} is not one of {PIPELINES}")
    pipeline = "single" if pipeline == "warmup" else pipeline
    if problems:
        raise DataError(f"{path}: " + "; ".join(problems))
    rec = Recipe(name=raw.get("name", path.stem), path=path, title=raw.get("title", ""), pipeline=pipeline,
                 stage=dict(raw.get("stage", {})), stages={k: dict(v) for k, v in raw.get("stages", {}).items()},
                 selection={k: dict(v) for k, v in raw.get("selection", {}).items()},
                 predict=dict(raw.get("predict", {})), pseudo=dict(raw.get("pseudo", {})),
                 small_data=dict(raw.get("small_data", {})), lines=lines)
    check_recipe(rec, stage_config=StageConfig)  # every value's type and range, names (fatlib.setting_rules)
    return rec


def _parse_value(text: str):
    """A --set value: JSON (numbers, true/false, null, lists, objects), else the plain string."""
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_sets(recipe: Recipe, sets) -> Recipe:
    """A copy of ``recipe`` with ``key=value`` changes (values JSON, else strings):

    - ``field=value``: a StageConfig field for every stage (it replaces the stages' own values);
    - ``field.key=value`` for the dict fields (``model_kwargs.width_mult=0.125``, ``mel.crop_frames=32``):
      one entry of the dict, for every stage;
    - ``stages.<stage>.field=value``, ``selection.<stage>.key=value``, ``predict.key=value``,
      ``pseudo.key=value``: one entry of that table.

    A bad key is one DataError naming it and the valid ones.
    """
    import copy

    from ..settings import StageConfig

    rec = copy.deepcopy(recipe)
    fields = set(StageConfig.__dataclass_fields__)
    tables = {"predict": (rec.predict, PREDICT_KEYS), "pseudo": (rec.pseudo, PSEUDO_KEYS)}
    for item in sets or ():
        key, sep, text = str(item).partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise DataError(f"--set {item!r}: write key=value, e.g. --set epochs=1 or --set model_kwargs.width_mult=0.125")
        value = _parse_value(text)
        check_set(parts, value, item=str(item))  # type and range of the value (fatlib.setting_rules)
        head = parts[0]
        if head == "predict" and parts[1:] == ["ensemble_size"]:
            rec.give_ensemble_size(value, source=f"--set {item}")
        elif head in tables and len(parts) == 2:
            table, valid = tables[head]
            if parts[1] not in valid:
                raise DataError(f"--set {item!r}: [{head}] has no key {parts[1]!r} (valid: {sorted(valid)})")
            table[parts[1]] = value
        elif head == "selection" and len(parts) == 3 and parts[2] in SELECTION_KEYS:
            rec.selection.setdefault(parts[1], {})[parts[2]] = value
        elif head == "stages" and len(parts) == 3 and parts[2] in fields:
            rec.give({parts[2]: value}, source=f"--set {item}", stage=parts[1])
        elif head in fields and len(parts) == 1:
            rec.give({head: value}, source=f"--set {item}")
            for scope in rec.given.values():  # a value for every stage replaces the stages' own
                if scope is not rec.given[""]:
                    scope.pop(head, None)
        elif head in ("model_kwargs", "mel") and len(parts) == 2:
            for table in [rec.stage, *rec.stages.values()]:
                if head in table or table is rec.stage:
                    table[head] = {**table.get(head, {}), parts[1]: value}
        else:
            raise DataError(f"--set {item!r}: unknown key {key!r}; use a StageConfig field ({', '.join(sorted(fields))}), "
                            "model_kwargs.<name>, mel.<name>, stages.<stage>.<field>, selection.<stage>.<key>, "
                            "predict.<key> or pseudo.<key>")
    return rec
