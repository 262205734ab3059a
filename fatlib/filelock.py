"""One writer at a time across processes: an exclusive ``flock`` on a lock file beside the output.

:func:`exclusive_lock` holds the lock for a ``with`` block; another process (a second ``python -m fatlib
cache``, another rank of a distributed run) blocks in it until the holder leaves the block or dies:
the kernel drops a ``flock`` when its holder's last file descriptor closes, so a ``kill -9`` never
leaves a stale lock behind. The holder removes the lock file as it leaves; a waiter that then gets the
lock on the removed file notices (its descriptor no longer names the path) and locks the path again.

Where ``fcntl`` does not exist (Windows), the ``filelock`` package locks instead (``msvcrt`` locking; it is
installed with torch). On POSIX fatlib keeps its own ``flock`` loop: ``filelock``'s Unix lock leaves its lock
file behind (removing it safely needs the re-check after waiting done here), and a finished cache folder
holds no lock file.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, *, on_wait: Callable[[], None] | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` (created, with its folder, if missing) for the block.

    ``on_wait`` is called once, before blocking, when another process holds the lock. The lock file is
    removed when the block ends (normally or by an exception). Yields ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        with _portable_lock(path, on_wait):
            yield path
        return
    fd = _acquire(path, on_wait)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # still ours: a waiter that gets this inode sees it unlinked and retries
        fcntl.flock(fd, fcntl.LOCK_UN)  # also for any forked child that inherited the descriptor
        os.close(fd)


def _acquire(path: Path, on_wait: Callable[[], None] | None) -> int:
    told = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None and not told:
                    on_wait()
                    told = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    return fd
            except FileNotFoundError:
                pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder we waited for removed the file: lock the path anew


@contextlib.contextmanager
def _portable_lock(path: Path, on_wait: Callable[[], None] | None) -> Iterator[None]:
    """The ``filelock`` package's lock (Windows: ``msvcrt``), with the same ``on_wait`` call."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait()
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
        with contextlib.suppress(OSError):
            os.unlink(path)  # Windows removes it on release already; elsewhere nothing waits on this path
