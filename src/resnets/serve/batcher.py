"""Dynamic micro-batching on a worker thread, behind a bounded queue.

Requests put one item each on a queue and wait for its future. One worker thread takes the
first item, waits up to ``wait_s`` for more (at most ``max_batch``), runs the model once on
the batch and hands each caller its own result. With ``adaptive`` (the server's default) the
wait also ends once the batch holds as many items as were in flight at once (queued or
running) since the last batch began: a lone client never waits, and clients just answered,
which come back within a millisecond or two, are waited for only up to their number.
Whatever else is queued still joins.
The event loop never runs the model, and a full lane refuses new work at once
(:class:`QueueFull`, answered 503) instead of piling up. A request takes a slot of its lane
(:meth:`MicroBatcher.reserve`) before it reads its upload: a refused one is neither read nor
decoded.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from .metrics import Metrics


class QueueFull(RuntimeError):
    """The queue of a lane is full: try again later."""


class LaneStopped(RuntimeError):
    """The lane's worker thread has ended: nothing would answer a request (answered 503)."""


_STOP = object()


class MicroBatcher:
    """Runs ``fn(items) -> results`` (same length, same order) on batches of queued items."""

    def __init__(self, fn: Callable[[Sequence[Any]], Sequence[Any]], name: str,
                 max_batch: int = 32, wait_s: float = 0.005, queue_size: int = 64,
                 metrics: Metrics | None = None, adaptive: bool = False) -> None:
        # a wait past threading.TIMEOUT_MAX (inf) would kill the worker at its first wait
        if max_batch < 1 or queue_size < 1 or not 0 <= wait_s <= threading.TIMEOUT_MAX:
            raise ValueError(f"max_batch and queue_size must be >= 1 and wait_s 0.."
                             f"{threading.TIMEOUT_MAX:g}, got {max_batch}, {queue_size}, "
                             f"{wait_s}")
        self.fn, self.name = fn, name
        self.max_batch, self.wait_s, self.adaptive = max_batch, wait_s, adaptive
        # items submitted and not yet answered, and the most of them at once since the last
        # batch began: what an adaptive wait waits for
        self._in_flight = self._peak = 0
        self._count_lock = threading.Lock()
        self.metrics = metrics
        self.queue_size = queue_size
        # unbounded itself: a request holding a slot (reserve) is never refused when it
        # submits, even while the worker has yet to take the queued batch whose answered
        # requests freed the slots; one without a slot is refused past queue_size waiting
        self._queue: queue.Queue = queue.Queue()
        # requests admitted (reading, decoding, queued or running): as many as fit the queue
        # and a running batch
        self._free = threading.Semaphore(queue_size + max_batch)
        self._holding = contextvars.ContextVar(f"resnets-slot-{name}", default=False)
        self._thread = threading.Thread(target=self._work, name=f"resnets-{name}", daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> Future:
        """Queue ``item``; its result (or exception) arrives on the returned future."""
        if not self._thread.is_alive():
            raise LaneStopped(f"the worker thread of lane {self.name} has stopped; restart "
                              "the server")
        fut: Future = Future()
        # counted before it is queued: the worker may answer it before put_nowait returns
        with self._count_lock:
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
        if not self._holding.get() and self._queue.qsize() >= self.queue_size:
            self._answered(1)
            raise QueueFull(f"the {self.name} queue is full ({self.queue_size} waiting)")
        self._queue.put_nowait((item, fut))
        self._report_depth()
        return fut

    @contextmanager
    def reserve(self) -> Iterator[None]:
        """Hold one of the lane's slots for a request, from before its upload is read until
        it is answered; :class:`QueueFull` at once when none is free."""
        if not self._free.acquire(blocking=False):
            raise QueueFull(f"the {self.name} queue is full (room for {self.queue_size} "
                            f"waiting and {self.max_batch} running)")
        token = self._holding.set(True)
        try:
            yield
        finally:
            self._holding.reset(token)
            self._free.release()

    async def run(self, item: Any) -> Any:
        """Queue ``item`` and await its result without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(item))

    @property
    def alive(self) -> bool:
        """Whether the worker thread runs (an error the lane hands to callers leaves it
        running; an exception outside ``Exception`` ends it, and with it the lane)."""
        return self._thread.is_alive()

    def close(self, timeout: float | None = 10.0) -> None:
        """Finish the queued work, then stop the worker thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _report_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.set_queue_depth(self.name, self._queue.qsize())

    def _collect(self) -> tuple[list[tuple[Any, Future]], bool]:
        """The next batch, and whether the stop marker was seen."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self.wait_s
        with self._count_lock:
            expected, self._peak = self._peak, self._in_flight
        expected = min(max(expected, 1), self.max_batch) if self.adaptive else self.max_batch
        while len(batch) < self.max_batch:
            # past the expected size, take only what is already queued
            left = deadline - time.monotonic() if len(batch) < expected else 0
            try:
                nxt = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is _STOP:
                return batch, True
            batch.append(nxt)
        return batch, False

    def _work(self) -> None:
        stop = False
        try:
            while not stop:
                batch, stop = self._collect()
                self._report_depth()
                self._run(batch)
        finally:
            if not stop:  # the worker dies: the requests still queued would wait for ever
                self._fail_queued()

    def _fail_queued(self) -> None:
        while True:
            try:
                queued = self._queue.get_nowait()
            except queue.Empty:
                self._report_depth()  # the gauge said what was queued before
                return
            if queued is not _STOP and queued[1].set_running_or_notify_cancel():
                self._answered(1)
                queued[1].set_exception(LaneStopped(
                    f"the worker thread of lane {self.name} has stopped; restart the server"))

    def _answered(self, n: int) -> None:
        """``n`` items leave the in-flight count; called before their callers hear back, so
        a caller that submits again at once is not counted twice."""
        with self._count_lock:
            self._in_flight -= n

    def _run(self, batch: list[tuple[Any, Future]]) -> None:
        live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
        self._answered(len(batch) - len(live))  # cancelled while queued
        if not live:
            return
        if self.metrics is not None:
            self.metrics.observe_batch(self.name, len(live))
        try:
            results = self.fn([item for item, _ in live])
            if len(results) != len(live):
                raise RuntimeError(f"{self.name}: {len(results)} results for "
                                   f"{len(live)} inputs")
        except BaseException as e:  # handed to each caller, which answers 500; the lane
            # runs on (SystemExit or KeyboardInterrupt from model code reaches the callers as
            # a RuntimeError: raised in the event loop they would stop the server)
            error = e if isinstance(e, Exception) else RuntimeError(
                f"{self.name}: the model raised {type(e).__name__}")
            self._answered(len(live))
            for _, fut in live:
                fut.set_exception(error)
            return
        self._answered(len(live))
        for (_, fut), result in zip(live, results, strict=True):
            fut.set_result(result)
