"""Worker processes that never outlive the process that started them.

:func:`process_pool` is a ``ProcessPoolExecutor`` whose workers

- die with their parent: on Linux the kernel sends them SIGKILL when the parent dies
  (``prctl(PR_SET_PDEATHSIG)``, through ctypes), so a ``kill -9`` of the parent leaves no worker
  computing on; elsewhere a watchdog thread in each worker polls the parent pid once a second;
- ignore Ctrl-C (SIGINT, which a terminal sends to the whole process group): the parent alone
  decides; :func:`run_all` then cancels the queued work and ends the workers.

On Linux the pool forks (the workers inherit the modules the parent has imported); other platforms
use their default start method.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Callable, Iterable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCHDOG_SECONDS = 1.0


def process_pool(max_workers: int, *, initializer: Callable[[], object] | None = None) -> ProcessPoolExecutor:
    """A pool of ``max_workers`` processes that die with this one and ignore SIGINT; each runs
    ``initializer()`` (a module-level function) once at start."""
    context = multiprocessing.get_context("fork") if sys.platform.startswith("linux") else None
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=context, initializer=_init_worker,
                               initargs=(os.getpid(), initializer))


def _init_worker(parent_pid: int, initializer: Callable[[], object] | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)
    if initializer is not None:
        initializer()


def die_with_parent(parent_pid: int) -> None:
    """Make this process end when ``parent_pid`` (its parent) ends; exits at once if it already has."""
    armed = _set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="fatlib-parent-watch").start()


def _set_parent_death_signal(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCHDOG_SECONDS)
    os._exit(1)


def run_all(pool: ProcessPoolExecutor, fn: Callable, tasks: Iterable[tuple], *,
            on_result: Callable[[int, object], None]) -> None:
    """Run ``fn(*task)`` for every task in ``pool``; call ``on_result(task number, result)`` in this
    process as each one finishes.

    The first exception, raised by a task, by ``on_result`` or in this process (Ctrl-C), cancels the
    tasks not yet started, ends the workers (SIGTERM: a task must leave nothing half-written, e.g. it
    writes through fatlib.atomic.atomic_path) and is raised once they are gone.
    """
    pending: dict[Future, int] = {}
    try:
        for k, task in enumerate(tasks):
            pending[pool.submit(fn, *task)] = k
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                on_result(pending.pop(fut), fut.result())
    except BaseException:
        for fut in pending:
            fut.cancel()
        _terminate_workers(pool)
        pool.shutdown(wait=True, cancel_futures=True)
        raise


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    """SIGTERM to every worker, tasks already handed to them included (shutdown alone would run those)."""
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()
