"""fatlib: FAT2019-style multi-label audio tagging.

Importing fatlib changes nothing process-wide: the glibc malloc tuning for CPU training
(:func:`fatlib.sysalloc.tune_malloc`) is applied by the training entry point (``train_stage``) only,
so inference keeps glibc's defaults, which return freed memory to the system.

``fatlib.Tagger`` tags any audio files with trained weights (:mod:`fatlib.tagger`).
"""
__version__ = "0.1.0"

__all__ = ["Tagger"]


def __getattr__(name: str):
    """``fatlib.Tagger`` (:class:`fatlib.tagger.Tagger`), imported on first use: ``import fatlib`` stays light."""
    if name == "Tagger":
        import importlib  # by name: the package itself depends on no module (fatlib.kaggle reads __version__)

        return importlib.import_module("fatlib.tagger").Tagger
    raise AttributeError(f"module 'fatlib' has no attribute {name!r}")
