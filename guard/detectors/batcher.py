"""A micro-batcher: texts from concurrent requests scored in one forward pass.

A classifier's forward pass costs about the same for one text as for a few dozen on
a GPU, and much less per text on a CPU too (one call, one set of matrix products).
Requests put their texts on one queue; one worker thread per device takes what is
waiting, up to ``max_batch`` texts, waiting at most ``max_wait_s`` after the first
for more to arrive, and runs them together. Tokenization runs in the worker as
well, so the event loop only queues and hands back.

The queue is bounded: a request whose texts find it full waits up to
``queue_timeout_s`` for room, then fails with ``BatcherBusy``, and the policy's
``on_error`` decides (block by default, recorded as degraded where it allows).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
R = TypeVar("R")
Run = Callable[[list[str]], Sequence[R]]


class BatcherBusy(Exception):  # a state, as asyncio.QueueFull
    """The queue stayed full for longer than the request may wait."""


class BatcherClosed(Exception):
    """The batcher was closed (a reload replaced its detector, or guard is stopping)."""


@dataclass(slots=True)
class _Item(Generic[R]):
    text: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[R]


@dataclass(frozen=True, slots=True)
class BatchStats:
    """What the worker has done so far, for /readyz and the benchmark."""

    batches: int
    texts: int
    largest: int
    queued: int

    @property
    def mean_batch(self) -> float:
        return self.texts / self.batches if self.batches else 0.0


class MicroBatcher(Generic[R]):
    """``run(texts)`` called in a worker thread on batches of queued texts; its
    results go back, one per text and in order, to the requests that sent them."""

    def __init__(
        self,
        run: Run[R],
        *,
        max_batch: int = 32,
        max_wait_s: float = 0.002,
        max_queue: int = 1024,
        queue_timeout_s: float = 1.0,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        self._run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._queue_timeout_s = queue_timeout_s
        self._queue: queue.SimpleQueue[_Item[R] | None] = queue.SimpleQueue()
        # Admission is counted on the loop side; each loop gets its own semaphore.
        self._room: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
        self._closed = False
        self._batches = 0
        self._texts = 0
        self._largest = 0
        self._queued = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name=f"guard-{name}", daemon=True)
        self._thread.start()

    async def submit(self, texts: Sequence[str]) -> list[R]:
        """One result per text, in order; raises what ``run`` raised for its batch,
        ``BatcherBusy`` when there was no room in time, ``BatcherClosed`` after close."""
        if self._closed:
            raise BatcherClosed("the classifier was closed")
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        room = self._room_on(loop)
        taken = 0
        try:
            async with asyncio.timeout(self._queue_timeout_s):
                for _ in texts:
                    await room.acquire()
                    taken += 1
        except TimeoutError:
            for _ in range(taken):
                room.release()
            raise BatcherBusy(
                f"{len(texts)} text(s) waited {self._queue_timeout_s:g} s for room in a "
                f"full queue of {self.max_queue}"
            ) from None
        if self._closed:  # closed while this request waited for room
            for _ in range(taken):
                room.release()
            raise BatcherClosed("the classifier was closed")
        items = [_Item(text, loop, loop.create_future()) for text in texts]
        with self._lock:
            self._queued += len(items)
        for item in items:
            self._queue.put(item)
        try:
            return list(await asyncio.gather(*(item.future for item in items)))
        finally:
            for _ in items:
                room.release()

    def stats(self) -> BatchStats:
        with self._lock:
            return BatchStats(self._batches, self._texts, self._largest, self._queued)

    def close(self) -> None:
        """Stop the worker once what is queued has run; later submits fail."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)

    def _room_on(self, loop: asyncio.AbstractEventLoop) -> asyncio.Semaphore:
        room = self._room.get(loop)
        if room is None:
            room = self._room[loop] = asyncio.Semaphore(self.max_queue)
        return room

    # -- the worker thread ------------------------------------------------------------

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch, stop = self._collect(first)
            self._run_batch(batch)
            if stop:
                break
        self._refuse_the_rest()

    def _refuse_the_rest(self) -> None:
        """Texts queued behind the close (a request that passed its check a moment
        before it) fail instead of waiting for a worker that has stopped."""
        closed = BatcherClosed("the classifier was closed")
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                with self._lock:
                    self._queued -= 1
                _hand(item, None, closed)

    def _collect(self, first: _Item[R]) -> tuple[list[_Item[R]], bool]:
        """The first item and what arrives after it, until the batch is full or the
        wait is over; True when the close sentinel came in meanwhile."""
        batch = [first]
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _run_batch(self, batch: list[_Item[R]]) -> None:
        live = [item for item in batch if not item.future.done()]  # a cancelled request
        with self._lock:
            self._queued -= len(batch)
            if live:
                self._batches += 1
                self._texts += len(live)
                self._largest = max(self._largest, len(live))
        if not live:
            return
        try:
            results = _checked(self._run([item.text for item in live]), len(live))
        except Exception as exc:  # noqa: BLE001  # handed to every request of the batch
            # Only the type: an exception message may quote the text it choked on.
            log.warning("classifier batch of %d failed: %s", len(live), type(exc).__name__)
            for item in live:
                _hand(item, None, exc)
            return
        for item, result in zip(live, results, strict=True):
            _hand(item, result, None)


def _checked(results: Sequence[R], expected: int) -> list[R]:
    out = list(results)
    if len(out) != expected:
        raise RuntimeError(f"the classifier gave {len(out)} results for {expected} texts")
    return out


def _hand(item: _Item[R], result: R | None, exc: BaseException | None) -> None:
    def settle() -> None:
        if item.future.done():
            return
        if exc is not None:
            item.future.set_exception(exc)
        else:
            item.future.set_result(result)  # type: ignore[arg-type]  # R when no exc

    with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
        item.loop.call_soon_threadsafe(settle)
