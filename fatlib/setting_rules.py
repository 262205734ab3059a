"""Every setting type- and range-checked at the door, in one place.

:func:`check_settings` checks StageConfig fields (a whole config or a part of one: a recipe table, a
``--set``, a ``--config`` file); :func:`check_table` a recipe's ``[predict]``, ``[pseudo]`` or
``[selection.<stage>]`` table; :func:`check_recipe` a whole loaded recipe, every stage as it will
run, before any training. A bad value is one :class:`~fatlib.errors.DataError` line:
``<where it came from>: <setting> = <value> <what is wrong>; <the fix>``.

Only what is given is checked (a partial mapping is fine); unknown keys are the caller's business
(fatlib.recipes names them with the valid ones).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Mapping

from .errors import DataError

Rule = Callable[[Any], "str | None"]  # None: fine; else what the value should be


def _is_int(v) -> bool:  # numpy integers too (values computed by auto scaling)
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np_bool()))


def _is_num(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np_bool())) and math.isfinite(v)


def np_bool():
    import numpy as np

    return np.bool_


def integer(lo: int | None = None, *, optional: bool = False) -> Rule:
    def rule(v):
        if v is None and optional:
            return None
        if not _is_int(v) or (lo is not None and v < lo):
            return f"a whole number{f' >= {lo}' if lo is not None else ''}{' or none' if optional else ''}"
        return None
    return rule


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
           optional: bool = False) -> Rule:
    def rule(v):
        if v is None and optional:
            return None
        ok = _is_num(v) and (lo is None or (v > lo if lo_open else v >= lo)) and \
            (hi is None or (v < hi if hi_open else v <= hi))
        if ok:
            return None
        parts = []
        if lo is not None:
            parts.append(f"{'>' if lo_open else '>='} {lo}")
        if hi is not None:
            parts.append(f"{'<' if hi_open else '<='} {hi}")
        return f"a number {' and '.join(parts)}".rstrip() + (" or none" if optional else "")
    return rule


def one_of(choices_fn: Callable[[], tuple], *, optional: bool = False) -> Rule:
    def rule(v):
        choices = tuple(choices_fn())
        if (v is None and optional) or (isinstance(v, str) and v in choices):
            return None
        return f"one of {', '.join(map(str, choices))}"
    return rule


def text(*, optional: bool = False) -> Rule:
    return lambda v: None if (v is None and optional) or (isinstance(v, str) and v) else "a non-empty text" + (
        " or none" if optional else "")


def boolean(v) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def table(v) -> str | None:
    return None if isinstance(v, dict) else "a table of name = value entries (TOML {...}, JSON {...})"


def names(v) -> str | None:
    from .guards import check_plain_name

    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        return "a list of names, e.g. [\"stage1\"]"
    for x in v:
        try:
            check_plain_name(x, what="name")
        except DataError:
            return "a list of plain names (no '/', not '.' or '..')"
    return None


def plain_name(*, optional: bool = False) -> Rule:
    def rule(v):
        if v is None and optional:
            return None
        return None if isinstance(v, str) and names([v]) is None else "a plain name (no '/', not '.' or '..')"
    return rule


def probabilities(v) -> str | None:
    if not isinstance(v, dict) or not all(isinstance(k, str) and _is_num(p) and 0 <= p <= 1 for k, p in v.items()):
        return "a table of effect = probability in [0, 1]"
    return None


def _select_rules():
    from .selection import RULES

    return RULES


# fatlib.tta.TTA_SCHEMES, not imported: tta imports torch, and recipes are checked for every command's --help
# (tests/test_imports checks that they agree)
TTA_SCHEMES = ("windows", "sequential", "full")


def _tta_schemes():
    return TTA_SCHEMES


# StageConfig field -> rule
STAGE_RULES: dict[str, Rule] = {
    "name": plain_name(), "model": text(), "model_kwargs": table, "preset": text(), "mel": table, "loss": text(),
    "augment": lambda v: None if isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
    else "a list of augmentation names",
    "epochs": integer(1), "lr": number(0, lo_open=True), "wd": number(0), "batch_size": integer(1),
    "n_folds": integer(2), "folds_seed": integer(),  # train_on, keep, schedule: StageConfig.validate (its choices)
    "selection_csv": text(optional=True), "init_from": text(optional=True), "mixed_precision": boolean,
    "seed": integer(), "wave_augment": boolean, "n_workers": integer(0), "cache_jobs": integer(1, optional=True),
    "tta_step_frames": integer(1, optional=True), "auto_scale": boolean, "min_steps": integer(1),
    "init_bias": boolean, "pct_start": number(0, 1, hi_open=True),
    "grad_clip": number(0, lo_open=True, optional=True), "sound_mix_p": number(0, 1), "sound_mix_max": integer(1),
    "fold_parallel": boolean, "wave_effects": probabilities,
    "wave_p": number(0, 1), "channels_last": boolean,
    # schedule "plateau" (fastai's ReduceLROnPlateau, restarted at the high lr): runs, patience, divisor
    "plateau_cycles": integer(1), "plateau_patience_epochs": integer(1), "plateau_factor": number(1, lo_open=True),
}
PREDICT_RULES: dict[str, Rule] = {
    "tta": one_of(_tta_schemes), "stages": names, "ensemble": one_of(lambda: ("mean", "geometric")),
    "rescale": boolean, "step_frames": integer(1, optional=True), "ensemble_size": integer(1),
}
PSEUDO_RULES: dict[str, Rule] = {
    "from_stage": plain_name(optional=True), "rounds": integer(1), "round_size": integer(1), "max_rounds": integer(0),
    "threshold": number(0, 1), "init_from_previous": boolean,
}
SELECTION_RULES: dict[str, Rule] = {
    "rule": one_of(_select_rules), "sources": names, "threshold": number(), "max_per_fold_label": integer(1, optional=True),
    "n_best": integer(1), "max_per_class": integer(1, optional=True), "round_size": integer(1), "max_rounds": integer(0),
    "round_index": integer(1),
}
TABLES = {"stage": STAGE_RULES, "predict": PREDICT_RULES, "pseudo": PSEUDO_RULES, "selection": SELECTION_RULES}


def _show(value) -> str:
    import json

    try:
        shown = json.dumps(value)
    except (TypeError, ValueError):
        shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _fix(key: str, value, want: str) -> str:
    if isinstance(value, str) and (("number" in want and _parses(value, float)) or
                                   ("true or false" in want and value.lower() in ("true", "false"))):
        return f"write {key} = {value.lower() if 'true' in want else value} without quotes (a value, not a text)"
    if want.startswith("a table"):
        return f"write it as a table, e.g. {key} = {{ name = value }} in a recipe, {key}.name=value with --set"
    return f"set {key} to {want}"


def _parses(text: str, kind) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


def check_settings(mapping: Mapping[str, Any], *, source: str, kind: str = "stage") -> Mapping[str, Any]:
    """Check every known key of ``mapping`` against the rules of ``kind`` ("stage": StageConfig fields,
    "predict", "pseudo", "selection"); the first bad value is a DataError naming the setting, its value,
    ``source`` (the file and table, ``--set ...``, ``--config FILE``) and the fix. Returns ``mapping``."""
    from .guards import check_plain_name

    rules = TABLES[kind]
    if not isinstance(mapping, Mapping):
        raise DataError(f"{source}: holds {_show(mapping)}, not a table of settings; write name = value entries "
                        "(a JSON object for --config).")
    for key, value in mapping.items():
        if key == "name" and kind == "stage":
            check_plain_name(value, what="stage name", source=source)
            continue
        rule = rules.get(key)
        want = rule(value) if rule is not None else None
        if want is not None:
            raise DataError(f"{source}: {key} = {_show(value)} is not {want}; {_fix(key, value, want)}.")
    if kind == "stage" and isinstance(mapping.get("mel"), dict) and mapping["mel"]:  # {} fits every preset, and
        _check_mel(mapping, source)  # skipping it keeps torch (fatlib.features) out of every command's --help
    return mapping


def _check_mel(mapping, source: str) -> None:
    """The mel table against the feature preset (unknown keys and bad values, e.g. ``n_mels = "64"``).
    Needs fatlib.features, which imports torch: skipped while nothing has loaded torch (a recipe read to build
    ``--help``); the run path checks it (the engine's check imports the training modules first, and
    ``StageConfig.mel_config`` names a bad table before any work)."""
    import sys

    if "torch" not in sys.modules:
        return
    from .features import PRESETS, get_preset

    preset = mapping.get("preset", "cnn128")
    if not isinstance(preset, str) or preset not in PRESETS:
        return  # named by the model/preset checks later, with the valid presets
    try:
        get_preset(preset, **mapping["mel"])
    except (TypeError, ValueError, KeyError) as e:
        raise DataError(f"{source}: mel = {_show(mapping['mel'])} does not fit preset {preset!r} ({e}); fix the "
                        "mel table (MelConfig fields, e.g. mel = {n_mels = 64}).") from None


def check_recipe_layout(raw: Mapping, *, source: str) -> None:
    """A recipe file as read: ``[stage]``, ``[predict]``, ``[pseudo]``, ``[small_data]`` are tables,
    ``[stages.<name>]`` and ``[selection.<name>]`` tables of tables; ``name``, ``title``, ``pipeline`` texts."""
    for key in ("stage", "predict", "pseudo", "small_data", "stages", "selection"):
        if key in raw and not isinstance(raw[key], dict):
            raise DataError(f"{source}: {key} = {_show(raw[key])} is not a table; write it as [{key}] with "
                            "name = value lines below it.")
    for key in ("stages", "selection"):
        for name, value in raw.get(key, {}).items():
            if not isinstance(value, dict):
                raise DataError(f"{source}: {key}.{name} = {_show(value)} is not a table; write it as "
                                f"[{key}.{name}] with name = value lines below it.")
    for key in ("name", "title", "pipeline"):
        if key in raw and not isinstance(raw[key], str):
            raise DataError(f"{source}: {key} = {_show(raw[key])} is not a text; write {key} = \"...\".")


def check_recipe(recipe, *, stage_config=None, check_stage=None) -> None:
    """Every table of a loaded :class:`fatlib.recipes.Recipe`, and each stage's fields as it will run
    (``[stage]``, then ``[stages.<name>]``), before any training. DataError naming the recipe file.
    ``stage_config``: the StageConfig class, to build each stage's config too (its own checks: choices
    such as ``keep`` and ``train_on``, the selection CSV rule), so nothing fails after a stage trained;
    ``check_stage``: called with each built config (e.g. the model, loss and augmentation names)."""
    from .guards import check_plain_name

    src = str(recipe.path)
    check_plain_name(recipe.name, what="recipe name (the run's default name)", source=src)
    check_settings(recipe.stage, source=f"{src} [stage]")
    small = dict(recipe.small_data)
    if "ensemble_size" in small:
        check_settings({"ensemble_size": small.pop("ensemble_size")}, source=f"{src} [small_data]", kind="predict")
    check_settings(small, source=f"{src} [small_data]")
    for name, fields in recipe.stages.items():
        check_settings({"name": name}, source=f"{src} [stages]")
        check_settings(fields, source=f"{src} [stages.{name}]")
        check_settings(recipe.stage_fields(name), source=f"{src} [stage] + [stages.{name}]")
    if stage_config is not None:
        for name in recipe.stage_names() or ["stage"]:
            fields = {**recipe.stage_fields(name), "name": name}
            if fields.get("train_on") == "curated+selected" and fields.get("selection_csv") is None:
                fields.update(train_on="curated", selection_csv=None)  # the run writes the selection first
            cfg = stage_config.from_dict(fields)
            if check_stage is not None:
                check_stage(cfg)
    check_settings(recipe.predict, source=f"{src} [predict]", kind="predict")
    check_settings(recipe.pseudo, source=f"{src} [pseudo]", kind="pseudo")
    for name, fields in recipe.selection.items():
        check_settings({"name": name}, source=f"{src} [selection]")
        check_settings(fields, source=f"{src} [selection.{name}]", kind="selection")


def check_set(parts: list[str], value, *, item: str) -> None:
    """One ``--set`` (``parts``: its key split at dots, ``value``: parsed) against the rules of its table."""
    source = f"--set {item}"
    head = parts[0]
    if head in ("predict", "pseudo") and len(parts) == 2:
        check_settings({parts[1]: value}, source=source, kind=head)
    elif head == "selection" and len(parts) == 3:
        check_settings({"name": parts[1]}, source=source)
        check_settings({parts[2]: value}, source=source, kind="selection")
    elif head == "stages" and len(parts) == 3:
        check_settings({"name": parts[1], parts[2]: value}, source=source)
    elif len(parts) == 1:
        check_settings({head: value}, source=source)


def check_n_folds(n_folds: int, data, *, option: str = "--n-folds {n}") -> None:
    """Each split that gets folds has at least ``n_folds`` clips: DataError naming the split's CSV, before
    any folds file is written (curated always; noisy when it has clips)."""
    for name, split in (("curated", data.curated), ("noisy", data.noisy)):
        n = len(split.fnames)
        if (name == "curated" or n) and n < n_folds:
            raise DataError(f"{data.root / f'train_{name}.csv'}: the {name} split has {n} clips, fewer than "
                            f"n_folds={n_folds} (each fold needs clips of it); use {option.format(n=n)} or fewer, or add clips.")


def check_ensemble_size(n, *, source: str, n_members: int | None = None, recipe: str = "") -> int:
    """An ensemble size (``[predict]`` / ``[small_data] ensemble_size``, ``--ensemble-size``, ``--set
    predict.ensemble_size``): a whole number from 1 to ``n_members`` (the recipe's ``[predict] stages``, when
    known). DataError naming ``source``, the recipe and the fix. Returns ``n``."""
    check_settings({"ensemble_size": n}, source=source, kind="predict")
    if n_members is not None and n > n_members:
        raise DataError(f"{source}: ensemble_size = {n} is more than the {n_members} members of recipe {recipe}'s "
                        f"[predict] stages; use an ensemble size from 1 to {n_members} (or list more stages).")
    return n
