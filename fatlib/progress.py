"""Progress a person can read, in a terminal, a notebook and a log file.

In a terminal or a notebook, fastprogress bars (redrawn in place). Anywhere else (stdout redirected to
a file, a Kaggle "Save & Run All" log, CI) plain lines: a bar's carriage-return redraws would pile up
there. ``FATLIB_PROGRESS=bars|lines`` overrides the choice.

- :func:`bars_enabled`: which of the two applies to this process now.
- :func:`progress`: an iterable that shows a bar, or prints a line every ``every_percent`` percent.
- :class:`Counter`: progress of work counted in units (clips) that may start part-done (a resumed job).
- :class:`LineLog`: lines to stdout and, when given a path, appended to a log file as well.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
MODES = ("bars", "lines")


def in_notebook() -> bool:
    """True inside a Jupyter / IPython kernel (bars render as HTML there)."""
    shell = sys.modules.get("IPython") and getattr(sys.modules["IPython"], "get_ipython", lambda: None)()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def bars_enabled() -> bool:
    """Bars in a terminal or notebook; plain lines elsewhere (``FATLIB_PROGRESS`` overrides)."""
    mode = os.environ.get("FATLIB_PROGRESS", "").strip().lower()
    if mode in MODES:
        return mode == "bars"
    if in_notebook():
        return True
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def progress(items: Iterable[T], *, total: int | None = None, label: str = "", show: bool = True,
             every_percent: float = 10.0) -> Iterator[T]:
    """``items`` with progress: a fastprogress bar when :func:`bars_enabled`, else a plain line
    ``"<label>: done/total (p%), elapsed s"`` about every ``every_percent`` percent and at the end.
    ``show=False`` shows nothing."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if not show:
        yield from items
        return
    if bars_enabled():
        from fastprogress.fastprogress import progress_bar

        bar = progress_bar(items, total=total, leave=False)
        if label:
            bar.comment = label
        yield from bar
        return
    start, next_pct, done = time.perf_counter(), every_percent, 0
    for item in items:
        yield item
        done += 1
        if total:
            pct = 100.0 * done / total
            if pct + 1e-9 >= next_pct or done == total:
                print(f"{label}: {done}/{total} ({pct:.0f}%), {time.perf_counter() - start:.0f} s", flush=True)
                while next_pct <= pct + 1e-9:
                    next_pct += every_percent
    if not total:
        print(f"{label}: {done} done, {time.perf_counter() - start:.0f} s", flush=True)


class Counter:
    """Progress of ``total`` units of work, told with :meth:`update` (units done so far, which may
    start above 0 when a job resumes): a fastprogress bar when :func:`bars_enabled`, else a plain line
    ``"<label>: done/total (p%), elapsed s"`` about every ``every_percent`` percent and at the end.
    ``show=False`` shows nothing."""

    def __init__(self, total: int, *, label: str = "", show: bool = True, every_percent: float = 10.0):
        self.total, self.label, self.every_percent = int(total), label, every_percent
        self.show = show and self.total > 0
        self._start = time.perf_counter()
        self._bar = None
        self._next_pct = every_percent
        self._last = -1
        if self.show and bars_enabled():
            from fastprogress.fastprogress import progress_bar

            self._bar = progress_bar(range(self.total), leave=False)
            if label:
                self._bar.comment = label
            self._bar.update(0)  # starts its clock; a first update above 0 would fail in fastprogress

    def update(self, done: int) -> None:
        done = min(int(done), self.total)
        if not self.show or done == self._last:
            return
        first, self._last = self._last < 0, done
        if self._bar is not None:
            if done > 0:
                self._bar.update(done)
            return
        pct = 100.0 * done / self.total
        if (first and done > 0) or pct + 1e-9 >= self._next_pct or done == self.total:
            print(f"{self.label}: {done}/{self.total} ({pct:.0f}%), {time.perf_counter() - self._start:.0f} s",
                  flush=True)
            while self._next_pct <= pct + 1e-9:
                self._next_pct += self.every_percent


class LineLog:
    """Writes lines to stdout (``echo``) and appends them, with a time stamp, to ``path`` (when given)."""

    def __init__(self, path: str | os.PathLike | None = None, *, echo: bool = True):
        self.path = Path(path) if path is not None else None
        self.echo = echo
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, line: str, *, echo: bool | None = None) -> None:
        if self.echo if echo is None else echo:
            print(line, flush=True)
        if self.path is not None:
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
            except OSError as e:  # a full disk: the error names the log file
                e.filename = e.filename or str(self.path)
                raise
