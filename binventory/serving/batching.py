"""Micro-batching: images from concurrent requests go through the model together.

One forward pass over 16 images costs far less than 16 passes over one, so under load the
service queues decoded images and runs them as a batch. At low load the only price is the wait
for company, bounded by ``max_wait_ms`` after the first image arrives.

The model runs in one dedicated worker thread, so the event loop keeps accepting and decoding
requests while a batch is being computed, and batches never compete with each other for cores.

Each image may name the model that must run it (``submit(image, run_batch)``): when the service
swaps models, images decoded for the old one still run on it, and a batch never mixes models.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

_STOP = object()  # queued by stop(): everything queued before it still gets processed


class BatcherStopped(RuntimeError):
    """The batcher is not running (not started yet, or shutting down)."""


@dataclass
class BatchStats:
    batches: int = 0
    images: int = 0
    sizes: Counter = field(default_factory=Counter)  # batch size -> number of batches

    @property
    def max_size(self) -> int:
        return max(self.sizes, default=0)


class MicroBatcher:
    """Collects images submitted from coroutines and runs ``run_batch`` on up to ``max_batch`` of
    them at once; each caller gets back its own row of the result.

    ``run_batch`` takes a stacked N x ... array and returns an N x ... array (rows in order);
    an image submitted with a ``run_batch`` of its own goes in a batch run by that one.
    ``on_batch(size, seconds)`` is called after every batch (for metrics).
    """

    def __init__(self, run_batch: Callable[[np.ndarray], np.ndarray], max_batch: int = 16,
                 max_wait_ms: float = 5.0,
                 on_batch: Callable[[int, float], None] | None = None):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"need max_batch >= 1 and max_wait_ms >= 0, got {max_batch}, {max_wait_ms}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.on_batch = on_batch
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._accepting = False
        # The next batch's first image: it came for another model than the batch before it.
        self._held: tuple | None = None
        self._forming: list = []  # the batch waiting for company

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def queued(self) -> int:
        """Images waiting for the model: queued, or in a batch still waiting for company."""
        queued = self._queue.qsize() if self._queue is not None else 0
        return queued + (self._held is not None) + len(self._forming)

    async def start(self) -> None:
        """Start the collecting task on the running event loop."""
        if self.running:
            return
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task = asyncio.create_task(self._loop(), name="micro-batcher")
        self._accepting = True

    async def stop(self) -> None:
        """Refuse new work, finish everything already queued, then stop the worker thread."""
        if self._task is None:
            return
        self._accepting = False
        await self._queue.put(_STOP)
        try:
            await self._task
        finally:
            self._executor.shutdown(wait=True)
            self._task = None

    async def submit(self, item: np.ndarray,
                     run_batch: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """Queue one image and wait for its row of the result of ``run_batch`` (default: the
        batcher's own) on the batch it joins."""
        if not self._accepting:
            raise BatcherStopped("the model is not accepting work (starting up or shutting down)")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future, run_batch or self.run_batch))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first, self._held = self._held or await self._queue.get(), None
            if first is _STOP:
                break
            batch = self._forming = [first]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch:
                timeout = deadline - loop.time()
                try:
                    if timeout <= 0:
                        # Past the deadline, still take whatever is already waiting (free company).
                        item = self._queue.get_nowait()
                    else:
                        item = await asyncio.wait_for(self._queue.get(), timeout)
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                if item is _STOP:
                    stopping = True  # run this last batch, then leave
                    break
                # == not is: each access to a bound method makes a new, equal, object
                if item[2] != first[2]:
                    self._held = item  # a batch never mixes models: it starts the next one
                    break
                batch.append(item)
            self._forming = []
            await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list) -> None:
        # A caller that gave up (client disconnected, request cancelled) needs no row.
        run_batch = batch[0][2]
        batch = [(item, future) for item, future, _ in batch if not future.done()]
        if not batch:
            return
        started = loop.time()
        try:
            stacked = np.stack([item for item, _ in batch])
            result = await loop.run_in_executor(self._executor, run_batch, stacked)
            if len(result) != len(batch):
                raise RuntimeError(f"run_batch returned {len(result)} rows for {len(batch)} inputs")
        except Exception as e:  # one failed batch must not kill the loop serving the others
            log.exception("batch of %d failed", len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        seconds = loop.time() - started
        self.stats.batches += 1
        self.stats.images += len(batch)
        self.stats.sizes[len(batch)] += 1
        if self.on_batch is not None:
            self.on_batch(len(batch), seconds)
        for (_, future), row in zip(batch, result):
            if not future.done():
                future.set_result(row)
