"""engine.memory: with freed memory kept, a large tensor comes from malloc's heap and its pages
are reused after it is freed; glibc's default maps each one afresh. Each case runs in a process of
its own (the setting is for the whole process), reading glibc's own account (mallinfo2)."""

import ctypes
import json
import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, json, sys
import torch
from ssmad.engine.memory import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
before = libc.mallinfo2()
x = torch.ones(16 * 2**20)  # 64 MB
during = libc.mallinfo2()
del x
after = libc.mallinfo2()
print(json.dumps({
    "kept": kept,
    "mapped_blocks_added": during.hblks - before.hblks,
    "free_in_heap_after": after.fordblks,
}))
"""


def _glibc_with_mallinfo2() -> bool:
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version
        libc.mallinfo2
    except (OSError, AttributeError):
        return False
    return True


pytestmark = pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="needs glibc 2.33 or later (mallinfo2)")


def _probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_glibc_default_maps_a_large_tensor_afresh():
    result = _probe("default")
    assert result["mapped_blocks_added"] == 1


def test_kept_memory_serves_a_large_tensor_from_the_heap_and_keeps_it_after():
    result = _probe("keep")
    assert result["kept"] is True
    assert result["mapped_blocks_added"] == 0
    assert result["free_in_heap_after"] >= 64 * 2**20  # freed, and still the process's for the next tensor


@pytest.mark.parametrize("command, kept", [("predict", True), ("serve", False)])
def test_the_command_keeps_freed_memory_for_batch_commands_only(command, kept, monkeypatch, tmp_path):
    import ssmad.engine.memory
    from ssmad.cli import main

    calls = []
    monkeypatch.setattr(ssmad.engine.memory, "keep_freed_memory", lambda: calls.append(command))
    missing = str(tmp_path / "no_run")
    main([command, missing, str(tmp_path)] if command == "predict" else [command, missing])  # fails: no such run
    assert calls == ([command] if kept else [])
