"""The worker's C allocator settings (glibc only).

Each TLS record the event loop decrypts is read into a fresh 256 KiB buffer (uvloop's
``SSL_READ_MAX_SIZE``), shrunk to the record's size and freed. glibc serves an
allocation that large with ``mmap`` until its dynamic threshold rises, and a buffer
shrunk before it is freed never raises it, so each request on a kept-alive TLS
connection cost three more system calls (``mmap``, ``mremap``, ``munmap``) and a page
fault. Allocations up to :data:`MMAP_THRESHOLD` now come from the heap, and up to
:data:`TRIM_THRESHOLD` of free memory at its top is kept for the next one rather than
given back and asked for again.
"""

from __future__ import annotations

import ctypes
import platform

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_buffers_on_the_heap"]

#: allocations up to this size come from the heap, not from their own mapping
MMAP_THRESHOLD = 1024 * 1024
#: free memory at the top of the heap kept for the next allocations
TRIM_THRESHOLD = 4 * 1024 * 1024

# mallopt(3) parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_buffers_on_the_heap() -> bool:
    """Set the thresholds in this process; False where the C library is not glibc (or
    refuses)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
