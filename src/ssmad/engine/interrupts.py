"""Holding Ctrl-C and SIGTERM while the training state is half updated.

An optimiser step changes the weights, the optimiser's moments and the step counters one after
the other; a checkpoint written from the middle of that would resume to a different model.
Inside :func:`deferred_interrupts` the two signals are only recorded; when the block ends the
previous handlers come back and the first recorded signal is delivered to them, so it acts
exactly as it would have, a step later.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Delay SIGINT and SIGTERM until the block has finished (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {held: signal.getsignal(held) for held in HELD_SIGNALS}
    for held in HELD_SIGNALS:
        signal.signal(held, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for held, handler in previous.items():
            signal.signal(held, handler)
    if received:
        signal.raise_signal(received[0])
