"""fatlib.sysalloc: applied by the CLI (not at import), idempotent, disabled by FATLIB_NO_MALLOC_TUNING=1."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fatlib import sysalloc

PROBE = "import json, fatlib.sysalloc as s; print(json.dumps([s._applied, s.tune_malloc(), s._applied]))"


def _probe(disable: str):
    env = dict(os.environ, FATLIB_NO_MALLOC_TUNING=disable)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(sysalloc._glibc() is None, reason="mallopt tuning only exists on glibc")
def test_import_changes_nothing_and_tune_malloc_applies_unless_disabled():
    settings = {"M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": 1 << 30, "M_TOP_PAD": 64 << 20}
    assert _probe("0") == [None, settings, settings]  # nothing at import, then the explicit call
    assert _probe("1") == [None, {}, None]


def test_cli_entry_point_tunes(monkeypatch, capsys):
    from fatlib import cli

    calls = []
    monkeypatch.setattr(sysalloc, "tune_malloc", lambda: calls.append(1) or {})
    assert cli.main([]) == 2  # no command: help
    assert calls == [1] and "usage" in capsys.readouterr().out


def test_tune_malloc_is_idempotent(monkeypatch):
    first = sysalloc.tune_malloc()
    monkeypatch.setattr(sysalloc, "_glibc", lambda: pytest.fail("mallopt called twice"))
    assert sysalloc.tune_malloc() == first


def test_env_flag_parsing(monkeypatch):
    for value, disabled in (("1", True), ("yes", True), ("0", False), ("", False)):
        monkeypatch.setenv(sysalloc.ENV_DISABLE, value)
        assert sysalloc.tuning_disabled() is disabled
