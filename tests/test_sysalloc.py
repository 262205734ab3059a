"""fatlib.sysalloc: applied by the training entry point (not at import), idempotent, disabled by FATLIB_NO_MALLOC_TUNING=1."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fatlib import sysalloc

PROBE = ("import json, sys, fatlib, fatlib.sysalloc as s; before = s._applied; "
         "print(json.dumps([before, s.tune_malloc() if sys.argv[1] == 'tune' else None]))")


def _probe(disable: str, action: str):
    env = dict(os.environ, FATLIB_NO_MALLOC_TUNING=disable)
    out = subprocess.run([sys.executable, "-c", PROBE, action], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(sysalloc._glibc() is None, reason="mallopt tuning only exists on glibc")
def test_import_changes_nothing_and_tuning_is_explicit():
    tuned = {"M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": 1 << 30, "M_TOP_PAD": 64 << 20}
    assert _probe("0", "tune") == [None, tuned]  # import fatlib leaves malloc alone; tune_malloc applies
    assert _probe("1", "tune") == [None, {}]  # FATLIB_NO_MALLOC_TUNING=1: nothing


def test_tune_malloc_is_idempotent(monkeypatch):
    first = sysalloc.tune_malloc()
    monkeypatch.setattr(sysalloc, "_glibc", lambda: pytest.fail("mallopt called twice"))
    assert sysalloc.tune_malloc() == first


def test_env_flag_parsing(monkeypatch):
    for value, disabled in (("1", True), ("yes", True), ("0", False), ("", False)):
        monkeypatch.setenv(sysalloc.ENV_DISABLE, value)
        assert sysalloc.tuning_disabled() is disabled


@pytest.mark.skipif(sysalloc._glibc() is None, reason="mallopt tuning only exists on glibc")
def test_inference_tuning_returns_freed_memory_unless_disabled():
    probe = "import json, fatlib.sysalloc as s; print(json.dumps(s.tune_malloc_for_inference()))"
    for disable, want in (("0", {"M_MMAP_THRESHOLD": 1 << 20, "M_ARENA_MAX": 2}), ("1", {})):
        env = dict(os.environ, FATLIB_NO_MALLOC_TUNING=disable)
        out = subprocess.run([sys.executable, "-c", probe], env=env, check=True, capture_output=True, text=True)
        assert json.loads(out.stdout) == want
