"""Command line: ``python -m fatlib <command> ...`` (``--help`` on each).

Each module that offers a command defines ``register_cli(subparsers)``, which adds its sub-parser
and sets ``func`` (called with the parsed arguments, returning an exit code).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# modules that contribute commands, in the order of the pipeline
COMMAND_MODULES = ["synth", "cache", "train", "select", "pipeline", "recipe_run", "predict", "kaggle", "demo"]
# commands that read earlier sessions' outputs: they get --input-roots (fatlib.runs)
INPUT_ROOT_COMMANDS = ["cache", "train-stage", "warmup", "run", "predict", "kaggle-dataset"]


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
    from .runs import add_input_roots_argument

    for name in INPUT_ROOT_COMMANDS:
        if name in sub.choices:
            add_input_roots_argument(sub.choices[name])
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import FatlibError, missing_dependency

    command = "python -m fatlib"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        command += f" {args.command}"
        return int(args.func(args) or 0)
    except FatlibError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:  # a package missing anywhere: one line naming it and the fix
        if not e.name or e.name.split(".")[0] == "fatlib":
            raise
        print(f"error: {missing_dependency(e.name, needed_by=command)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
