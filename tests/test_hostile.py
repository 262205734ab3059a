"""Hostile input through the command line: each case of the table below is a command a user types on a
damaged or unusual data set, weights file or disk. Each asserts the exit code, the key words of the
one-line message (the file and the fix) and that outputs that existed before (an old ``submission.csv``,
an earlier stage's weights) are byte-identical afterwards. The README's "Reliability" section lists the
same cases.

Every case runs :func:`fatlib.commands.main.main`, which is what ``python -m fatlib`` runs, in its own process:
one runner process imports fatlib once and forks a child per case (starting ~50 interpreters that import
torch would take minutes on 2 cores). What a case needs the outside world to do is arranged in the child
before ``main`` runs: a file-size limit (``setrlimit``), a full disk (``shutil.disk_usage`` reporting
almost no space free), Ctrl-C (KeyboardInterrupt raised by the first forward pass), a kill (SIGKILL while
the cache is assembled or while fold 1 trains). :func:`test_python_m_fatlib_entry_point` runs the real
``python -m fatlib`` for two cases to show the entry point behaves the same. The in-process cases of
tests/test_bad_input.py (every audio corruption at cache and predict, CSV problems reported together)
are not repeated here beyond one CLI case each.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0  # root writes through any permission bits
SR = 44100
MEL = dict(n_mels=32, n_fft=1024, hop_length=512, crop_frames=32)
OLD_SUBMISSION = b"fname,old\nx.wav,0.5\n"
PREDICT = ["predict", "--data", "data", "--weights", "w/run", "--out", "out/submission.csv", "--device", "cpu",
           "--batch-size", "4"]
TRAIN = ["train-stage", "--data", "data", "--run", "run", "--weights", "w", "--cache-dir", "cache", "--stage", "s2",
         "--n-folds", "2", "--epochs", "1", "--batch-size", "4", "--no-auto-scale", "--mel", json.dumps(MEL),
         "--model-kwargs", '{"width_mult": 0.125}', "--quiet", "--augment"]  # no augmentation
CACHE = ["cache", "--data", "data", "--splits", "curated", "--cache-dir", "cache", "--jobs", "1"]


@dataclass
class Case:
    """One row of the table: ``setup(case_dir)`` damages a fresh copy of the base folder, then
    ``python -m fatlib <argv>`` runs in it."""

    name: str
    what: str  # the README's words for the case
    setup: Callable[[Path], None] | None
    argv: list[str]
    code: int
    words: tuple[str, ...] = ()  # in stderr (errors) or stdout (success)
    creates: tuple[str, ...] = ()  # files that must exist afterwards
    then: list[str] | None = None  # a second command (the fix, or the rerun after a kill) and its code 0
    hooks: dict = field(default_factory=dict)  # fsize, free_bytes, interrupt, kill (see RUNNER)
    needs_non_root: bool = False
    absent: tuple[str, ...] = ()  # paths that must not exist afterwards (nothing written before the refusal)


# ------------------------------------------------------------------------------------ damage helpers
def _weights(d: Path) -> Path:
    return d / "w" / "run" / "s1" / "fold0.safetensors"


def _flip(offset_from_end: int, mask: int):
    def setup(d: Path) -> None:
        data = bytearray(_weights(d).read_bytes())
        data[-offset_from_end] ^= mask
        _weights(d).write_bytes(bytes(data))
    return setup


def _save(d: Path, *, model_name="cnn_model_1", n_classes=None, vocab=None, width=0.125, nan=False, path=None,
          extra_kwargs=None):
    from fatlib.checkpoint import save_weights
    from fatlib.dataset import load_vocabulary
    from fatlib.features import get_preset
    from fatlib.models import create_model

    mel = get_preset("cnn128", **MEL)
    vocab = vocab or load_vocabulary(d / "data")
    model = create_model("cnn_model_1", n_classes=len(vocab), in_channels=mel.channels, width_mult=width)
    if nan:
        with __import__("torch").no_grad():
            next(model.parameters()).fill_(float("nan"))
    kwargs = {"n_classes": n_classes or len(vocab), "in_channels": mel.channels, "width_mult": width,
              **(extra_kwargs or {})}
    save_weights(path or _weights(d), model, model_name=model_name, model_kwargs=kwargs, mel_config=mel.to_dict(),
                 vocab=vocab)


def _strip_checksum(d: Path) -> None:
    """The weights file as fatlib wrote it before weights carried a checksum."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(_weights(d)), framework="pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k != "sha256"}
        state = {k: f.get_tensor(k) for k in f.keys()}
    save_file(state, str(_weights(d)), metadata=meta)


def _edit(rel: str, fn):
    def setup(d: Path) -> None:
        p = d / "data" / rel
        p.write_bytes(fn(p.read_bytes()))
    return setup


def _lines(rel: str, fn):
    return _edit(rel, lambda b: fn(b.decode().splitlines()).encode())


def _first_test_clip(d: Path) -> Path:
    name = (d / "data" / "sample_submission.csv").read_text().splitlines()[1].split(",")[0]
    return d / "data" / "test" / name


def _rewrite_clip(fn):
    def setup(d: Path) -> None:
        path = _first_test_clip(d)
        y, _ = sf.read(path, dtype="float32")
        fn(path, y)
    return setup


def _rename_test_clip(new_name: str, *, on_disk: str | None = None):
    """The first test clip renamed to ``new_name`` in the CSVs and ``on_disk`` (default the same) on disk."""
    def setup(d: Path) -> None:
        path = _first_test_clip(d)
        old = path.name
        path.rename(path.with_name(on_disk or new_name))
        for csv in ("sample_submission.csv",):
            p = d / "data" / csv
            p.write_text(p.read_text(encoding="utf-8").replace(old, new_name), encoding="utf-8")
    return setup


def _chmod(rel: str, mode: int):
    def setup(d: Path) -> None:
        (d / rel).mkdir(parents=True, exist_ok=True)
        (d / rel).chmod(mode)
    return setup


def _all(*fns):
    def setup(d: Path) -> None:
        for fn in fns:
            fn(d)
    return setup


def _garbage(path, y):
    path.write_bytes(b"RIFF\x00\x00not a wave file" * 8)


