"""The command line: every command has a described --help, and an error exits 1 with one
``error: ...`` line naming the problem, without a traceback."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from fatlib.commands import main as cli

COMMANDS = ["synth", "cache", "train-stage", "select", "warmup", "run", "predict", "kaggle-dataset", "demo", "tag"]
ROOT = Path(__file__).resolve().parents[1]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fatlib", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_top_level_help_lists_every_command():
    res = _run("--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: python -m fatlib")
    for command in COMMANDS:
        assert command in res.stdout
    assert set(_subparsers()) == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_describes_its_arguments(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m fatlib {command}")
    parser = _subparsers()[command]
    assert parser.description, f"{command}: the parser has no description"
    assert parser.description.split()[0] in out
    options = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    assert options
    for action in options:
        shown = action.option_strings[0] if action.option_strings else action.dest
        assert shown in out
        assert action.help, f"{command} {shown}: no help text"


def test_error_exits_1_with_one_line_and_no_traceback(tmp_path):
    missing = tmp_path / "no_such_data"
    res = _run("cache", "--data", str(missing), "--cache-dir", str(tmp_path / "cache"))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("error: ") and str(missing) in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("args", [
    ["cache", "--data-dir", "{missing}"],
    ["train-stage", "--data", "{missing}", "--run", "r", "--weights", "{tmp}/w"],
    ["warmup", "--data", "{missing}", "--run", "r", "--weights", "{tmp}/w"],
    ["run", "95th_place", "--data", "{missing}", "--weights", "{tmp}/w"],
    ["select", "--data", "{missing}", "--run", "r", "--rule", "stage4", "--stages", "s4", "--out", "{tmp}/s.csv"],
    ["predict", "--data", "{missing}", "--weights", "{tmp}/w"],
    ["kaggle-dataset", "--weights", "{missing}", "--out", "{tmp}/kd"],
])
def test_missing_input_is_an_error_line_in_every_command(args, tmp_path, capsys):
    missing = tmp_path / "missing"
    code = cli.main([a.format(missing=missing, tmp=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") and str(missing) in err


@pytest.mark.parametrize("args, words", [
    (["cache", "--data-dir", "{data}", "--preset", "nope"], "unknown mel preset 'nope'"),
    (["cache", "--data-dir", "{data}", "--jobs", "0"], "n_jobs must be a positive integer"),
    (["train-stage", "--data", "{data}", "--run", "r", "--model", "nope"], "unknown model 'nope'"),
    (["train-stage", "--data", "{data}", "--run", "r", "--loss", "nope"], "unknown loss 'nope'"),
    (["train-stage", "--data", "{data}", "--run", "r", "--augment", "nope"], "unknown augmentation 'nope'"),
    (["predict", "--data", "{data}", "--weights", "{tmp}", "--device", "nope"], "is not a torch device"),
])
def test_bad_option_is_an_error_line_before_any_work(args, words, tiny_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative default outputs (cache/, weights/) land here
    code = cli.main([a.format(data=tiny_dataset, tmp=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and words in err
    assert not (tmp_path / "cache").exists(), "the option must be checked before the cache is built"


BIG_OUTPUT = r"""
import sys, types
import fatlib.commands as commands
from fatlib.commands.main import main

def register(sub):  # a command whose output is many lines, as `tag` of a large folder prints
    sub.add_parser("lines").set_defaults(func=lambda args: [print(f"line {i}") for i in range(200_000)] and 0)

module = types.ModuleType("fatlib.commands.lines")
module.register = register
sys.modules["fatlib.commands.lines"] = module
commands.COMMANDS.append("lines")
sys.exit(main(["lines"]))
"""


def test_stdout_closed_by_the_reader_stops_quietly():
    """`python -m fatlib ... | head -1`: the reader leaves, the command stops with exit code 141 and no
    traceback or error line (BrokenPipeError is an OSError, which would otherwise read as a disk error)."""
    proc = subprocess.Popen([sys.executable, "-c", BIG_OUTPUT], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"line 0\n"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert err == ""
