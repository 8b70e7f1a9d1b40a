"""numba's threads for the scan kernels: torch's own OpenMP threads, as many as torch uses.

Importing this module puts numba's OpenMP threading layer first (numba tries TBB first) unless
NUMBA_THREADING_LAYER or NUMBA_THREADING_LAYER_PRIORITY is set, so numba's parallel loops take
their threads from the OpenMP runtime torch uses: one pool, never both at once. Python threads of
our own instead compiled in half the time but ran slower between torch operations, whose idle
OpenMP threads spin for the cores a while (measured on 2-core Zen4 and Intel Xeon machines,
benchmarks/bench_scan.py).
"""

import functools
import os
from collections.abc import Callable

import numba
import numpy as np
import torch
from torch import Tensor

if not {"NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY"} & os.environ.keys():
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]


@functools.cache
def start_numba_threads() -> None:
    """Start numba's threads once, keeping torch's thread count: starting its OpenMP layer sets
    OpenMP's thread count, which torch reads, to numba's NUMBA_NUM_THREADS (all cores), so a
    ``torch.set_num_threads(1)`` made before the first scan was undone by it."""
    threads = torch.get_num_threads()
    numba.get_num_threads()  # starts the threads
    torch.set_num_threads(threads)


def run_tasks(launcher: Callable, tasks: int, *args: Tensor | bool | int) -> None:
    """Run tasks 0..tasks-1 through ``launcher`` on ``args`` (tensors passed as NumPy views), in
    even runs, one for each of the threads torch uses (``torch.set_num_threads``). ``launcher``
    is a numba parallel function ``(runs, *args)`` that runs the tasks [first, end) of each row of
    ``runs`` (threads, 2) on a thread of its own."""
    start_numba_threads()
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS, tasks))
    numba.set_num_threads(threads)
    bounds = np.arange(threads + 1) * tasks // threads
    arrays = [x.numpy() if isinstance(x, Tensor) else x for x in args]
    launcher(np.stack([bounds[:-1], bounds[1:]], axis=1), *arrays)
