"""Command line: ``python -m fatlib <command> ...`` (``--help`` on each).

Each module that offers a command defines ``register_cli(subparsers)``, which adds its sub-parser
and sets ``func`` (called with the parsed arguments, returning an exit code).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# modules that contribute commands, in the order of the pipeline
COMMAND_MODULES = ["synth", "cache", "train", "select", "pipeline", "predict", "kaggle", "demo"]


class _DescribedSubParsers(argparse._SubParsersAction):
    """Sub-parsers whose ``--help`` shows the command's one-line help when it has no description."""

    def add_parser(self, name, **kwargs):
        kwargs.setdefault("description", kwargs.get("help"))
        return super().add_parser(name, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fatlib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", action=_DescribedSubParsers)
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"fatlib.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"fatlib.{name}":
                continue  # module not written yet
            raise
        register = getattr(mod, "register_cli", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .errors import FatlibError

    try:
        return int(args.func(args) or 0)
    except FatlibError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
