"""glibc malloc settings that give decoded images' memory back to the system.

Pillow allocates image memory in blocks of up to 16 MiB. glibc serves such sizes from mmap at
first, but raises its mmap threshold after each one is freed (up to 32 MiB), so later images land
in the heap arenas (one per thread, up to 8 per core), where freed memory mostly stays in the
process. A fixed threshold keeps every large block in mmap (returned on free), and few arenas
keep the heap itself small.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("fdl.gateway")

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_malloc(mmap_threshold: int = 256 * 1024, arena_max: int = 2) -> bool:
    """Apply the settings; False where the C library is not glibc (nothing to tune)."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
    return bool(mallopt(_M_ARENA_MAX, arena_max) == 1 and ok)
