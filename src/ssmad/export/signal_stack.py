"""Keep a thread's alternate signal stack valid across OpenVINO's CPU plugin.

The CPU plugin (openvino 2026.4) installs an alternate signal stack (``sigaltstack``) of its own on
the thread that first compiles a model on a Core, saving the one it replaces, and puts the saved one
back when that plugin instance is destroyed. Two Cores destroyed in the order they were made (NNCF
makes its own while ssmad's lives) leave the thread on the freed stack of the first, and the next
signal handled there (Ctrl-C: Python's handler runs on the alternate stack) crashes the process
with a segmentation fault. Measured: ``ov.Core()`` twice, one compile each, the first deleted first,
then ``os.kill(os.getpid(), SIGINT)``: exit 139.

:func:`kept_signal_stack` puts the thread's stack back as it was after each compile, so every
plugin instance saves, and later restores, that same stack whatever the order they die in.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Iterator
from contextlib import contextmanager

_STACK_T_BYTES = 64  # >= sizeof(stack_t) on Linux and macOS (24); saved and restored as raw bytes


def _sigaltstack():
    """libc's ``sigaltstack``, or None where there is none (Windows)."""
    try:
        return ctypes.CDLL(None, use_errno=True).sigaltstack
    except (OSError, AttributeError, TypeError):
        return None


_SIGALTSTACK = _sigaltstack()


@contextmanager
def kept_signal_stack() -> Iterator[None]:
    """Run the block (an OpenVINO compile, an NNCF quantisation) and put the calling thread's
    alternate signal stack back as it was before it, after collecting the garbage the block left
    (the Cores NNCF drops are destroyed inside, restoring what they saved)."""
    if _SIGALTSTACK is None:
        yield
        return
    saved = ctypes.create_string_buffer(_STACK_T_BYTES)
    if _SIGALTSTACK(None, saved) != 0:
        raise OSError(ctypes.get_errno(), "sigaltstack could not be read")
    try:
        yield
    finally:
        gc.collect()
        _SIGALTSTACK(saved, None)