def _subtypes(d: Path) -> None:
    names = [line.split(",")[0] for line in (d / "data" / "sample_submission.csv").read_text().splitlines()[1:]]
    for name, subtype in zip(names, ("PCM_U8", "PCM_24", "PCM_32", "FLOAT")):
        path = d / "data" / "test" / name
        y, _ = sf.read(path, dtype="float32")
        sf.write(path, y, SR, subtype=subtype)


def _stereo_48k(path, y):
    import librosa

    y48 = librosa.resample(y, orig_sr=SR, target_sr=48000)
    sf.write(path, np.stack([y48, 0.5 * y48], axis=1), 48000)


def _fake_dataset(d: Path) -> None:
    """A fatlib Kaggle dataset folder whose manifest says config.json has other bytes than it has."""
    from fatlib.kaggle import _sha256

    ds = d / "ds"
    stage = ds / "weights" / "run" / "s1"
    stage.mkdir(parents=True)
    (ds / "wheels").mkdir()
    shutil.copy(_weights(d), stage / "fold0.safetensors")
    (stage / "config.json").write_text('{"n_folds": 1}\n')
    files = {p.relative_to(ds).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(ds.rglob("*")) if p.is_file()}
    (ds / "manifest.json").write_text(json.dumps({"files": files, "stages": []}))
    (stage / "config.json").write_text('{"n_folds": 2}\n')  # same size, other bytes


def _init_stage_of_width(width: float):
    def setup(d: Path) -> None:
        for k in (0, 1):
            _save(d, width=width, path=d / "w" / "run" / "s1" / f"fold{k}.safetensors")
    return setup


def _predict_with(out="out/submission.csv"):
    return [*PREDICT[:5], "--out", out, *PREDICT[7:]]


# round 3: what must never be deleted or overwritten, names, settings at the door
SELECT = ["select", "--data", "data", "--weights", "w", "--run", "run", "--rule", "stage4", "--stages", "s1",
          "--n-folds", "2", "--out"]
KAGGLE = ["kaggle-dataset", "--weights", "w/run", "--dep-wheels", "nowhere", "--out"]
RUN = ["run", "--data", "data", "--weights", "w", "--cache-dir", "cache", "--quiet"]
# "{curated_clip}", "{test_clip}" in an argv: the first clip of that folder (ran() fills them in)
DATA_FILES = ("train_curated.csv", "sample_submission.csv", "train_curated/{curated_clip}", "test/{test_clip}",
              "train_curated")  # train_noisy.csv: the select_out_on_noisy case


def _train_with(*extra, drop=()):
    """TRAIN with options replaced (``extra``: option, value pairs) or dropped."""
    argv, skip = [], set(drop) | set(extra[::2])
    i = 0
    while i < len(TRAIN):
        if TRAIN[i] in skip:
            i += 1 if TRAIN[i] in ("--quiet", "--no-auto-scale") else 2
            continue
        argv.append(TRAIN[i])
        i += 1
    return [*argv, *extra]


def _write(rel: str, text: str):
    def setup(d: Path) -> None:
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return setup


def _recipe(body: str):
    return _write("tiny.toml", 'pipeline = "single"\n' + body)


TINY_STAGE = '[stages.s1]\nepochs = 1\nn_folds = 2\n'


def _truncate(folder: str):
    """The first clip of ``data/<folder>`` cut to half its bytes: its header still says the whole length."""
    def setup(d: Path) -> None:
        path = sorted((d / "data" / folder).glob("*.wav"))[0]
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return setup


def _huge(folder: str):
    """The first clip of ``data/<folder>`` as a float WAV with samples x 1e20."""
    def setup(d: Path) -> None:
        path = sorted((d / "data" / folder).glob("*.wav"))[0]
        y, _ = sf.read(path, dtype="float32")
        sf.write(path, y * np.float32(1e20), SR, subtype="FLOAT")
    return setup


def _stage_config(n_folds: int, rel="w/run/s1"):
    return _write(f"{rel}/config.json", json.dumps({"n_folds": n_folds}) + "\n")


def _fold_copy(d: Path) -> None:
    """A 1-fold stage whose folder also holds a copy of its fold file (a file manager's "(copy)")."""
    _stage_config(1)(d)
    shutil.copy(_weights(d), _weights(d).with_name("fold0 (copy).safetensors"))


def _test_labels(d: Path) -> None:
    lines = (d / "data" / "sample_submission.csv").read_text().splitlines()
    first = lines[0].split(",")[1]
    rows = [f"{line.split(',')[0]},{first},Private" for line in lines[1:]]
    (d / "data" / "test_labels.csv").write_text("fname,labels,usage\n" + "\n".join(rows) + "\n")


def _stale_temps(d: Path) -> None:
    """What killed kaggle-dataset runs leave beside --out out/ds: their temporary folders (empty here)."""
    for name in (".ds.pid999999999.ab12cd.tmp", ".ds.x1y2z3ab.tmp", ".ds.old-999999999"):
        (d / "out" / name).mkdir()


def _fatlib_dataset(d: Path) -> None:
    """out/ds as an earlier kaggle-dataset wrote it (manifest.json, wheels/), holding this run's weights."""
    stage = d / "out" / "ds" / "weights" / "run" / "s1"
    stage.mkdir(parents=True)
    (d / "out" / "ds" / "wheels").mkdir()
    shutil.copy(_weights(d), stage / "fold0.safetensors")
    (d / "out" / "ds" / "manifest.json").write_text('{"files": {}, "stages": []}\n')


