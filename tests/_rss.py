"""Peak memory of one ``python -m fatlib ...`` command, measured in the child itself.

``ru_maxrss`` from ``os.wait4`` is not the child's own peak on Linux: the kernel carries the forking
process's resident size over ``exec``, so a child of a pytest process that has grown past the bound
reports the parent's size. ``VmHWM`` in ``/proc/self/status`` belongs to the child's own address space
(reset at ``exec``): the child writes it when the command ends."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

_WRAPPER = r"""
import os, runpy, sys
code = 0
try:
    sys.argv = ["fatlib", *sys.argv[1:]]
    runpy.run_module("fatlib", run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
finally:
    with open("/proc/self/status") as f:
        hwm_kib = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(os.environ["FATLIB_TEST_HWM_FILE"], "w") as f:
        f.write(hwm_kib)
sys.exit(code)
"""


def fatlib_peak_rss(args, *, env=None, cwd=None) -> tuple[int, str, float]:
    """Run ``python -m fatlib *args``; return (exit code, stdout + stderr, the child's peak RSS in MiB)."""
    with tempfile.TemporaryDirectory() as d:
        hwm = Path(d) / "hwm"
        res = subprocess.run([sys.executable, "-c", _WRAPPER, *map(str, args)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, cwd=cwd,
                             env={**(env if env is not None else os.environ), "FATLIB_TEST_HWM_FILE": str(hwm)})
        return res.returncode, res.stdout, int(hwm.read_text()) / 1024
