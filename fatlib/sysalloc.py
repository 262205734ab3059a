"""glibc malloc settings that remove the page-fault slowdown of CPU training on large tensors.

By default glibc serves every allocation above a (dynamic) threshold of 128 KiB-32 MiB with a fresh
``mmap`` and gives it back with ``munmap`` when freed. A conv net on CPU allocates and frees
activation and gradient buffers of several MiB on every batch, so each batch faults in (and zeroes)
the same pages again: most of the time goes to the kernel, not to the arithmetic.

:func:`tune_malloc` calls ``mallopt`` (via ctypes) so that freed memory is kept and reused:

* ``M_MMAP_MAX = 0``: large blocks come from the heap instead of one ``mmap`` each;
* ``M_TRIM_THRESHOLD = 1 GiB``: free memory at the top of the heap is not returned to the system
  after every batch;
* ``M_TOP_PAD = 64 MiB``: the heap grows in large steps (fewer ``brk`` calls and faults).

The price is a higher resident size (memory freed by Python/torch stays in the process for reuse,
and the peak grows with every differently sized allocation), so it is not applied at ``import
fatlib``: the CPU training entry point (``fatlib.train.train_stage``) calls it; inference does not.
``FATLIB_NO_MALLOC_TUNING=1`` turns it off; off glibc (macOS, Windows, musl) it does nothing. ``benchmarks/bench_features.py`` measures the effect.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV_DISABLE = "FATLIB_NO_MALLOC_TUNING"

# mallopt parameter numbers from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
M_ARENA_MAX = -8

SETTINGS = {
    "M_MMAP_MAX": (M_MMAP_MAX, 0),
    "M_TRIM_THRESHOLD": (M_TRIM_THRESHOLD, 1 << 30),
    "M_TOP_PAD": (M_TOP_PAD, 64 << 20),
}

# inference (``python -m fatlib predict``): every block of 1 MiB or more gets its own mmap and goes back
# to the system when freed (a fixed threshold: glibc's dynamic one lets blocks up to 32 MiB pile up in
# the heap), and two arenas for the decoding threads. Peak RSS of predict, 100 clips, CNN-model-1:
# 1642 MiB with glibc defaults, 1391 MiB with these.
INFERENCE_SETTINGS = {
    "M_MMAP_THRESHOLD": (M_MMAP_THRESHOLD, 1 << 20),
    "M_ARENA_MAX": (M_ARENA_MAX, 2),
}

_applied: dict[str, int] | None = None


def _glibc():
    """The loaded C library if it is glibc (it has ``gnu_get_libc_version``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc


def tune_malloc() -> dict[str, int]:
    """Apply :data:`SETTINGS` with ``mallopt`` once per process; return the settings in force.

    Idempotent: later calls return the same dict without calling ``mallopt`` again. Returns an empty
    dict off glibc or when ``FATLIB_NO_MALLOC_TUNING=1``. Raises OSError if glibc rejects a setting (it never should on glibc >= 2.0).
    """
    global _applied
    if _applied is not None:
        return dict(_applied)
    if tuning_disabled():
        return {}
    libc = _glibc()
    applied: dict[str, int] = {}
    if libc is not None:
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        for name, (param, value) in SETTINGS.items():
            if libc.mallopt(param, value) != 1:
                raise OSError(f"glibc mallopt({name}, {value}) failed; set {ENV_DISABLE}=1 to skip tuning")
            applied[name] = value
    _applied = applied
    return dict(applied)


def tuning_disabled() -> bool:
    """True when the environment asks fatlib not to touch malloc (``FATLIB_NO_MALLOC_TUNING=1``)."""
    return os.environ.get(ENV_DISABLE, "").strip() not in ("", "0")


def tune_malloc_for_inference() -> dict[str, int]:
    """Apply :data:`INFERENCE_SETTINGS` (freed large blocks go back to the system, so peak RSS follows
    the memory in use) unless :func:`tune_malloc` was applied or tuning is disabled. Returns what was set."""
    if _applied or tuning_disabled():
        return {}
    libc = _glibc()
    if libc is None:
        return {}
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return {name: value for name, (param, value) in INFERENCE_SETTINGS.items() if libc.mallopt(param, value) == 1}
