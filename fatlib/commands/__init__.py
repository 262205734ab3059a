"""Command-line commands, one module each: ``register(subparsers)`` adds the command's sub-parser and
sets ``func`` (called with the parsed arguments, returning an exit code). :data:`COMMANDS` lists the
modules in order (``fatlib.cli`` registers them)."""

COMMANDS = ["tag"]
