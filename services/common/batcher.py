"""Queue-depth driven micro-batching for model calls in the check services.

Concurrent requests put their items on one queue; a single worker thread takes
everything that is waiting (up to `max_batch` items) and runs one batched model
call. While a batch runs, new items pile up and form the next batch, so batches
grow with load and an idle service answers a lone request at once. A tiny
optional collection window (`max_wait_s`) lets near-simultaneous requests meet.
"""

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from typing import Generic, TypeVar

from prometheus_client import Histogram

T = TypeVar("T")
R = TypeVar("R")

BATCH_SIZE = Histogram(
    "guardmesh_batch_size", "Items per batched model call", ["batcher"], buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)


@dataclass
class _Job(Generic[T, R]):
    items: Sequence[T]
    future: Future


class MicroBatcher(Generic[T, R]):
    """Runs `fn(items) -> results` (same length, same order) over batches of queued items."""

    def __init__(self, name: str, fn: Callable[[list[T]], list[R]], max_batch: int = 64, max_wait_s: float = 0.0):
        self._name = name
        self._fn = fn
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._queue: SimpleQueue[_Job | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Returns fn's results for `items`; the items of one call stay in one batch."""
        if not items:
            return []
        future: Future = Future()
        self._queue.put(_Job(items, future))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs, size = [job], len(job.items)
            deadline = self._max_wait_s
            while size < self._max_batch:
                try:
                    nxt = self._queue.get(timeout=deadline) if deadline > 0 else self._queue.get_nowait()
                except Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                jobs.append(nxt)
                size += len(nxt.items)
                deadline = 0  # only the first wait is a window; then take what is queued
            self._execute(jobs)

    def _execute(self, jobs: list[_Job]) -> None:
        items = [item for job in jobs for item in job.items]
        BATCH_SIZE.labels(self._name).observe(len(items))
        try:
            results = self._fn(items)
            if len(results) != len(items):
                raise RuntimeError(f"{self._name}: {len(results)} results for {len(items)} items")
        except Exception as e:  # every waiting request learns of the failure
            for job in jobs:
                _settle(job.future, exception=e)
            return
        start = 0
        for job in jobs:
            _settle(job.future, result=list(results[start : start + len(job.items)]))
            start += len(job.items)


def _settle(future: Future, *, result=None, exception: BaseException | None = None) -> None:
    """Completes a caller's future unless the caller gave up (cancelled, deadline) meanwhile."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass
