"""Options shared by several commands: the stage options of ``train-stage`` and ``warmup`` (each help says
the real default, the default recipe's value), how they become StageConfig fields, and ``--input-roots``."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ..errors import DataError
from ..settings import KEEP, MAX_WORKERS, StageConfig


def json_arg(text: str | None, *, flag: str):
    """Parse a JSON command-line value (None stays None); a DataError names the flag."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{flag} {text!r} is not valid JSON ({e}); e.g. {flag} '{{\"width_mult\": 0.5}}'.") from e


# fields a command-line option sets: (option dest, StageConfig field)
STAGE_OPTIONS = (
    ("model", "model"), ("preset", "preset"), ("loss", "loss"), ("augment", "augment"), ("epochs", "epochs"),
    ("lr", "lr"), ("batch_size", "batch_size"), ("n_folds", "n_folds"), ("seed", "seed"), ("workers", "n_workers"),
    ("keep", "keep"), ("auto_scale", "auto_scale"), ("sound_mix", "sound_mix_p"), ("sound_mix_max", "sound_mix_max"),
)


def stage_overrides(args) -> dict:
    """StageConfig fields the command line sets explicitly (options left at None are not set)."""
    over = {name: getattr(args, dest) for dest, name in STAGE_OPTIONS if getattr(args, dest, None) is not None}
    for flag, name in (("--model-kwargs", "model_kwargs"), ("--mel", "mel")):
        value = json_arg(getattr(args, name), flag=flag)
        if value is not None:
            over[name] = value
    if args.wave_augment:
        over["wave_augment"] = True
    if getattr(args, "fold_parallel", False):
        over["fold_parallel"] = True
    if getattr(args, "channels_last", False):
        over["channels_last"] = True
    return over


FLAGS = {"auto_scale": "--no-auto-scale", "n_workers": "--workers", "sound_mix_p": "--sound-mix",
         "model_kwargs": "--model-kwargs", "selection_csv": "--selection"}


def given_sources(args) -> dict:
    """Where each StageConfig field the command line gives comes from: ``--config FILE`` or the option."""
    config = StageConfig.load(args.config).to_dict() if getattr(args, "config", None) else {}
    out = {k: f"--config {args.config}" for k in config}
    for k in _given_options(args):
        out[k] = FLAGS.get(k, "--" + k.replace("_", "-"))
    return out


def _given_options(args) -> dict:
    over = {**stage_overrides(args), "train_on": getattr(args, "train_on", None),
            "selection_csv": getattr(args, "selection", None)}
    return {k: v for k, v in over.items() if v is not None}


def run_name(args, *, n_dataset: int | None = None) -> str:
    """``--run``, else the model's name (``--model``, else the recipe's for a data set of ``n_dataset``
    clips): the notebooks' run names, so the headless commands and the inference kernel's defaults agree."""
    from ..guards import check_plain_name

    if args.run:
        return check_plain_name(args.run, what="run name (--run)")
    if getattr(args, "model", None):
        return check_plain_name(args.model, what="run name (the --model name; or give --run)")
    from ..recipes import load_recipe

    fields = load_recipe(args.recipe).stage_fields(getattr(args, "stage", None) or "stage", n_dataset=n_dataset,
                                                   given=stage_overrides(args))
    return check_plain_name(fields.get("model", "cnn_model_1"), what="run name (the recipe's model name; or give --run)")


def _given(args, *, n_dataset: int | None = None) -> dict:
    """The StageConfig fields ``--config`` and the options set, on top of the recipe's."""
    config = StageConfig.load(args.config).to_dict() if args.config else {}
    over = {**stage_overrides(args), "train_on": args.train_on, "selection_csv": args.selection}
    if args.stage:
        over["name"] = args.stage
    if args.init_from:
        p = Path(args.init_from)
        over["init_from"] = str(p if p.is_dir() else Path(args.weights) / run_name(args, n_dataset=n_dataset)
                                / args.init_from)
    return {**config, **{k: v for k, v in over.items() if v is not None}}


