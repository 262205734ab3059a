"""benchmarks/gpu_check.py: without a GPU it says so and exits 0; its CPU-runnable checks run (--cpu-smoke)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _run(*args, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(SCRIPT.parents[1]))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the script measures instead")
def test_without_a_gpu_it_prints_no_gpu_rows_and_exits_0():
    out = _run()
    assert out.returncode == 0, out.stderr
    assert "no GPU" in out.stdout
    table = out.stdout[out.stdout.index("check "):].splitlines()
    assert len(table) == 1 + 5 and all(line.rstrip().endswith("no GPU") for line in table[1:])


def test_dry_run_lists_the_checks_and_bad_names_are_refused():
    out = _run("--dry-run")
    assert out.returncode == 0 and [line.split()[0] for line in out.stdout.splitlines()] == \
        ["step", "pinned", "wave", "nccl", "kernel"]
    bad = _run("--only", "tpu")
    assert bad.returncode == 2 and "unknown ['tpu']" in bad.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU smoke run only where no GPU is present")
def test_cpu_smoke_runs_the_waveform_path_and_reports_what_needs_cuda():
    out = _run("--cpu-smoke", "--only", "wave,pinned,nccl")
    assert out.returncode == 0, out.stderr
    lines = {line.split(" | ")[0].strip(): line for line in out.stdout.splitlines() if " | " in line}
    assert "clips/s" in lines["3rd-place waveform path"] and "batched on cpu" in lines["3rd-place waveform path"]
    assert "needs CUDA" in lines["pinned transfers"] and "needs 2" in lines["2-GPU NCCL"]
