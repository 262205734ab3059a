"""The settings of one training stage: :class:`StageConfig` (every field, its units and checks), the
constants it is checked against, and :class:`Source`: where a value came from (the provenance that the
stage log and ``config.json`` record). No torch here: the recipes and the command line read it."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import write_json
from .errors import DataError
from .setting_rules import check_settings

TRAIN_ON = ("noisy", "curated", "curated+selected")
KEEP = ("last", "best")
# learning-rate schedules: fastai's one-cycle; linear warm-up over pct_start then cosine to 0 (9th place);
# lr held and cut by fastai's ReduceLROnPlateau when the validation loss stalls, restarted at the high lr
# plateau_cycles times (the 9th place's fine-tuning)
SCHEDULES = ("one_cycle", "warmup_cosine", "plateau")
# fields that may change between runs of a stage without making its finished folds stale
RUNTIME_FIELDS = ("n_workers", "cache_jobs", "mixed_precision", "fold_parallel", "channels_last")
MAX_WORKERS = 8


def default_n_workers() -> int:
    """DataLoader worker processes by default: one per usable CPU core, at most :data:`MAX_WORKERS`;
    0 (load in the training process) on one or two cores, where workers take the cores the training
    step computes on (2 cores, benchmarks/bench_ratios.py: workers 1 and 2 at 0.3x workers 0's samples/s)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if n <= 2 else min(MAX_WORKERS, n)


@dataclass
class StageConfig:
    """Everything that defines a stage. Units: ``lr`` peak learning rate of the schedule (the high lr
    of "plateau"), ``wd`` decoupled weight decay, ``epochs`` passes over the training split, ``batch_size`` clips,
    ``tta_step_frames`` frames between TTA windows (None: 3/8 of the crop, 48 for 128),
    ``pct_start`` share of the steps spent warming the learning rate up, ``grad_clip`` maximum
    gradient norm (None: no clipping), ``schedule`` one of :data:`SCHEDULES` ("warmup_cosine": a
    linear warm-up over ``pct_start`` of the steps, then cosine decay to 0, the 9th place's 10 % warm-up;
    "plateau": ``plateau_cycles`` runs that each start at ``lr`` (the high lr) and hold it until fastai's
    ``ReduceLROnPlateau`` divides it by ``plateau_factor`` after ``plateau_patience_epochs`` epochs
    without a lower validation loss; ``epochs`` split evenly between the runs
    (:func:`fatlib.learner.plateau_starts`): the 9th place's fine-tuning "to alternate high and low
    lr"). ``wave_effects``: effect -> probability for the on-the-fly waveform effects
    (``fatlib.wave_augment``; empty: WaveAugment's defaults), ``wave_p`` the share of clips that get
    any effect.

    ``auto_scale`` (default): ``batch_size``, ``lr`` and ``epochs`` are the recipe's values for a data
    set the size of FSDKaggle2019, and are scaled to the data at hand (fewer clips: smaller batches,
    at least ``min_steps`` optimizer steps per fold, a narrower model when ``model_kwargs`` does not
    set ``width_mult``; see :mod:`fatlib.autoscale`); what was chosen is printed and logged.
    ``init_bias``: the output layer's bias starts at the log-odds of each class's share of the
    training clips (a model that starts out knowing which classes are rare; not with ``init_from``).
    ``keep``: the weights of the "last" epoch, or of the "best" by validation lwlrap.
    ``sound_mix_p``: share of training clips mixed, as sounds (power sum of the two log-mels, at
    -6..+6 dB), with 1..``sound_mix_max`` other clips of the same part, the labels joined: teaches
    overlapping sounds (fatlib's addition, not in the write-ups; feature-cache path). Default 0.0 (off): no
    write-up has it, so it runs only where a recipe turns it on (the default recipe's ``[small_data]``)."""

    name: str
    model: str = "cnn_model_1"
    model_kwargs: dict = field(default_factory=dict)
    preset: str = "cnn128"
    mel: dict = field(default_factory=dict)  # MelConfig overrides of the preset
    loss: str = "bce"
    augment: list = field(default_factory=lambda: ["specmix"])
    epochs: int = 10
    lr: float = 1e-3
    wd: float = 1e-2
    batch_size: int = 64
    n_folds: int = 5
    folds_seed: int = 42
    train_on: str = "curated"
    selection_csv: str | None = None
    init_from: str | None = None  # a stage folder: its fold{k}.safetensors starts fold k
    mixed_precision: bool = True  # fastai to_fp16, on CUDA only
    seed: int = 0
    wave_augment: bool = False  # True: on-the-fly waveforms + WaveAugment, log-mels on the device
    n_workers: int = field(default_factory=default_n_workers)  # DataLoader processes (0: in this one)
    cache_jobs: int | None = None  # processes building the feature cache (None: every core)
    tta_step_frames: int | None = None
    auto_scale: bool = True
    min_steps: int = 600
    init_bias: bool = True
    keep: str = "last"
    pct_start: float = 0.25
    grad_clip: float | None = None
    sound_mix_p: float = 0.0  # off unless a recipe says so (no write-up mixes sounds)
    sound_mix_max: int = 1
    fold_parallel: bool = False  # launched as W processes: process r trains folds r, r+W, ... (fatlib.distrib)
    schedule: str = "one_cycle"
    plateau_cycles: int = 1  # schedule "plateau": runs starting at the high lr (lr), epochs split between them
    plateau_patience_epochs: int = 1  # epochs without a lower validation loss before the lr is cut
    plateau_factor: float = 10.0  # the lr is divided by this at each cut (fastai's default)
    wave_effects: dict = field(default_factory=dict)
    wave_p: float = 0.75
    channels_last: bool = False  # model and inputs in channels-last memory format on GPUs (always on CPUs: faster there)

    def __post_init__(self):
        self.validate()

    def validate(self) -> StageConfig:
        def bad(what, fix):
            raise DataError(f"StageConfig {self.name!r}: {what}; {fix}")

        check_settings(vars(self), source=f"StageConfig {self.name!r}")  # types and ranges (fatlib.setting_rules)
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            bad(f"name={self.name!r}", "use a non-empty folder name without '/'")
        if self.train_on not in TRAIN_ON:
            bad(f"train_on={self.train_on!r}", f"use one of {TRAIN_ON}")
        if (self.train_on == "curated+selected") != (self.selection_csv is not None):
            bad("selection_csv must be given exactly when train_on='curated+selected'",
                "make one with `python -m fatlib select`")
        for name in ("epochs", "batch_size", "n_folds"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < (2 if name == "n_folds" else 1):
                bad(f"{name}={v!r}", f"use an integer >= {2 if name == 'n_folds' else 1}")
        if not (self.lr > 0 and self.wd >= 0 and self.n_workers >= 0):
            bad(f"lr={self.lr}, wd={self.wd}, n_workers={self.n_workers}", "need lr > 0, wd >= 0, n_workers >= 0")
        if self.keep not in KEEP:
            bad(f"keep={self.keep!r}", f"use one of {KEEP}")
        if not 0 <= self.pct_start < 1 or (self.grad_clip is not None and not self.grad_clip > 0):
            bad(f"pct_start={self.pct_start}, grad_clip={self.grad_clip}", "need 0 <= pct_start < 1 and grad_clip > 0 or None")
        if not 0 <= self.sound_mix_p <= 1:
            bad(f"sound_mix_p={self.sound_mix_p}", "use a share in [0, 1] (0: off)")
        if isinstance(self.sound_mix_max, bool) or not isinstance(self.sound_mix_max, int) or self.sound_mix_max < 1:
            bad(f"sound_mix_max={self.sound_mix_max!r}", "use a whole number of other clips >= 1")
        if self.sound_mix_p > 0 and self.wave_augment:
            bad(f"sound_mix_p={self.sound_mix_p} with wave_augment=True: sound mix adds cached log-mels, and the "
                "waveform path has none (it would be ignored)",
                "pass --sound-mix 0 (--set sound_mix_p=0), or train on cached log-mels (wave_augment off); "
                "on waveforms, augment ormixup_wave mixes two clips")
        if self.schedule not in SCHEDULES:
            bad(f"schedule={self.schedule!r}", f"use one of {SCHEDULES}")
        if not 0 <= self.wave_p <= 1:
            bad(f"wave_p={self.wave_p}", "use a probability in [0, 1]")
        if not isinstance(self.min_steps, int) or self.min_steps < 1:
            bad(f"min_steps={self.min_steps!r}", "use an integer >= 1")
        if not isinstance(self.fold_parallel, bool):
            bad(f"fold_parallel={self.fold_parallel!r}", "use True or False")
        if isinstance(self.augment, str):
            self.augment = [self.augment]
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> StageConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DataError(f"stage config: unknown fields {unknown}; valid fields: {sorted(known)}.")
        return cls(**d)

    def save(self, path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path) -> StageConfig:
        """A StageConfig from a JSON file of its fields (a stage's ``config.json``: its ``sources`` are skipped)."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            d.pop("sources", None)
            return cls.from_dict(check_settings(d, source=f"--config {path}"))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: cannot read the stage config ({e}); pass a JSON file of StageConfig fields.") from e

    def replace(self, **changes) -> StageConfig:
        return StageConfig.from_dict({**self.to_dict(), **changes})

    def mel_config(self):
        from .features import get_preset

        try:
            return get_preset(self.preset, **self.mel)
        except (KeyError, ValueError) as e:
            raise DataError(f"StageConfig {self.name!r}: preset {self.preset!r} with {self.mel}: {e}") from e

    @property
    def step_frames(self) -> int:
        return self.tta_step_frames or max(1, self.mel_config().crop_frames * 3 // 8)


# where a value can come from, lowest first: StageConfig's default, the recipe file, its [small_data] table,
# --config, a command-line option, --set, a library call's argument; then auto scaling (fields nobody gave)
SOURCE_KINDS = ("default", "recipe", "small_data", "config", "option", "set", "argument", "auto_scale")
GIVEN_KINDS = ("config", "option", "set", "argument")  # somebody gave the value: auto scaling leaves it alone


@dataclass(frozen=True)
class Source:
    """Where one setting came from: ``kind`` (one of :data:`SOURCE_KINDS`) and ``where`` (a recipe file and
    line, ``--epochs``, ``--set epochs=3``, ``--config c.json``, what auto scaling scaled from)."""

    kind: str
    where: str = ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.where}" if self.where else self.kind

    @property
    def given(self) -> bool:
        return self.kind in GIVEN_KINDS

    def to_dict(self) -> dict:
        return {"kind": self.kind, "where": self.where}

    @classmethod
    def of_given(cls, where: str) -> Source:
        """The Source of a value given at ``where`` ("--set k=v", "--config f", "--epochs", "argument")."""
        if where.startswith("--set"):
            return cls("set", where)
        if where.startswith("--config"):
            return cls("config", where)
        if where.startswith("--"):
            return cls("option", where)
        return cls("argument", where)


SOURCE_LABELS = {"default": "default (not published: fatlib's choice)", "recipe": "recipe", "small_data": "small-data table",
                 "config": "--config", "option": "option", "set": "--set", "argument": "argument",
                 "auto_scale": "auto scaling"}


def source_text(src: Source, comment: str = "") -> str:
    """``src`` as ``--plan`` and the run log write it ("recipe 12th_place.toml:12 [stage]", "option --epochs",
    "--set epochs=3"), with the comment of its recipe line when given."""
    label = SOURCE_LABELS.get(src.kind, src.kind)
    where = src.where if src.kind not in ("set", "config") else src.where.replace(label, "", 1).strip()
    text = f"{label} {where}".strip() if src.kind != "default" else label
    return text + (f"  # {comment}" if comment else "")


def describe_sources(cfg: StageConfig, sources: dict) -> list[str]:
    """Lines for a stage's log: each setting that is not StageConfig's default, with where it came from."""
    out = []
    for name, src in sources.items():
        if src.kind != "default":
            out.append(f"{name}={json.dumps(getattr(cfg, name), default=str)} ({src})")
    return out