# ------------------------------------------------------------------------------------------ the table
CASES = [
    # weights integrity
    Case("weights_bit_flip", "one bit flipped in a weights file's tensors", _flip(1, 0x01), PREDICT, 1,
         ("fold0.safetensors", "damaged", "checksum")),
    Case("weights_exponent_flip", "an exponent bit flipped (a weight becomes huge or NaN)", _flip(2, 0x40), PREDICT, 1,
         ("fold0.safetensors", "damaged")),
    Case("weights_nan", "weights saved with NaN (training diverged)", lambda d: _save(d, nan=True), PREDICT, 1,
         ("fold0.safetensors", "NaN or infinite", "Retrain that fold")),
    Case("weights_without_checksum", "weights saved before checksums existed", _strip_checksum, PREDICT, 0,
         ("warning: ", "unverified (no checksum", "re-save it"), creates=("out/submission.csv",)),
    Case("kaggle_dataset_damaged", "kaggle-dataset given a damaged weights file", _flip(1, 0x01),
         ["kaggle-dataset", "--weights", "w/run", "--out", "out/ds", "--dep-wheels", "nowhere"], 1,
         ("fold0.safetensors", "damaged")),
    Case("manifest_mismatch", "predict from a fatlib dataset whose file differs from manifest.json", _fake_dataset,
         ["predict", "--data", "data", "--weights", "ds/weights/run", "--out", "out/submission.csv", "--device", "cpu"],
         1, ("config.json", "sha256 differs from manifest.json", "Re-upload")),
    Case("unknown_model", "weights metadata naming an unknown model", lambda d: _save(d, model_name="no_such_net"),
         PREDICT, 1, ("fold0.safetensors", "no_such_net", "cannot build")),
    Case("bad_model_kwargs", "weights metadata with an option the model lacks",
         lambda d: _save(d, extra_kwargs={"bogus_option": 1}), PREDICT, 1, ("fold0.safetensors", "bogus_option")),
    Case("other_classes", "weights of another class set", lambda d: _save(d, vocab=["A", "B", "C"]), PREDICT, 1,
         ("fold0.safetensors", "vocabulary mismatch")),
    Case("other_model_shape", "weights whose metadata does not fit their tensors",
         lambda d: _save(d, n_classes=7), PREDICT, 1, ("fold0.safetensors", "do not fit", "shape mismatch")),
    Case("truncated_weights", "a truncated weights file", _edit("../w/run/s1/fold0.safetensors", lambda b: b[:len(b) // 2]),
         PREDICT, 1, ("fold0.safetensors", "Re-save it")),
    # outputs that cannot be written
    Case("out_not_writable", "an output folder without write permission", _chmod("out", 0o555), PREDICT, 1,
         ("out", "permission denied", "chmod"), needs_non_root=True),
    Case("out_under_a_file", "an output path under a file", None, _predict_with("out/submission.csv/new.csv"), 1,
         ("submission.csv: not a folder",)),
    Case("file_size_limit", "a file-size limit (ulimit -f) below the outputs", None, PREDICT, 1,
         ("file-size limit", "ulimit -f"), hooks={"fsize": 2048}),
    Case("disk_full", "a full disk at predict --out", None, PREDICT, 1, ("out", "free", "free some space"),
         hooks={"free_bytes": 100}),
    Case("cache_not_writable", "a read-only cache folder", _chmod("cache", 0o555), TRAIN, 1,
         ("cache", "permission denied"), needs_non_root=True),
    Case("weights_not_writable", "a read-only weights folder", _chmod("w/run", 0o555), TRAIN, 1,
         ("s2", "permission denied"), needs_non_root=True),
    Case("debug_traceback", "the same with --debug", None, [*_predict_with("out/submission.csv/new.csv"), "--debug"],
         1, ("Traceback", "submission.csv: not a folder")),
    Case("ctrl_c_predict", "Ctrl-C during predict", None, PREDICT, 130, ("interrupted", "run the same command again"),
         hooks={"interrupt": "fatlib.predict._forward"}),
    # CSV quirks and messages that name the file
    Case("bom_sample", "a UTF-8 BOM in sample_submission.csv", _edit("sample_submission.csv", lambda b: b"\xef\xbb\xbf" + b),
         PREDICT, 0, ("wrote out/submission.csv",), creates=("out/submission.csv",)),
    Case("spaces_in_header", "spaces after the commas of its header",
         _lines("sample_submission.csv", lambda ls: "\n".join([ls[0].replace(",", ", "), *ls[1:]]) + "\n"),
         PREDICT, 0, ("wrote out/submission.csv",), creates=("out/submission.csv",)),
    Case("trailing_comma_header", "a trailing comma on every line of it",
         _lines("sample_submission.csv", lambda ls: "".join(f"{line},\n" for line in ls)),
         PREDICT, 0, ("wrote out/submission.csv",), creates=("out/submission.csv",)),
    Case("header_only_sample", "a header-only sample_submission.csv",
         _lines("sample_submission.csv", lambda ls: ls[0] + "\n"), PREDICT, 1,
         ("sample_submission.csv", "no test clips")),
    Case("trailing_comma_row", "an unquoted trailing comma on the first data row of train_curated.csv",
         _lines("train_curated.csv", lambda ls: "\n".join([ls[0], ls[1] + ",", *ls[2:]]) + "\n"), CACHE, 0,
         ("curated: 8 clips",)),
    Case("unquoted_labels", "an unquoted A,B labels field in train_curated.csv",
         _lines("train_curated.csv", lambda ls: "\n".join([ls[0], ls[1] + ",Accordion", *ls[2:]]) + "\n"), CACHE, 1,
         ("train_curated.csv", "more fields than the header", "quote a field")),
    Case("header_only_curated", "a header-only train_curated.csv", _lines("train_curated.csv", lambda ls: ls[0] + "\n"),
         TRAIN, 1, ("train_curated.csv", "n_folds=2")),
    Case("empty_csv", "an empty train_curated.csv", _edit("train_curated.csv", lambda b: b""), CACHE, 1,
         ("train_curated.csv", "empty")),
    Case("unknown_label", "an unknown label", _lines("train_curated.csv", lambda ls: "\n".join(
        [ls[0], ls[1].split(",")[0] + ",Not_a_class", *ls[2:]]) + "\n"), CACHE, 1, ("Not_a_class", "fix the spelling")),
    Case("duplicate_fname", "a duplicated fname", _lines("train_curated.csv", lambda ls: "\n".join([*ls, ls[1]]) + "\n"),
         CACHE, 1, ("train_curated.csv", "keep one row per clip")),
    Case("missing_clip", "a listed clip missing from the folder",
         lambda d: next((d / "data" / "train_curated").glob("*.wav")).unlink(), CACHE, 1,
         ("train_curated.csv", "copy the missing wav files")),
    Case("unlisted_clip", "a clip in the folder that no CSV lists",
         lambda d: shutil.copy(next((d / "data" / "train_curated").glob("*.wav")), d / "data" / "train_curated" / "x.wav"),
         CACHE, 0, ("curated: 8 clips",)),
    # settings checked before anything is written
    Case("init_from_other_width", "train-stage --init-from weights of another width", _init_stage_of_width(0.25),
         [*TRAIN, "--init-from", "s1"], 1, ("fold0.safetensors", "shape mismatch")),
    # audio
    Case("garbage_clip", "a test clip that is not audio", _rewrite_clip(_garbage), PREDICT, 1, ("re-encode it",)),
    Case("empty_clip", "a test clip with 0 samples", _rewrite_clip(lambda p, y: sf.write(p, y[:0], SR)), PREDICT, 1,
         ("0 samples; replace it",)),
    Case("nan_clip", "a test clip with NaN samples",
         _rewrite_clip(lambda p, y: sf.write(p, np.where(np.arange(len(y)) == 5, np.nan, y), SR, subtype="FLOAT")),
         PREDICT, 1, ("NaN or infinite; re-export",)),
    Case("wav_subtypes", "8-, 24-, 32-bit and float wavs", _subtypes, PREDICT, 0, ("wrote",)),
    Case("stereo_48k", "a 48 kHz stereo clip", _rewrite_clip(_stereo_48k), PREDICT, 0, ("wrote",)),
    Case("clip_10ms", "a 10 ms clip", _rewrite_clip(lambda p, y: sf.write(p, y[: SR // 100], SR)), PREDICT, 0,
         ("wrote",)),
    Case("non_ascii_name", "a non-ASCII file name", _rename_test_clip("Über café ✓.wav"), PREDICT, 0, ("wrote",)),
    Case("nfd_name", "a clip stored under its NFD name while the CSV has NFC",
         _rename_test_clip("café.wav", on_disk=unicodedata.normalize("NFD", "café.wav")), PREDICT, 0, ("wrote",)),
    Case("read_only_input", "a read-only data folder", lambda d: _chmod_tree(d / "data", 0o555, 0o444), PREDICT, 0,
         ("wrote",)),
    # interrupted runs resume
    Case("kill_during_cache", "the cache build killed (SIGKILL)", None, CACHE, -9, creates=(), then=CACHE,
         hooks={"kill": "fatlib.cache._assemble"}),
    Case("kill_during_fold", "training killed during fold 2 of 2", None, TRAIN, -9, then=TRAIN,
         hooks={"kill": "fatlib.train._train_fold", "kill_on_call": 2}),
    # round 3, rule 1: --force replaces only a folder fatlib made, holding no input of the command
    Case("force_over_data_set", "kaggle-dataset --force pointed at the data set", None, [*KAGGLE, "data", "--force"],
         1, ("data: not a --out folder fatlib made", "--force will not delete it")),
    Case("force_over_weights_root", "kaggle-dataset --force pointed at the weights root it ships from", None,
         [*KAGGLE, "w", "--force"], 1, ("w: the --out folder holds w/run, an input",)),
    Case("force_over_other_folder", "kaggle-dataset --force pointed at a folder fatlib did not make", None,
         [*KAGGLE, "out", "--force"], 1, ("out: not a --out folder fatlib made (no manifest.json",)),
    Case("force_over_a_file", "kaggle-dataset --force pointed at a file", None, [*KAGGLE, "out/submission.csv", "--force"],
         1, ("out/submission.csv: not a folder fatlib made",)),
    Case("force_over_own_input", "kaggle-dataset --force over the fatlib dataset it reads the weights from",
         _fatlib_dataset, [*KAGGLE[:2], "out/ds/weights/run", *KAGGLE[3:], "out/ds", "--force"], 1,
         ("out/ds: the --out folder holds out/ds/weights/run",)),
    Case("demo_into_a_user_folder", "demo --out a folder fatlib did not make (it holds a submission.csv)", None,
         ["demo", "--out", "out", "--quiet"], 1, ("out: not a demo folder (--out) fatlib made (no data/synth.json)",),
         absent=("out/data", "out/weights")),
    # rule 2: no output on an input
    Case("predict_out_on_labels", "predict --out data/train_curated.csv", None, _predict_with("data/train_curated.csv"),
         1, ("data/train_curated.csv: the --out file is an input of this command", "Choose another --out file")),
    Case("predict_out_on_sample", "predict --out data/sample_submission.csv", None,
         _predict_with("data/sample_submission.csv"), 1, ("sample_submission.csv: the --out file is an input",)),
    Case("predict_out_on_weights", "predict --out onto a fold file it reads", None,
         _predict_with("w/run/s1/fold0.safetensors"), 1, ("fold0.safetensors: the --out file is an input",)),
    Case("select_out_on_noisy", "select --out data/train_noisy.csv", None, [*SELECT, "data/train_noisy.csv"], 1,
         ("data/train_noisy.csv: the --out file is an input",)),
    Case("select_unfinished_stage", "select from a stage without its out-of-fold outputs", None, [*SELECT, "sel.csv"], 1,
         ("s1/noisy_lwlrap.csv: not found",), absent=("w/run/folds_noisy.csv", "sel.csv")),
    Case("eval_folder_is_a_file", "predict --out whose evaluation folder's name is a file", _all(
        _test_labels, _write("out/submission_eval", "not a folder\n")), PREDICT, 1,
         ("out/submission_eval: the evaluation folder of --out would be made here, but a file has that name",)),
    Case("out_beside_data_files", "predict --out a new file in the data folder, twice (e.g. with --data .)", None,
         _predict_with("data/submission.csv"), 0, ("wrote",), creates=("data/submission.csv",),
         then=_predict_with("data/submission.csv")),
    Case("predict_out_on_user_file", "predict --out onto a file that is not a CSV fatlib writes",
         _write("notes.txt", "my notes\n"), _predict_with("notes.txt"), 1,
         ("notes.txt: exists and is not a CSV fatlib writes", "will not replace it")),
    Case("predict_out_is_folder", "predict --out naming a folder", None, _predict_with("out"), 1,
         ("out: the --out file is a folder",)),
    Case("run_cache_in_data", "run --cache-dir inside the data set's audio folder", None,
         [*RUN[:-3], "--cache-dir", "data/test", "95th_place", "--set", "epochs=1"], 1,
         ("data/test: the --cache-dir is an input",), absent=("w/95th_place",)),
    # rule 3: names stay inside their folder
    Case("recipe_name_climbs", 'a recipe with name = "../../x"', _recipe('name = "../../x"\n' + TINY_STAGE),
         [*RUN, "tiny.toml"], 1, ("tiny.toml: recipe name", "'../../x' holds a path separator", "plain folder name"),
         absent=("../x", "w/x")),
    Case("recipe_name_absolute", 'a recipe with name = "/tmp/x"', _recipe('name = "/fatlib-x"\n' + TINY_STAGE),
         [*RUN, "tiny.toml"], 1, ("'/fatlib-x'",)),
    Case("recipe_stage_dotdot", 'a recipe with [stages.".."]', _recipe('[stages.".."]\nepochs = 1\n'),
         [*RUN, "tiny.toml"], 1, ("tiny.toml [stages]: stage name '..'",)),
    Case("stage_dotdot", "train-stage --stage ..", None, _train_with("--stage", ".."), 1, ("stage name '..'",),
         absent=("w/run/folds_curated.csv", "w/fold0.safetensors")),
    Case("run_option_climbs", "run --run ../..", None, [*RUN, "95th_place", "--run", "../.."], 1,
         ("run name", "'../..' holds a path separator")),
    Case("model_name_as_run_climbs", "train-stage --model ../x without --run (the run is named after the model)",
         None, [*_train_with("--model", "../x", drop=("--run",))], 1, ("'../x' holds a path separator",)),
    # rule 4: every setting checked at the door
    Case("recipe_string_lr", 'lr = "0.001" in a recipe', _recipe('[stage]\nlr = "0.001"\n' + TINY_STAGE),
         [*RUN, "tiny.toml"], 1, ('tiny.toml [stage]: lr = "0.001" is not a number > 0', "without quotes")),
    Case("set_lr_word", "--set lr=fast", None, [*RUN, "95th_place", "--set", "lr=fast"], 1,
         ('--set lr=fast: lr = "fast" is not a number > 0',)),
    Case("recipe_mel_number", "mel = 5 in a recipe", _recipe("[stage]\nmel = 5\n" + TINY_STAGE), [*RUN, "tiny.toml"],
         1, ("mel = 5 is not a table",)),
    Case("set_rounds_word", "--set pseudo.rounds=abc", None, [*RUN, "3rd_place", "--set", "pseudo.rounds=abc"], 1,
         ('rounds = "abc" is not a whole number >= 1',)),
    Case("config_string_wd", "--config with wd as a text", _write("cfg.json", '{"wd": "0.01"}'),
         [*TRAIN, "--config", "cfg.json"], 1, ('--config cfg.json: wd = "0.01"', "without quotes")),
    Case("set_tta_before_training", "--set predict.tta=window", None,
         [*RUN, "95th_place", "--set", "predict.tta=window"], 1, ("--set predict.tta=window", "windows, sequential"),
         absent=("w/95th_place", "cache")),
    Case("set_ensemble_before_training", "--set predict.ensemble=median", None,
         [*RUN, "95th_place", "--set", "predict.ensemble=median"], 1, ("mean, geometric",), absent=("w/95th_place",)),
    Case("later_stage_model_before_training", "a recipe whose second stage names an unknown model", None,
         [*RUN, "9th_place", "--set", "stages.selected_m1.model=no_such_net"], 1, ("unknown model 'no_such_net'",),
         absent=("w/9th_place", "cache")),
    Case("n_folds_above_noisy", "--n-folds 6 with 4 noisy clips", None, _train_with("--n-folds", "6"), 1,
         ("train_noisy.csv: the noisy split has 4 clips, fewer than n_folds=6", "--n-folds 4"),
         absent=("w/run/folds_curated.csv", "w/run/s2")),
    Case("sound_mix_on_waveforms", "`--sound-mix 0.5` with `--wave-augment`", None,
         [*TRAIN, "--wave-augment", "--sound-mix", "0.5"], 1,
         ("sound_mix_p=0.5 with wave_augment=True", "--sound-mix 0"), absent=("w/run/s2",)),
    Case("run_n_folds_above_noisy", "run a 5-fold recipe with 4 noisy clips", None, [*RUN, "95th_place"], 1,
         ("train_noisy.csv: the noisy split has 4 clips, fewer than n_folds=5", "--set n_folds=4"),
         absent=("w/95th_place",)),
    Case("recipe_sources_text", 'sources = "s1" (a text, not a list) in a recipe', _recipe(
        TINY_STAGE + '[stages.s2]\nepochs = 1\n[selection.s2]\nrule = "stage4"\nsources = "s1"\n'), [*RUN, "tiny.toml"],
         1, ('tiny.toml [selection.s2]: sources = "s1" is not a list of names',)),
    Case("init_from_other_folds", "--init-from a 2-fold stage into a 3-fold one",
         _all(_stage_config(2), _init_stage_of_width(0.125)), [*_train_with("--n-folds", "3"), "--init-from", "s1"], 1,
         ("s1/config.json: init_from stage has 2 folds there, 3 here",),
         absent=("w/run/folds_curated.csv", "w/run/s2/config.json")),
    Case("device_unavailable", "predict --device cuda:99", None, [*PREDICT[:-4], "--device", "cuda:99"], 1,
         ("--device cuda:99: not available on this machine", "--device cpu")),
    # rule 5: audio integrity
    Case("truncated_clip_predict", "a test clip cut to half its bytes (its header says twice the data)",
         _truncate("test"), PREDICT, 1, ("truncated: its header says", "copy the complete file again")),
    Case("truncated_clip_cache", "the same in train_curated at cache", _truncate("train_curated"), CACHE, 1,
         ("truncated: its header says",)),
    Case("huge_samples_predict", "a float test clip with samples x 1e20", _huge("test"), PREDICT, 1,
         ("samples up to ", "beyond 1000", "normalised to [-1, 1]")),
    Case("huge_samples_cache", "the same in train_curated at cache", _huge("train_curated"), CACHE, 1,
         ("samples up to ", "beyond 1000")),
    Case("rate_1hz", "a test clip whose header says 1 Hz", _rewrite_clip(lambda p, y: sf.write(p, y, 1)), PREDICT, 1,
         ("says 1 Hz, outside 1,000..768,000 Hz", "re-export it at its real rate")),
    # rule 6: weights discovery
    Case("fold_file_copy", 'a copy "fold0 (copy).safetensors" in a 1-fold stage', _fold_copy, PREDICT, 0,
         ("warning: ", "fold0 (copy).safetensors: ignored", "1 models"), creates=("out/submission.csv",)),
    Case("fold_beyond_n_folds", "fold1.safetensors in a 1-fold stage",
         _all(_stage_config(1), lambda d: shutil.copy(_weights(d), _weights(d).with_name("fold1.safetensors"))),
         PREDICT, 0, ("fold1.safetensors: ignored", "1 models"), creates=("out/submission.csv",)),
    # rule 7: messages and leftovers
    Case("unencodable_message", "stdout in ASCII (PYTHONIOENCODING=ascii) and a non-ASCII --out", None,
         _predict_with("out/résumé ✓.csv"), 0, ("wrote out/r\\xe9sum\\xe9 \\u2713.csv",),
         creates=("out/résumé ✓.csv",), hooks={"ascii": True}),
    Case("stale_temp_folders", "temporary folders of killed kaggle-dataset runs beside --out", _stale_temps,
         [*KAGGLE, "out/ds"], 1, ("could not get the wheels",),
         absent=("out/.ds.pid999999999.ab12cd.tmp", "out/.ds.x1y2z3ab.tmp", "out/.ds.old-999999999")),
]


def _cache_with(cache_dir: str) -> list[str]:
    return [*CACHE[:-3], cache_dir, *CACHE[-2:]]


def _rule_cases() -> list[Case]:
    """Rule 2 as a rule: every command's output option pointed at each input of the data set."""
    cases = []
    for rel in DATA_FILES:
        target, slug = f"data/{rel}", "".join(c if c.isalnum() else "_" for c in rel.replace("{", "").replace("}", ""))
        cases += [
            Case(f"rule_predict_{slug}", f"predict --out {target}", None, _predict_with(target), 1, ("an input",)),
            Case(f"rule_select_{slug}", f"select --out {target}", None, [*SELECT, target], 1, ("an input",)),
            Case(f"rule_kaggle_{slug}", f"kaggle-dataset --out {target} --force", None, [*KAGGLE, target, "--force"], 1,
                 ("not a folder fatlib made" if rel != "train_curated" else "not a --out folder fatlib made",)),
            Case(f"rule_cache_{slug}", f"cache --cache-dir {target}", None, _cache_with(target), 1, ("an input",)),
        ]
        if rel.endswith(".csv"):  # a file as the weights root
            cases.append(Case(f"rule_train_{slug}", f"train-stage --weights {target}", None,
                              _train_with("--weights", target), 1))
    return cases


CASES += _rule_cases()


def _chmod_tree(root: Path, dir_mode: int, file_mode: int) -> None:
    for p in sorted(root.rglob("*"), reverse=True):
        p.chmod(dir_mode if p.is_dir() else file_mode)
    root.chmod(dir_mode)


RUNNER = r'''
import json, os, resource, shutil, signal, sys, time, traceback
from fatlib.commands import main as cli
cli.build_parser()  # imports every command module once, before forking
# what every case would import or compile again on its own, done once here (no torch op before the forks)
import fastai.learner, fastai.callback.schedule, fastai.callback.progress, fastai.callback.training  # noqa
import fatlib.plots, fatlib.report, librosa.filters, librosa.effects, fastprogress  # noqa
from fatlib.features import clip_wave, get_preset
clip_wave(sys.argv[3], get_preset("cnn128", **json.loads(sys.argv[4])))  # librosa's first-call compilation

def hook(target, action, on_call=1):
    mod, name = target.rsplit(".", 1)
    module = __import__(mod, fromlist=[name])
    original, calls = getattr(module, name), [0]
    def wrapper(*a, **kw):
        calls[0] += 1
        if calls[0] >= on_call:
            action()
        return original(*a, **kw)
    setattr(module, name, wrapper)

def ctrl_c():
    raise KeyboardInterrupt

def run_case(case):
    """The case's commands one after the other, each in a child process; exit codes into codes.json."""
    runs = [case["argv"]] + ([case["then"]] if case["then"] else [])
    codes, start, cpu = [], time.time(), 0.0
    for i, argv in enumerate(runs):
        pid = os.fork()
        if pid == 0:
            code = 99
            try:
                os.chdir(case["dir"])
                os.umask(0o022)
                for fd, suffix in ((1, "out"), (2, "err")):
                    os.dup2(os.open(f"run{i}.{suffix}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
                hooks = case["hooks"] if i == 0 else {}
                if "fsize" in hooks:
                    resource.setrlimit(resource.RLIMIT_FSIZE, (hooks["fsize"], resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
                if "free_bytes" in hooks:
                    usage = shutil.disk_usage
                    shutil.disk_usage = lambda p: usage(p)._replace(free=hooks["free_bytes"])
                if "ascii" in hooks:  # as PYTHONIOENCODING=ascii: a message that cannot be encoded
                    sys.stdout.reconfigure(encoding="ascii", errors="strict")
                if "interrupt" in hooks:
                    hook(hooks["interrupt"], ctrl_c)
                if "kill" in hooks:
                    hook(hooks["kill"], lambda: os.kill(os.getpid(), signal.SIGKILL), hooks.get("kill_on_call", 1))
                code = cli.main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status, usage = os.wait4(pid, 0)
        codes.append(os.waitstatus_to_exitcode(status))
        cpu += usage.ru_utime + usage.ru_stime
    with open(os.path.join(case["dir"], "codes.json"), "w") as f:
        json.dump(codes, f)
    print(f"{case['name']}: {time.time() - start:.1f} s, cpu {cpu:.1f} s", file=sys.stderr)

cases = json.load(open(sys.argv[1]))
active = set()
for case in cases:  # as many cases at once as there are cores (at most 4)
    if len(active) >= min(4, len(os.sched_getaffinity(0))):
        active.discard(os.wait()[0])
    pid = os.fork()
    if pid == 0:
        try:
            run_case(case)
        finally:
            os._exit(0)
    active.add(pid)
for pid in active:
    os.waitpid(pid, 0)
results = {case["name"]: json.load(open(os.path.join(case["dir"], "codes.json"))) for case in cases}
json.dump(results, open(sys.argv[2], "w"))
'''


def _snapshot(d: Path) -> dict[str, bytes]:
    """Every file that was there before the command, except the data and inputs the case damaged."""
    skip = ("ds/",)
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and not p.relative_to(d).as_posix().startswith(skip)}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny data set, one untrained fold of a tiny model, an old submission.csv and an earlier stage s0."""
    from fatlib.synth import make_dataset

    d = tmp_path_factory.mktemp("hostile_base")
    make_dataset(d / "data", n_classes=3, n_curated=8, n_noisy=4, n_test=4, max_seconds=1.0, seed=5)
    (d / "data" / "test_labels.csv").unlink()  # no evaluation plot to draw in every case
    _save(d)
    (d / "out").mkdir()
    (d / "out" / "submission.csv").write_bytes(OLD_SUBMISSION)
    (d / "w" / "run" / "s0").mkdir(parents=True)
    (d / "w" / "run" / "s0" / "metrics.json").write_text('{"old": true}\n')
    return d


@pytest.fixture(scope="module")
def ran(base, tmp_path_factory):
    """Every case run once (module scope): {name: (case dir, exit codes, before, log of the first run)}."""
    work = tmp_path_factory.mktemp("hostile_cases")
    todo, before = [], {}
    clips = {f"{k}_clip": sorted((base / "data" / folder).glob("*.wav"))[0].name
             for k, folder in (("curated", "train_curated"), ("test", "test"))}
    for case in CASES:
        if case.needs_non_root and ROOT_USER:
            continue
        d = Path(shutil.copytree(base, work / case.name, symlinks=True))
        if case.setup is not None:
            case.setup(d)
        before[case.name] = _snapshot(d)
        argv = [a.replace("{curated_clip}", clips["curated_clip"]).replace("{test_clip}", clips["test_clip"])
                for a in case.argv]
        todo.append({"name": case.name, "dir": str(d), "argv": argv, "then": case.then, "hooks": case.hooks})
    (work / "cases.json").write_text(json.dumps(todo))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    clip = next((base / "data" / "train_curated").glob("*.wav"))
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(work / "cases.json"), str(work / "results.json"),
                           str(clip), json.dumps(MEL)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stderr)
    codes = json.loads((work / "results.json").read_text())
    yield {name: (work / name, codes[name], before[name]) for name in codes}
    for name in codes:  # let pytest remove the folders the cases made read-only
        for p in [work / name, *(work / name).rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case, ran):
    if case.needs_non_root and ROOT_USER:
        pytest.skip("root writes through permission bits: run as a normal user")
    d, codes, before = ran[case.name]
    err = (d / "run0.err").read_text(errors="replace")
    log = (d / "run0.out").read_text(errors="replace") + err
    assert codes[0] == case.code, f"exit code {codes[0]}, expected {case.code}:\n{log[-3000:]}"
    for word in case.words:
        assert word in log, f"{word!r} not in the output:\n{log[-3000:]}"
    if case.code not in (0, -9):  # an error line (problems of a data set listed below it), no traceback
        if "--debug" not in case.argv:
            assert err.startswith(("error: ", "interrupted: ")) and "Traceback" not in err, err
        else:
            assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: "), err
    for rel in case.creates:
        assert (d / rel).is_file(), f"{rel} was not written"
    replaced = set(case.creates) | ({"out/submission.csv"} if case.code == 0 and case.argv[0] == "predict" else set())
    for rel, content in before.items():
        if rel not in replaced:
            assert (d / rel).read_bytes() == content, f"{rel} changed though the command failed or did not write it"
    assert not [p for p in d.rglob("*.tmp")] or case.code == -9, "temporary files left behind"
    for rel in case.absent:
        assert not (d / rel).exists(), f"{rel} exists: something was written before the refusal"
    if case.then is not None:
        assert codes[1] == 0, (d / "run1.err").read_text()[-3000:]


def test_successful_predictions_are_complete_and_0644(ran):
    """The accepted quirks give the usual submission: the classes of sample_submission.csv (no BOM, no
    spaces, no '' class), every test clip, the NFC name of a clip stored as NFD, mode 0644."""
    import pandas as pd

    for name in ("bom_sample", "spaces_in_header", "trailing_comma_header", "nfd_name", "non_ascii_name"):
        d = ran[name][0]
        sub = pd.read_csv(d / "out" / "submission.csv")
        assert list(sub.columns) == ["fname", "Accelerating_and_revving_and_vroom", "Accordion", "Acoustic_guitar"], name
        assert len(sub) == 4 and np.isfinite(sub.iloc[:, 1:].to_numpy()).all(), name
        assert stat.S_IMODE((d / "out" / "submission.csv").stat().st_mode) == 0o644, name
    assert "café.wav" in set(pd.read_csv(ran["nfd_name"][0] / "out" / "submission.csv")["fname"])


def test_refused_init_from_leaves_nothing_that_blocks_the_fix(ran):
    d = ran["init_from_other_width"][0]
    assert not (d / "w" / "run" / "s2" / "config.json").exists()


def test_killed_runs_resume(ran):
    d = ran["kill_during_cache"][0]
    assert len(list((d / "cache").glob("curated-*.json"))) == 1 and not list((d / "cache").glob("*.parts"))
    d = ran["kill_during_fold"][0]
    assert "s2 fold 1/2" not in (d / "run1.out").read_text() + (d / "run1.err").read_text()  # fold 1 was finished before the kill: not retrained
    assert (d / "w" / "run" / "s2" / "metrics.json").is_file()


def test_python_m_fatlib_entry_point(base, tmp_path):
    """The real ``python -m fatlib``: a refusal is one line and exit 1 (--debug: the debug_traceback case)."""
    d = Path(shutil.copytree(base, tmp_path / "case"))
    _flip(1, 0x01)(d)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    res = subprocess.run([sys.executable, "-m", "fatlib", *PREDICT], cwd=d, capture_output=True, text=True, env=env)
    assert res.returncode == 1 and res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert "fold0.safetensors: damaged" in res.stderr
    assert (d / "out" / "submission.csv").read_bytes() == OLD_SUBMISSION


# ------------------------------------------------------------------------------- the rules, in-process
@pytest.mark.parametrize("name", ["..", ".", "a/b", "../x", "/tmp/x", "a\\b", "", " ", "x\ny", "C:x", 5, None])
def test_plain_names_refuse_what_climbs_out(name):
    from fatlib.errors import DataError
    from fatlib.guards import check_plain_name

    with pytest.raises(DataError, match="plain folder name"):
        check_plain_name(name, what="stage name", source="r.toml [stages]")


def test_plain_names_accept_folder_names():
    from fatlib.guards import check_plain_name

    for name in ("stage1", "round2", "my run", "95th_place", "x.v2", "café"):
        assert check_plain_name(name, what="run name") == name


def test_every_stage_field_is_type_checked():
    """Each StageConfig field given a value of the wrong type is one DataError naming the field and its
    source; the right type passes (the defaults of StageConfig)."""
    import dataclasses

    from fatlib.errors import DataError
    from fatlib.setting_rules import STAGE_RULES, check_settings
    from fatlib.train import StageConfig

    fields = {f.name for f in dataclasses.fields(StageConfig)}
    choice_fields = {"train_on", "keep", "schedule"}  # checked by StageConfig.validate against its choices
    assert fields - choice_fields == set(STAGE_RULES)
    defaults = StageConfig(name="s").to_dict()
    check_settings(defaults, source="defaults")
    for key in STAGE_RULES:
        bad = [5] if isinstance(defaults[key], dict) else [[[1]]]  # a number for a table, else a list of lists
        bad += ["0.5"] if isinstance(defaults[key], (int, float)) else []  # a number or true/false as a text
        for value in bad:
            with pytest.raises(DataError, match=rf"^src: .*{key}"):
                check_settings({key: value}, source="src")
        with pytest.raises(DataError):
            StageConfig.from_dict({**defaults, key: bad[0]})


@pytest.mark.parametrize("kind,key,value", [
    ("predict", "tta", "window"), ("predict", "ensemble", "median"), ("predict", "rescale", "yes"),
    ("predict", "stages", ["../s"]), ("predict", "step_frames", 0), ("pseudo", "rounds", "abc"),
    ("pseudo", "threshold", 2), ("pseudo", "init_from_previous", 1), ("selection", "rule", "best"),
    ("selection", "sources", "s1/.."), ("selection", "n_best", -1), ("stage", "lr", float("nan")),
    ("stage", "epochs", True), ("stage", "wave_effects", {"reverb": 2}), ("stage", "mel", {"n_mels": "64"}),
])
def test_table_values_are_range_checked(kind, key, value):
    from fatlib.errors import DataError
    from fatlib.setting_rules import check_settings

    with pytest.raises(DataError, match=rf"^src: .*{key}"):
        check_settings({key: value}, source="src", kind=kind)


def test_os_error_without_a_path_names_the_commands_outputs():
    import errno
    from argparse import Namespace

    from fatlib.preflight import os_error_line, output_folders

    args = Namespace(out="out/submission.csv", weights="w", cache_dir="cache")
    line = os_error_line(OSError(errno.ENOSPC, "No space left on device"), outputs=output_folders(args))
    assert line.startswith("while writing under out, w, cache") and "no space left on the device" in line
    e = OSError(errno.ENOSPC, "No space left on device", "/k/.ds.pid42.ab_c9.tmp/wheels/x.whl")
    assert os_error_line(e).startswith("/k/ds/wheels/x.whl: cannot write")  # the folder being built, by its name


def test_stale_temp_folders_of_live_processes_are_kept(tmp_path):
    from fatlib.guards import clean_stale_temps, temp_prefix

    mine = tmp_path / f"{temp_prefix('ds')}abc.tmp"  # this process: alive
    dead = tmp_path / ".ds.pid999999999.abc.tmp"
    other = tmp_path / ".other.pid999999999.abc.tmp"  # another output's: not this one's business
    for p in (mine, dead, other):
        p.mkdir()
    assert clean_stale_temps(tmp_path, name="ds") == [dead]
    assert mine.is_dir() and other.is_dir()
    old = tmp_path / ".ds.old-999999999"  # killed after moving ds away, before moving the new one in
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    assert clean_stale_temps(tmp_path, name="ds") == [] and (tmp_path / "ds" / "manifest.json").is_file()


def test_wav_shortfall_reads_the_header():
    import io

    from fatlib.audio import wav_shortfall
    buf = io.BytesIO()
    sf.write(buf, np.zeros(1000, np.float32), SR, format="WAV", subtype="PCM_16")
    data = buf.getvalue()
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"fatlib-short-{os.getpid()}.wav"
    try:
        tmp.write_bytes(data)
        assert wav_shortfall(tmp) is None
        tmp.write_bytes(data[:-500])
        assert wav_shortfall(tmp) == (2000, 1500)
    finally:
        tmp.unlink()


def test_weights_write_hitting_a_limit_is_an_os_error_naming_the_file(tmp_path):
    """safetensors reports a failed write as its own error type: save_weights makes it an OSError naming the
    file (so the command prints one line), and leaves no file behind."""
    code = r"""
import errno, resource, signal, sys, torch
from fatlib.preflight import os_error_line
from fatlib.checkpoint import save_weights
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.RLIM_INFINITY))
try:
    save_weights(sys.argv[1], torch.nn.Linear(1000, 100), model_name="x", model_kwargs={}, mel_config={}, vocab=["a"])
except OSError as e:
    assert e.errno == errno.EFBIG, e
    print(os_error_line(e))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "fold0.safetensors")], capture_output=True,
                         text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith(f"{tmp_path / 'fold0.safetensors'}: cannot write") and "ulimit -f" in res.stdout
    assert list(tmp_path.iterdir()) == []
