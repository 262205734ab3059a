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
    """The Kaggle dataset folder cannot be built: no source tree, the wheel build failed, out exists."""
