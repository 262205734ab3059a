"""fatlib: FAT2019-style multi-label audio tagging."""
__version__ = "0.1.0"

from .sysalloc import tune_malloc as _tune_malloc
from .sysalloc import tuning_disabled as _tuning_disabled

# glibc malloc tuning for CPU training speed (see fatlib.sysalloc); FATLIB_NO_MALLOC_TUNING=1 disables it
if not _tuning_disabled():
    _tune_malloc()
