"""OpenVINO's CPU plugin and the thread's alternate signal stack (ssmad.export.signal_stack)."""

import ctypes
import signal
import subprocess
import sys
import textwrap

import pytest

from ssmad.export.signal_stack import kept_signal_stack

pytest.importorskip("openvino")
LIBC = ctypes.CDLL(None)

TWO_CORES_THEN_CTRL_C = textwrap.dedent("""
    import gc, os, signal
    import numpy as np, openvino as ov
    from openvino import opset13 as ops
    from ssmad.export.signal_stack import kept_signal_stack

    def compiled(core):
        image = ops.parameter([1, 4], np.float32)
        with kept_signal_stack():
            return core.compile_model(ov.Model([ops.relu(image)], [image]), "CPU")

    first_core = ov.Core(); first = compiled(first_core)
    second_core = ov.Core(); second = compiled(second_core)
    del first, first_core; gc.collect()  # the first plugin dies first, as NNCF's Cores do
    del second, second_core; gc.collect()
    received = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    os.kill(os.getpid(), signal.SIGINT)
    print("handled", received)
""")


def current_stack() -> bytes:
    """The calling thread's stack_t as raw bytes."""
    stack = ctypes.create_string_buffer(64)
    assert LIBC.sigaltstack(None, stack) == 0
    return stack.raw


def test_compiling_on_two_cores_leaves_the_threads_signal_stack_as_it_was():
    import numpy as np
    import openvino as ov
    from openvino import opset13 as ops

    before = current_stack()
    image = ops.parameter([1, 4], np.float32)
    cores = [ov.Core(), ov.Core()]
    with kept_signal_stack():
        models = [core.compile_model(ov.Model([ops.relu(image)], [image]), "CPU") for core in cores]
    assert current_stack() == before
    assert np.array_equal(models[1](np.array([[-1, 0, 2, -3]], np.float32))[0], [[0, 0, 2, 0]])


def test_ctrl_c_after_two_cores_died_in_creation_order_is_handled():
    """Without the guard this process ends with a segmentation fault (exit -11) in the handler."""
    done = subprocess.run([sys.executable, "-c", TWO_CORES_THEN_CTRL_C], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"handled [{int(signal.SIGINT)}]"
