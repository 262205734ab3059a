"""fatlib.filelock.exclusive_lock: one holder at a time, waiters told and served, no lock file left."""
from __future__ import annotations

import sys
import threading
import time

import pytest

from fatlib.filelock import exclusive_lock

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")


def _two_holders(path, *, check_held=None) -> list:
    """A second thread asks for the lock while the first holds it for 0.3 s; the events in order."""
    events = []
    first_in = threading.Event()

    def second():
        first_in.wait()
        with exclusive_lock(path, on_wait=lambda: events.append("waiting")):
            events.append("second in")

    t = threading.Thread(target=second)
    t.start()
    with exclusive_lock(path) as held:
        if check_held:
            check_held(held)
        first_in.set()
        time.sleep(0.3)  # flock locks of two open files conflict even within one process
        events.append("first out")
    t.join(10)
    return events


def test_second_holder_waits_then_gets_the_lock(tmp_path):
    path = tmp_path / "sub" / "x.lock"

    def check(held):
        assert held == path and path.exists()

    assert _two_holders(path, check_held=check) == ["waiting", "first out", "second in"]
    assert not path.exists()


def test_lock_released_on_exception_and_reusable(tmp_path):
    path = tmp_path / "y.lock"
    with pytest.raises(RuntimeError):
        with exclusive_lock(path):
            raise RuntimeError("boom")
    told = []
    with exclusive_lock(path, on_wait=lambda: told.append(1)):
        pass
    assert told == [] and not path.exists()


def test_without_fcntl_the_filelock_package_locks(tmp_path, monkeypatch):
    """Windows has no fcntl: the filelock package serialises the holders there (was: no lock at all)."""
    import fatlib.filelock

    monkeypatch.setattr(fatlib.filelock, "fcntl", None)
    assert _two_holders(tmp_path / "w.lock") == ["waiting", "first out", "second in"]
