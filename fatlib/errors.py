"""Exceptions fatlib raises for bad input. Each message names the offending file and the fix."""


class FatlibError(Exception):
    """Base class of every error fatlib raises on purpose."""


class AudioError(FatlibError, ValueError):
    """An audio file cannot be used: unreadable, empty, non-finite samples."""


class DataError(FatlibError, ValueError):
    """A data set (CSV, folder layout, labels, folds) is inconsistent."""


class WeightsError(FatlibError, ValueError):
    """Saved weights do not fit the model, the preset or the vocabulary they are loaded for."""


class ModelError(FatlibError, ValueError):
    """A model cannot be created with these arguments, or an input does not fit it."""


class PackagingError(FatlibError, ValueError):
    """The Kaggle dataset folder cannot be built (no source tree, a failed wheel build or download, out
    exists) or is damaged (a file missing or differing from its manifest.json)."""


class DependencyError(FatlibError, ImportError):
    """A package fatlib needs is not installed."""


class OutputError(FatlibError, OSError):
    """An output cannot be written: no permission, a read-only file system, no space, a file-size limit."""


# import name -> package name, where they differ
PACKAGE_NAMES = {"iterstrat": "iterative-stratification", "sklearn": "scikit-learn", "yaml": "pyyaml"}


def missing_dependency(module: str, *, needed_by: str) -> DependencyError:
    """The one-line error for a missing ``module``: the package to install and how, offline on Kaggle too."""
    top = module.split(".")[0]
    package = PACKAGE_NAMES.get(top, top)
    return DependencyError(
        f"the package {package} (import {top}) is not installed, and {needed_by} needs it. Install it with "
        f"`pip install {package}`; on Kaggle without internet, attach the fatlib dataset (python -m fatlib "
        "kaggle-dataset) and run the notebook's setup cell, which installs it from the dataset's wheels/."
    )


def require(module: str, *, needed_by: str):
    """``importlib.import_module(module)``; a missing package (that module's or one it imports) is a
    DependencyError naming the package and the fix instead of a bare ModuleNotFoundError."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if not e.name or e.name.split(".")[0] == "fatlib":
            raise
        raise missing_dependency(e.name, needed_by=needed_by) from None
