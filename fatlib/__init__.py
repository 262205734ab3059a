"""fatlib: FAT2019-style multi-label audio tagging."""
__version__ = "0.1.0"
