"""Command line: ``python -m fatlib <command> ...`` (``--help`` on each).

Each command is a module of this package (listed in ``fatlib.commands.COMMANDS``) whose
``register(subparsers)`` adds its sub-parser and sets ``func`` (called with the parsed arguments,
returning an exit code). This module only builds the parser from that list and handles errors.

A failure is one line on stderr, ``error: <file>: <what is wrong>; <the fix>``, and exit code 1: fatlib's
own errors, a missing package, and OS errors (no permission, no space, a file-size limit, a read-only
file system). A closed stdout (``| head``) stops the command quietly with exit code 141. Ctrl-C is ``interrupted`` and exit code 130. ``--debug`` (anywhere on the command line)
shows the traceback instead.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import traceback
import warnings


class _DescribedSubParsers(argparse._SubParsersAction):
    """Sub-parsers whose ``--help`` shows the command's one-line help when it has no description."""

    def add_parser(self, name, **kwargs):
        kwargs.setdefault("description", kwargs.get("help"))
        parser = super().add_parser(name, **kwargs)
        _add_debug(parser, default=argparse.SUPPRESS)  # SUPPRESS: a --debug before the command stays set
        return parser


def _add_debug(parser: argparse.ArgumentParser, *, default) -> None:
    parser.add_argument("--debug", action="store_true", default=default,
                        help="on an error, show the traceback instead of the one-line message")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fatlib", description=__doc__.splitlines()[0])
    _add_debug(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", action=_DescribedSubParsers)
    from . import COMMANDS

    for name in COMMANDS:
        importlib.import_module(f"fatlib.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..errors import FatlibError, missing_dependency
    from ..preflight import os_error_line, output_folders

    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    command = "python -m fatlib"
    args = None
    for stream in (sys.stdout, sys.stderr):  # a message that cannot be encoded never fails a finished command
        getattr(stream, "reconfigure", lambda **kw: None)(errors="backslashreplace")
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        command += f" {args.command}"
        try:
            with _warnings_as_lines():
                return int(args.func(args) or 0)
        finally:
            distrib = sys.modules.get("fatlib.distrib")  # loaded by the training commands only
            if distrib is not None:
                distrib.shutdown()  # leave the process group of a torchrun / accelerate job (no-op otherwise)
    except FatlibError as e:
        return _fail(f"error: {e}", debug)
    except ModuleNotFoundError as e:  # a package missing anywhere: one line naming it and the fix
        if not e.name or e.name.split(".")[0] == "fatlib":
            raise
        return _fail(f"error: {missing_dependency(e.name, needed_by=command)}", debug)
    except BrokenPipeError:  # the reader of stdout left (`... | head`): stop quietly, as Unix tools do
        _stdout_to_devnull()
        return 141  # 128 + SIGPIPE, what a shell reports for a tool stopped so
    except OSError as e:  # no permission, no space, a file-size limit, a read-only disk: one line
        return _fail(f"error: {os_error_line(e, outputs=output_folders(args) if args is not None else ())}", debug)
    except KeyboardInterrupt:
        return _fail(f"interrupted: {command} stopped (Ctrl-C). No file was left half-written and earlier outputs "
                     "are as they were; run the same command again (caches and training resume where they "
                     "stopped).", debug, code=130)


@contextlib.contextmanager
def _warnings_as_lines():
    """While a command runs, fatlib's own warnings (an unverified weights file, a missing noisy split)
    print as one line ``warning: ...`` instead of Python's two lines with the source line."""
    original = warnings.formatwarning
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # fatlib/

    def one_line(message, category, filename, lineno, line=None):
        if os.path.abspath(filename).startswith(package + os.sep):
            return f"warning: {message}\n"
        return original(message, category, filename, lineno, line)

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = original


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null, so that Python's final flush of what is left in its buffer does not fail
    again ("Exception ignored ... BrokenPipeError") at exit."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _fail(line: str, debug: bool, *, code: int = 1) -> int:
    """Print the one-line message (after the traceback with --debug) and return the exit code."""
    if debug:
        traceback.print_exc()
    print(line, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