def recipe_from_args(args, *, n_dataset: int | None = None):
    """The recipe (``--recipe``) with what the command line gives on top of stage ``--stage``: ``--config``
    (JSON), then the options, each recorded with where it was given (:meth:`fatlib.recipes.Recipe.give`).
    One resolution for every command: ``stage_fields`` and ``sources`` of the result are the settings
    and their provenance (recipe -> ``[small_data]`` -> ``--config`` -> options)."""
    import copy

    from ..recipes import load_recipe

    name = args.stage or "stage"
    rec = copy.deepcopy(load_recipe(args.recipe))
    where = given_sources(args)
    for k, v in _given(args, n_dataset=n_dataset).items():
        if k != "name":
            rec.give({k: v}, source=where.get(k, "argument"), stage=name)
    return rec


def config_from_args(args, *, n_dataset: int | None = None, rec=None) -> StageConfig:
    """A StageConfig from the recipe (``--recipe``; its ``[stages.<stage>]`` when the stage is one of
    its stages; its ``[small_data]`` on a data set of ``n_dataset`` clips below ``SMALL_DATA_CLIPS``),
    then ``--config`` (JSON), then the options given on the command line (``rec``: :func:`recipe_from_args`,
    when the caller has it already)."""
    name = args.stage or "stage"
    rec = recipe_from_args(args, n_dataset=n_dataset) if rec is None else rec
    fields = {"name": name, **rec.stage_fields(name, n_dataset=n_dataset)}
    init = fields.get("init_from")
    if init and "/" not in str(init) and not Path(init).is_dir():  # the recipe's earlier stage of this run
        fields["init_from"] = str(Path(args.weights) / run_name(args, n_dataset=n_dataset) / init)
    return StageConfig.from_dict(fields)


def result_line(name: str, res) -> str:
    """The line printed when a stage is finished (``res``: its :class:`fatlib.train.StageResult`)."""
    noisy = f", noisy {res.cv_noisy:.4f}" if res.cv_noisy is not None else ""
    return f"{name}: CV lwlrap curated {res.cv_curated:.4f}{noisy} -> {res.stage_dir}"


def _recipe_default(field: str, stage: str | None = None) -> str:
    """The default a stage option takes: the default recipe's value, else StageConfig's."""
    from ..autoscale import SMALL_DATA_CLIPS
    from ..recipes import DEFAULT_RECIPE, load_recipe, show_value

    recipe = load_recipe(DEFAULT_RECIPE)
    fields = recipe.stage_fields(stage)
    small = f"; {show_value(recipe.small_data[field])} on data sets under {SMALL_DATA_CLIPS:,} clips (its " \
        "[small_data]), see --no-auto-scale" if field in recipe.small_data else ""
    if field in fields:
        return f"{show_value(fields[field])} (recipe {DEFAULT_RECIPE}{small})"
    spec = StageConfig.__dataclass_fields__[field]
    value = str(spec.default if spec.default_factory is dataclasses.MISSING else spec.default_factory())
    return f"{value} (recipe {DEFAULT_RECIPE}{small})" if small else value


