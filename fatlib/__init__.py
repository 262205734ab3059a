"""fatlib: FAT2019-style multi-label audio tagging.

Importing fatlib (or any of its modules) changes nothing process-wide: the malloc tuning of
fatlib.sysalloc is applied by the command line and the training entry points, not at import.
"""
__version__ = "0.1.0"
