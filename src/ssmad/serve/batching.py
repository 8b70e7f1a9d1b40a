"""Dynamic batching: images of concurrent requests scored together in one forward pass.

Requests put their images in a bounded queue; one worker task takes up to ``max_batch`` of them
(waiting at most ``wait_s`` for a batch to fill once the first image is there) and runs the
scoring function on ONE inference thread, off the event loop, so the model is never used by two
threads at once. Each image keeps its own class. Images of a request that gave up (timeout,
client gone) are dropped before scoring.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image

ScoreFn = Callable[[list[Image.Image], list[str | None]], list[Any]]  # images, classes -> one result each


class QueueFull(Exception):
    """More images are waiting than the queue holds; the client should retry later."""


@dataclass
class _Job:
    image: Image.Image
    class_name: str | None
    future: asyncio.Future


class Batcher:
    """Queue of images scored ``max_batch`` at a time by ``score`` on a single inference thread."""

    def __init__(self, score: ScoreFn, max_batch: int, max_queue: int, wait_s: float):
        self.score = score
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.wait_s = wait_s
        self._jobs: deque[_Job] = deque()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ssmad-inference")
        self._worker: asyncio.Task | None = None
        self.last_batch_s = 1.0  # seconds the latest batch took (Retry-After estimates)

    @property
    def waiting(self) -> int:
        """Images queued and not yet taken into a batch (of requests still waiting for them)."""
        return sum(not job.future.done() for job in self._jobs)

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for job in self._jobs:
            job.future.cancel()
        self._executor.shutdown(wait=True)

    async def on_inference_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the inference thread (after the batch in progress): warm-up."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def submit(self, images: list[Image.Image], classes: list[str | None]) -> list[Any]:
        """Score ``images`` (one class or None each) with whatever else is queued; results in order.

        Raises :class:`QueueFull` when they do not fit in the queue.
        """
        self._jobs = deque(job for job in self._jobs if not job.future.done())  # requests that gave up
        if len(self._jobs) + len(images) > self.max_queue:
            raise QueueFull(f"{self.waiting} image(s) already waiting, the queue holds {self.max_queue}")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in images]
        self._jobs.extend(_Job(image, name, future) for image, name, future in zip(images, classes, futures))
        self._arrived.set()
        return list(await asyncio.gather(*futures))

    async def _next_batch(self) -> list[_Job]:
        """Wait for images, give late arrivals ``wait_s`` to fill the batch, take up to ``max_batch``."""
        while not self._jobs:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = asyncio.get_running_loop().time() + self.wait_s
        while len(self._jobs) < self.max_batch and (remaining := deadline - asyncio.get_running_loop().time()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        batch = []
        while self._jobs and len(batch) < self.max_batch:
            job = self._jobs.popleft()
            if not job.future.done():  # a cancelled request's image is not scored
                batch.append(job)
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            started = time.perf_counter()
            try:
                results = await self.on_inference_thread(
                    self.score, [job.image for job in batch], [job.class_name for job in batch]
                )
            except Exception as error:  # noqa: BLE001 - handed to every waiting request, the worker lives on
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            self.last_batch_s = time.perf_counter() - started
            for job, result in zip(batch, results):
                if not job.future.done():
                    job.future.set_result(result)
