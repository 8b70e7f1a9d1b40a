"""Freed memory kept for reuse: large CPU tensors without a fresh page fault for every page.

glibc's malloc serves every block of 32 MB or more (a (8, 4096, 512) float32 scan output is 64 MB)
with a fresh ``mmap`` and hands it back to the system on ``free``. The next tensor of that size
is fresh memory again, and the system must map and zero each 4 KB page the first time it is
written: on the 2-vCPU virtual machine of docs/benchmarks.md, the scan's fresh outputs cost
about 55 ms of its 220 ms forward and backward (docs/benchmarks.md). Asking malloc to keep
freed memory (no ``mmap`` for large blocks, no trimming of the heap's top) makes the next large
tensor reuse those pages, as PyTorch's CPU tuning guide gets from jemalloc or TCMalloc.

The cost: the process keeps the memory of its peak instead of shrinking after it. The ``ssmad``
command does this for its batch commands (train, test, predict, calibrate, demo), not for ``serve``;
library users call :func:`keep_freed_memory` themselves. Other C libraries than glibc (musl,
macOS) are left as they are.
"""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD = -1  # glibc's <malloc.h> parameter numbers
_M_MMAP_MAX = -4
_KEEP_AT_TOP = 2**31 - 1  # bytes of free memory at the heap's top before malloc hands any back (an int)


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse for the rest of the process (see the module
    docstring). Returns whether it did: False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc's own: musl and macOS also have a mallopt, with other meanings
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_AT_TOP))
