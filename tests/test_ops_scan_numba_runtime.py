"""How the numba scan is compiled and run: with whole 512-bit vectors, on as many threads as torch
uses, leaving torch's count as the user set it, and recompiled when a module its kernels inline
from changes. The thread and cache cases run in processes of their own: thread pools and counts
are the whole process's, and numba's cache is read when a function is first called."""

import json
import os
import subprocess
import sys

import pytest

PROBE = r"""
import json, sys
import torch
torch.set_num_threads(int(sys.argv[1]))
import numba
from ssmad.ops import selective_scan

gen = torch.Generator().manual_seed(0)
batch, dim, length, state = 2, 64, 128, 16
u = torch.randn(batch, length, dim, generator=gen).transpose(1, 2)
delta = torch.randn(batch, length, dim, generator=gen).transpose(1, 2) - 3
A = -torch.rand(dim, state, generator=gen) - 0.5
B, C = torch.randn(2, batch, 4, state, length, generator=gen)
counts = []
for _ in range(2):  # the first call starts numba's threads
    selective_scan(u, delta, A, B, C, delta_softplus=True, backend="numba")
    counts.append([torch.get_num_threads(), numba.get_num_threads()])
print(json.dumps(counts))
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_scan_follows_and_keeps_torchs_thread_count(threads):
    env = {**os.environ, "NUMBA_NUM_THREADS": "2"}  # numba's pool has 2 threads even on a 1-core machine
    out = subprocess.run([sys.executable, "-c", PROBE, str(threads)], capture_output=True, text=True, check=True, env=env)
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts == [[threads, threads], [threads, threads]]


def test_kernels_ask_llvm_for_whole_512_bit_vectors():
    """The attribute the kernels' vector width rests on reaches the compiled function's LLVM IR."""
    import numba

    from ssmad.ops.numba_intrinsics import whole_vectors

    @numba.njit
    def kernel(x):
        whole_vectors()
        return x + 1

    kernel(1.0)
    (ir,) = kernel.inspect_llvm().values()
    assert '"prefer-vector-width"="512"' in ir


CALLER = """
import numba
import helper
from ssmad.ops.numba_intrinsics import cache_keyed_on

def call(x):
    return helper.step(x)

call = cache_keyed_on(numba.njit(cache=True)(call), helper)
print(call(1.0))
"""
HELPER = """
import numba

@numba.njit(inline="always")
def step(x):
    return x + {increment}
"""


def test_cached_kernel_recompiles_when_an_inlined_module_changes(tmp_path):
    """numba's cache checks only the caller's file; keyed on the helper's too, the cached caller
    does not keep the helper's old code."""
    (tmp_path / "caller.py").write_text(CALLER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    results = []
    for increment in (1.0, 2.0, 2.0):
        (tmp_path / "helper.py").write_text(HELPER.format(increment=increment))
        out = subprocess.run([sys.executable, str(tmp_path / "caller.py")], capture_output=True, text=True,
                             check=True, env=env)
        results.append(float(out.stdout.strip().splitlines()[-1]))
    assert results == [2.0, 3.0, 3.0]
    assert list(tmp_path.glob("__pycache__/caller.call-*.nbi"))  # the cache was written
