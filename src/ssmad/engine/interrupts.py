"""Stopping training on Ctrl-C or SIGTERM only between optimiser steps, on every process at once.

An optimiser step changes the weights, the optimiser's moments and the step counters one after
the other; a checkpoint written from the middle of that would resume to a different model. Under
DistributedDataParallel a signal that reaches one rank (``kill`` of one worker, a scheduler)
must stop every rank at the same step, or the ranks enter different collectives (one the
checkpoint's gather, the others the next step's gradient all-reduce) and hang.

Inside :class:`StopRequests` the two signals are only recorded; the training loop asks
:meth:`StopRequests.agreed` after each step, which, under DDP, all-reduces "did any rank get
a signal?" so all ranks raise ``KeyboardInterrupt`` after the same step. A signal recorded but
not yet acted upon when the block ends is delivered to the previous handlers then.
"""

from __future__ import annotations

import signal
import threading

import torch

from ssmad.engine.distributed import DistributedContext, any_process

HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
    """Record SIGINT and SIGTERM while the block runs (main thread only; elsewhere nothing is held)."""

    def __init__(self, context: DistributedContext, device: torch.device) -> None:
        self.context = context
        self.device = device
        self.received: list[int] = []
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            self._previous = {held: signal.getsignal(held) for held in HELD_SIGNALS}
            for held in HELD_SIGNALS:
                signal.signal(held, lambda signum, frame: self.received.append(signum))
        return self

    def agreed(self) -> None:
        """Raise KeyboardInterrupt on every process when any process has received a stop signal."""
        if any_process(bool(self.received), self.context, self.device):
            name = signal.Signals(self.received[0]).name if self.received else "stop signal on another process"
            self.received.clear()
            raise KeyboardInterrupt(name)

    def __exit__(self, *exc_info: object) -> None:
        for held, handler in self._previous.items():
            signal.signal(held, handler)
        if self.received:
            signal.raise_signal(self.received[0])
