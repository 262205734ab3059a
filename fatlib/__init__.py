"""fatlib: FAT2019-style multi-label audio tagging.

Importing fatlib changes nothing process-wide: the glibc malloc tuning for CPU training
(:func:`fatlib.sysalloc.tune_malloc`) is applied by the training entry point (``train_stage``) only,
so inference keeps glibc's defaults, which return freed memory to the system.
"""
__version__ = "0.1.0"
