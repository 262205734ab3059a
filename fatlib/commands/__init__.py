"""The command line's commands, one module each: ``register(subparsers)`` adds the command's sub-parser and
sets ``func`` (called with the parsed arguments, returning an exit code). The domain modules hold no
argparse; a command module imports them inside ``func``, so ``--help`` stays light."""

# in the order of the pipeline (``python -m fatlib --help`` lists them so)
COMMANDS = ["synth", "cache", "train_stage", "select", "warmup", "run", "predict", "kaggle_dataset", "demo", "tag"]
