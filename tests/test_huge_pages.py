"""The ssmad command asks PyTorch for huge pages before torch allocates: a fresh 64 MiB tensor
then costs hundreds of page faults, not 16384 (4 KiB pages); THP_MEM_ALLOC_ENABLE=0 keeps the
default. Each case runs in a fresh process (PyTorch reads the variable once)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
PROBE = """
import resource, os
import ssmad.cli  # what the ssmad command imports first
import torch
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.empty(16 * 2**20).fill_(1.0)  # 64 MiB
print(os.environ["THP_MEM_ALLOC_ENABLE"], resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def probe(setting: str | None) -> tuple[str, int]:
    """(THP_MEM_ALLOC_ENABLE as the process saw it, page faults of a fresh 64 MiB tensor)."""
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if setting is not None:
        env["THP_MEM_ALLOC_ENABLE"] = setting
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env)
    seen, faults = out.stdout.split()
    return seen, int(faults)


@pytest.mark.skipif(not THP.exists() or "[never]" in THP.read_text(), reason="no transparent huge pages here")
def test_the_command_maps_large_tensors_on_huge_pages():
    seen, faults = probe(None)
    assert seen == "1" and faults < 4096
    seen, faults = probe("0")
    assert seen == "0" and faults >= 16384
