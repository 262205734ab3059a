"""What a person reads: `train-stage` as users type it, stdout to a file (a Kaggle "Save & Run All"
log, a redirect) and in a terminal (a pty, progress bars on). Outside a terminal: plain lines, one
per epoch and one per fold, no carriage-return redraws; in a terminal the bars; either way the same
lines in ``log.txt`` beside the weights."""
from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, FOLDS = 2, 2
ARGS = ["--epochs", str(EPOCHS), "--n-folds", str(FOLDS), "--no-auto-scale", "--batch-size", "16",
        "--model-kwargs", '{"width_mult": 0.125}', "--mel", '{"n_mels": 32, "crop_frames": 32}']
EPOCH_LINE = re.compile(r"^stage fold (\d)/2 epoch (\d)/2: train_loss [\d.]+, valid_loss [\d.]+, lwlrap [\d.]+ \(\d+ s\)$")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("FATLIB_PROGRESS", "CI")}
    return {**env, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}


def _command(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "fatlib", "train-stage", "--data", str(data), "--weights", str(out / "w"),
            "--cache-dir", str(out / "cache"), *ARGS]


def _check_log_file(out: Path) -> list[str]:
    (stage,) = [p for p in (out / "w").glob("*/stage") if p.is_dir()]
    text = (stage / "log.txt").read_text()
    assert "\r" not in text
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")
    assert all(stamp.match(line) for line in text.splitlines())  # every line time-stamped
    lines = [stamp.sub("", line) for line in text.splitlines()]
    assert sum(bool(EPOCH_LINE.match(line)) for line in lines) == EPOCHS * FOLDS
    assert [i for i in range(FOLDS) if any(line.startswith(f"stage fold {i + 1}/{FOLDS} done: out-of-fold lwlrap")
                                           for line in lines)] == list(range(FOLDS))
    assert all((stage / f"fold{k}_history.csv").is_file() for k in range(FOLDS))
    return lines


@pytest.mark.slow
def test_stdout_to_a_file_is_plain_lines(tiny_dataset, tmp_path):
    with open(tmp_path / "stdout.txt", "w") as f:
        res = subprocess.run(_command(tiny_dataset, tmp_path), stdout=f, stderr=subprocess.STDOUT, cwd=tmp_path,
                             env=_env(), timeout=600)
    text = (tmp_path / "stdout.txt").read_text()
    assert res.returncode == 0, text[-3000:]
    assert "\r" not in text and "\x1b[" not in text  # no redraws, no terminal codes
    lines = text.splitlines()
    epochs = [line for line in lines if EPOCH_LINE.match(line)]
    assert len(epochs) == EPOCHS * FOLDS, text
    assert len(lines) < 40, text  # a handful of lines per fold, not one per redraw
    assert lines[-1].startswith("stage: CV lwlrap curated ") and "nan" not in lines[-1]
    # the stage's log.txt holds the same per-epoch lines (and the final one, which stdout prints once)
    logged = _check_log_file(tmp_path)
    assert [line for line in logged if EPOCH_LINE.match(line)] == epochs and logged[-1] == lines[-1]


@pytest.mark.slow
def test_terminal_shows_bars_and_still_logs_lines(tiny_dataset, tmp_path):
    master, slave = pty.openpty()
    proc = subprocess.Popen(_command(tiny_dataset, tmp_path), stdin=slave, stdout=slave, stderr=slave,
                            cwd=tmp_path, env={**_env(), "TERM": "xterm"}, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=600) == 0, b"".join(chunks)[-3000:].decode(errors="replace")
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    assert "\r" in text  # bars redraw in a terminal ...
    shown = [line.rstrip("\r").split("\r")[-1] for line in text.split("\n")]  # what the terminal shows: after the last \r
    assert sum(bool(EPOCH_LINE.match(line)) for line in shown) >= EPOCHS * FOLDS
    assert not any(re.match(r"\s*epoch\s+train_loss", line) for line in shown)  # not fastai's table as well
    _check_log_file(tmp_path)  # ... and log.txt stays plain
