"""A small pool of worker threads with a bounded queue, so that the work (and the memory) in flight stays bounded.

Every segmentation (decode, inference, encode) runs on one of ``workers`` threads. A request first takes one of
``workers + queue`` slots (:meth:`WorkPool.admit`); when none is free it is refused at once, and the server answers
``503 Service Unavailable`` with a ``Retry-After`` from :meth:`WorkPool.retry_after`, before reading the upload.
So at most ``workers`` images are being decoded or segmented and at most ``queue`` uploads wait, whatever the number
of connections.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["WorkPool", "DEFAULT_WORKERS", "DEFAULT_QUEUE", "MAX_WORKERS", "MAX_QUEUE"]

#: default number of worker threads (one per core of a small machine)
DEFAULT_WORKERS = 2
#: default number of admitted requests that may wait for a worker
DEFAULT_QUEUE = 4
#: the most workers and waiting requests accepted: each holds an upload and its decoded image (a few hundred MB for
#: the largest), so these bound the server's memory; larger values would only trade refusals for swapping
MAX_WORKERS = 64
MAX_QUEUE = 256

T = TypeVar("T")


class WorkPool:
    """``workers`` threads and room for ``queue`` waiting jobs.

    Use::

        if not pool.admit():
            ...answer 503 with Retry-After: pool.retry_after()
        try:
            result = pool.run(job, *args)
        finally:
            pool.release()

    Args:
        workers: worker threads (>= 1).
        queue: admitted requests that may wait for a worker (>= 0).

    Raises:
        ValueError: a bound out of range.
    """

    def __init__(self, workers: int = DEFAULT_WORKERS, queue: int = DEFAULT_QUEUE) -> None:
        if not 1 <= workers <= MAX_WORKERS:
            raise ValueError(f"workers must be between 1 and {MAX_WORKERS}, got {workers}")
        if not 0 <= queue <= MAX_QUEUE:
            raise ValueError(f"queue must be between 0 and {MAX_QUEUE}, got {queue}")
        self.workers = workers
        self.queue = queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scunext-serve-worker")
        self._slots = threading.BoundedSemaphore(workers + queue)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._mean_s: float | None = None  # moving average of a job's duration, for Retry-After

    @property
    def in_flight(self) -> int:
        """Admitted requests not yet released (running or waiting)."""
        return self._in_flight

    def admit(self) -> bool:
        """Take a slot without waiting; ``False`` when ``workers + queue`` requests are already in flight."""
        if not self._slots.acquire(blocking=False):
            return False
        with self._lock:
            self._in_flight += 1
        return True

    def release(self) -> None:
        """Give back the slot taken by :meth:`admit` (exactly once per successful admit)."""
        with self._lock:
            self._in_flight -= 1
        self._slots.release()

    def run(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run ``fn(*args, **kwargs)`` on a worker thread and wait for its result (its exception is re-raised)."""
        return self._executor.submit(self._timed, fn, *args, **kwargs).result()

    def _timed(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - start
            with self._lock:
                self._mean_s = elapsed if self._mean_s is None else 0.8 * self._mean_s + 0.2 * elapsed

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the time for the work in flight to drain, at least 1, at most 60."""
        with self._lock:
            mean = self._mean_s if self._mean_s is not None else 1.0
            waiting = self._in_flight
        return max(1, min(60, math.ceil(mean * waiting / self.workers)))

    def shutdown(self) -> None:
        """Stop the worker threads once the running jobs have finished."""
        self._executor.shutdown(wait=True)
