"""Before the long work: can a command's outputs be written? And an OS error as one line.

:func:`check_writable` is what every command calls on each output folder before it starts computing:
it writes and removes a probe file there (permission, read-only file system, a file-size limit below
4 KiB), compares the free disk space with the expected size of the outputs where it is known, and the
largest expected file with the process's file-size limit (``ulimit -f``). A refusal is an
:class:`~fatlib.errors.OutputError` naming the folder and the fix, raised before anything is written.

:func:`os_error_line` turns an OSError that still happens later (a disk filling up during the run)
into the same kind of line; :func:`fatlib.commands.main.main` prints it instead of a traceback. Outputs are
written atomically (:mod:`fatlib.atomic`), so a failed write leaves the earlier file as it was.

The ``*_bytes`` functions estimate output sizes from what is known before the work.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Sequence

from .errors import OutputError

PROBE_BYTES = 4096
_TMP_NAME = re.compile(r"^\.(.+)\.[0-9a-f]{8}\.tmp$")  # fatlib.atomic's temporary files: name the real target
_TMP_DIR = re.compile(r"^\.(.+)\.pid\d+\.[A-Za-z0-9_]+\.tmp$")  # fatlib.guards.temp_prefix: the folder it becomes
_ELSEWHERE = "another output folder (--out, --weights, --cache-dir)"
# errno -> (what happened, the fix)
_REASONS = {
    errno.EACCES: ("permission denied", f"give yourself write permission there (chmod u+w) or choose {_ELSEWHERE}"),
    errno.EPERM: ("operation not permitted", f"give yourself write permission there or choose {_ELSEWHERE}"),
    errno.EROFS: ("read-only file system", f"choose {_ELSEWHERE} on a writable disk (on Kaggle: the working "
                  "folder /kaggle/working; ../input is read-only)"),
    errno.ENOSPC: ("no space left on the device", f"free some space (`df -h` shows what is left) or choose {_ELSEWHERE} "
                   "on another disk"),
    errno.EDQUOT: ("disk quota exceeded", f"free some space or choose {_ELSEWHERE}"),
    errno.EFBIG: ("file too large for the file system or for this process's file-size limit (ulimit -f)",
                  "raise the limit (`ulimit -f unlimited`) or write to a file system that takes large files"),
}


@contextlib.contextmanager
def errors_name(path):
    """An OSError without a path raised inside (a library's own write hitting a full disk) names ``path``."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.filename2 is None:
            e.filename = str(path)
        raise


def copy_file(src, dst) -> Path:
    """``shutil.copy2``, whose failed write (a full disk) names the destination, not the source it read."""
    try:
        return Path(shutil.copy2(src, dst))
    except OSError as e:
        if e.errno in _REASONS:
            e.filename, e.filename2 = str(dst), None
        raise


def as_os_error(e: Exception, path) -> Exception:
    """An OSError (naming ``path``) for a library's error that wraps one ("... (os error 28)", as safetensors
    writes them); ``e`` itself otherwise."""
    m = re.search(r"os error (\d+)", str(e))
    if isinstance(e, OSError) or m is None:
        return e
    return OSError(int(m.group(1)), os.strerror(int(m.group(1))), str(path))


def os_error_line(e: OSError, *, what: str | None = None, outputs: Sequence = ()) -> str:
    """One line for an OSError: the path, what happened and the fix (known errnos), else its message.
    ``what``: the output the path is (e.g. "--out folder"). ``outputs``: the command's output folders,
    named when the error carries no path (a write deep in a library hitting a full disk)."""
    path = e.filename if e.filename is not None else e.filename2
    if path is not None:
        p = Path(os.fsdecode(path))
        m = _TMP_NAME.match(p.name)
        p = p.with_name(m.group(1)) if m else p
        parts = [_TMP_DIR.sub(r"\1", part) for part in p.parts]  # a folder built in .<name>.pid<N>.<x>.tmp
        path = Path(*parts) if parts else p
    elif outputs and e.errno in _REASONS:  # a write that failed: somewhere under the outputs
        path = f"while writing under {', '.join(map(str, dict.fromkeys(outputs)))} (this command's outputs)"
    reason, fix = _REASONS.get(e.errno, (e.strerror or str(e), "check the path and try again"))
    where = f"{path}: " if path is not None else ""
    if e.errno not in _REASONS:
        return f"{where}{reason}; {fix}."
    return f"{where}cannot write{f' ({what})' if what else ''}: {reason}; {fix}. Earlier outputs are left as " \
           "they were."


def output_folders(args) -> list[str]:
    """The output folders a parsed command line names (``--out``'s folder, ``--weights``, ``--cache-dir``)."""
    found = []
    for name in ("out", "weights", "cache_dir"):
        value = getattr(args, name, None)
        if isinstance(value, (str, os.PathLike)):
            found.append(str(value) if name != "out" or Path(value).suffix == "" else str(Path(value).parent))
    return found


def check_device(device):
    """``device`` (a torch.device) when it can be used here, else a DataError line naming it and the fix."""
    import torch

    from .errors import DataError

    kind = device.type
    if kind == "cpu":
        return device
    backend = {"cuda": torch.cuda, "mps": getattr(torch.backends, "mps", None)}.get(kind) or getattr(torch, kind, None)
    available = bool(backend is not None and getattr(backend, "is_available", lambda: False)())
    count = torch.cuda.device_count() if kind == "cuda" and available else None
    if not available or (count is not None and device.index is not None and device.index >= count):
        have = "cpu" + (f", cuda:0..cuda:{torch.cuda.device_count() - 1}" if torch.cuda.is_available() else "")
        raise DataError(f"--device {device}: not available on this machine (torch {torch.__version__}; usable here: "
                        f"{have}); use --device cpu, or leave --device out to take a GPU when there is one.")
    return device


def check_writable(
    folder: str | os.PathLike,
    *,
    expected_bytes: int | None = None,
    largest_file_bytes: int | None = None,
    what: str = "output folder",
) -> Path:
    """Refuse (OutputError naming ``folder`` and the fix) when ``folder`` cannot take the outputs: a probe
    file cannot be written there (or, when ``folder`` does not exist yet, in its nearest existing parent),
    fewer than ``expected_bytes`` are free, or ``largest_file_bytes`` (default ``expected_bytes``) is above
    the file-size limit. Nothing is left behind. Returns ``folder``."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{existing}: not a folder, so the {what} {folder} cannot be made there; "
                          f"choose {_ELSEWHERE}.")
    probe = existing / f".fatlib-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            written = 0
            while written < PROBE_BYTES:  # a write stopped short by a limit fails on the next one
                written += os.write(fd, b"\0" * (PROBE_BYTES - written))
        finally:
            os.close(fd)
    except OSError as e:
        e.filename, e.filename2 = str(existing), None  # where the write failed (folder, or the parent to make it in)
        raise OutputError(os_error_line(e, what=what if existing == folder else f"{what} {folder}")) from e
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    if expected_bytes:
        free = shutil.disk_usage(existing).free
        if free < expected_bytes:
            raise OutputError(
                f"{folder}: the {what} needs about {_size(expected_bytes)}, and its disk has {_size(free)} free; "
                f"free some space (`df -h {existing}`) or choose {_ELSEWHERE} on another disk."
            )
    largest = largest_file_bytes if largest_file_bytes is not None else expected_bytes
    limit = _file_size_limit()
    if largest and limit is not None and largest > limit:
        raise OutputError(
            f"{folder}: the {what} gets a file of about {_size(largest)}, above this process's file-size limit of "
            f"{_size(limit)} (ulimit -f); raise it (`ulimit -f unlimited`) or choose {_ELSEWHERE}."
        )
    return folder


def _file_size_limit() -> int | None:
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB" if n >= 2**10 else f"{n} bytes"


# ---------------------------------------------------------------------------------- expected sizes
def submission_bytes(n_clips: int, n_classes: int) -> int:
    """A submission CSV: one row per clip, ``fname`` and a probability (~12 characters) per class."""
    return (n_clips + 1) * (48 + 12 * n_classes)


def cache_bytes(paths: Sequence[str | os.PathLike], cfg) -> int:
    """The float16 log-mels of ``paths`` under MelConfig ``cfg``, estimated from the wav sizes (16-bit:
    2 bytes a sample become ``2 * n_mels / hop_length`` bytes)."""
    wav = sum(os.stat(p).st_size for p in paths)
    return int(wav * cfg.n_mels / cfg.hop_length)


def weights_bytes(model) -> int:
    """One fold's safetensors file: every float32 tensor of the state dict."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values()) + 65536
