"""Transparent huge pages for PyTorch's large CPU tensors.

Every large CPU tensor is fresh memory from the operating system, and the first touch of each
4 KiB page costs a fault and a zero-fill: about 40 ms per 64 MB measured on a 2-core Zen4, a third
of the selective scan's forward at (8, 4x128, 4096), more in its backward, whose gradients are as
large. PyTorch maps allocations of 2 MB and more on huge pages when the environment variable
THP_MEM_ALLOC_ENABLE=1 is set (where the kernel allows it, Linux's default "madvise" mode), 512
times fewer faults. PyTorch reads the variable once, at its first allocation, so it must be set
before torch allocates anything: the ``ssmad`` command sets it before it imports torch; in a
script, call :func:`enable_huge_pages` (or set the variable) before importing torch.
THP_MEM_ALLOC_ENABLE=0 in the environment turns it off.
"""

import os

THP_ENV = "THP_MEM_ALLOC_ENABLE"


def enable_huge_pages() -> None:
    """Set THP_MEM_ALLOC_ENABLE=1 unless the environment already says otherwise."""
    os.environ.setdefault(THP_ENV, "1")