def add_stage_arguments(p: argparse.ArgumentParser, *, stage: str | None = None) -> None:
    """Options shared by ``train-stage`` and ``warmup``; each help says the real default."""
    from ..recipes import DEFAULT_RECIPE, list_recipes

    d = lambda field: f"default: {_recipe_default(field, stage)}"  # noqa: E731
    p.add_argument("--recipe", default=DEFAULT_RECIPE,
                   help=f"a shipped recipe ({', '.join(list_recipes())}) or a .toml path; options below override it "
                   f"(default: {DEFAULT_RECIPE})")
    p.add_argument("--data", default=None, help="data folder (default: input/, then the Kaggle path)")
    p.add_argument("--run", default=None,
                   help="run name: outputs in <weights>/<run>/ (default: the model's name, as the notebooks)")
    p.add_argument("--weights", default="weights", help="weights root (default: weights)")
    p.add_argument("--cache-dir", default="cache", help="feature cache folder (default: cache)")
    p.add_argument("--model", default=None, help=f"registered model name (cnn_model_1, vgg16_bn, ...; {d('model')})")
    p.add_argument("--model-kwargs", default=None,
                   help='JSON, e.g. \'{"width_mult": 0.5}\' (default: {}; width_mult chosen from the data set size '
                   "with auto scaling)")
    p.add_argument("--preset", default=None, help=f"feature preset (cnn128, dense64; {d('preset')})")
    p.add_argument("--mel", default=None, help='JSON MelConfig overrides, e.g. \'{"n_mels": 64}\' (default: {})')
    p.add_argument("--loss", default=None, help=f"bce | lsep | focal ({d('loss')})")
    p.add_argument("--augment", nargs="*", default=None, help=f"augmentation names, none for no augmentation ({d('augment')})")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"passes over the training split per fold; with auto scaling at least this many ({d('epochs')})")
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate of the one-cycle schedule at the recipe's batch size ({d('lr')})")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"clips per batch; with auto scaling at most this many ({d('batch_size')})")
    p.add_argument("--no-auto-scale", dest="auto_scale", action="store_const", const=False, default=None,
                   help="train with exactly the recipe's (or given) model, features, batch size, lr, epochs and width "
                   "(default: scale them to the data set size, with the recipe's [small_data] model and features "
                   "under 1,500 clips, and print what was chosen)")
    p.add_argument("--n-folds", type=int, default=None, help=f"K of the K-fold split of curated ({d('n_folds')})")
    p.add_argument("--folds", type=int, nargs="+", default=None,
                   help="train only these fold indices, e.g. --folds 0 to run or time one fold (default: every fold)")
    p.add_argument("--keep", choices=KEEP, default=None,
                   help=f"weights of the last epoch or of the best by validation lwlrap ({d('keep')})")
    p.add_argument("--sound-mix", type=float, default=None, metavar="P",
                   help=f"share of training clips mixed with another clip as sounds, labels joined; 0: off "
                   f"({d('sound_mix_p')})")
    p.add_argument("--sound-mix-max", type=int, default=None, metavar="N",
                   help=f"a mixed clip gets 1..N other clips (uniform), e.g. 2 for 2-3-sound mixtures "
                   f"({d('sound_mix_max')})")
    p.add_argument("--seed", type=int, default=None, help=f"training seed (augmentations, initialisation; {d('seed')})")
    p.add_argument("--workers", type=int, default=None,
                   help=f"DataLoader worker processes; 0 loads in the training process ({d('n_workers')}: one per "
                   f"CPU core, at most {MAX_WORKERS}; 0 on 1-2 cores)")
    p.add_argument("--channels-last", action="store_true",
                   help="model and inputs in channels-last memory format on a GPU, faster on recent GPUs with mixed "
                   "precision (default: off on GPUs; always on when training on the CPU, where it is faster)")
    p.add_argument("--wave-augment", action="store_true",
                   help="on-the-fly waveforms with WaveAugment (default: random crops of the feature cache)")
    p.add_argument("--fold-parallel", action="store_true",
                   help="launched as W processes (torchrun --nproc_per_node W -m fatlib -- ...): process r trains folds "
                   "r, r+W, ... on its own GPU, no gradient sync (default: the processes train each fold together, "
                   "data parallel)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars; the per-epoch and per-fold lines stay (default: bars in a terminal or "
                   "notebook, plain lines elsewhere)")


def add_input_roots_argument(parser: argparse.ArgumentParser) -> None:
    """``--input-roots DIR ...`` for a command that reads earlier stages, caches or weights."""
    parser.add_argument(
        "--input-roots", nargs="+", default=[], metavar="DIR",
        help="read-only outputs of earlier sessions (e.g. ../input/<notebook>/), each laid out like the working "
        "folder (weights/, cache/): earlier stages, caches and weights are looked up there after the working "
        "folder; only the working folder is written (default: none)",
    )


def workspace_from_args(args):
    """The :class:`fatlib.workspace.Workspace` of a command: ``--weights``, ``--cache-dir``, ``--input-roots``, ``--quiet``."""
    from ..workspace import Workspace

    return Workspace(args.weights, args.cache_dir, getattr(args, "input_roots", ()), not getattr(args, "quiet", False))

