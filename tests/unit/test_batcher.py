"""The micro-batcher: results in order and unchanged by batching, batches that form
under concurrency, a bounded queue, and failures handed to every request."""

import asyncio
import threading
import time

import pytest

from guard.detectors.batcher import BatcherBusy, BatcherClosed, MicroBatcher


class Recorder:
    """A real ``run``: scores a text by its length and remembers each batch."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.delay = delay
        self.fail_on = fail_on
        self.release = threading.Event()
        self.release.set()

    def __call__(self, texts: list[str]) -> list[tuple[int, str]]:
        self.release.wait(5)
        self.batches.append(list(texts))
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in texts:
            raise ValueError("the model choked")  # never quoting the text
        return [(len(t), t.upper()) for t in texts]


@pytest.fixture
def recorder():
    return Recorder()


async def test_results_come_back_in_order_for_each_request(recorder):
    batcher = MicroBatcher(recorder, max_batch=8, max_wait_s=0.01)
    texts = [f"text number {i}" * (i % 3 + 1) for i in range(20)]
    assert await batcher.submit(texts) == [(len(t), t.upper()) for t in texts]
    batcher.close()


async def test_concurrent_requests_share_batches_and_get_their_own_results(recorder):
    batcher = MicroBatcher(recorder, max_batch=16, max_wait_s=0.02)
    requests = [[f"r{r}-t{i}" for i in range(r % 4 + 1)] for r in range(40)]
    results = await asyncio.gather(*(batcher.submit(texts) for texts in requests))
    for texts, got in zip(requests, results, strict=True):
        assert got == [(len(t), t.upper()) for t in texts]
    stats = batcher.stats()
    assert stats.texts == sum(map(len, requests))
    assert stats.batches < stats.texts / 2  # batches formed across requests
    assert stats.largest <= 16
    assert all(len(b) <= 16 for b in recorder.batches)
    batcher.close()


async def test_batch_size_one_runs_one_text_at_a_time(recorder):
    batcher = MicroBatcher(recorder, max_batch=1, max_wait_s=0.01)
    await asyncio.gather(*(batcher.submit([f"t{i}"]) for i in range(10)))
    assert [len(b) for b in recorder.batches] == [1] * 10
    batcher.close()


async def test_a_full_queue_turns_requests_away_after_the_wait():
    recorder = Recorder()
    recorder.release.clear()  # the worker holds its first batch until released
    batcher = MicroBatcher(recorder, max_batch=1, max_queue=2, queue_timeout_s=0.2)
    first = asyncio.ensure_future(batcher.submit(["a", "b"]))
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    with pytest.raises(BatcherBusy, match="full queue of 2"):
        await batcher.submit(["c"])
    assert 0.15 < time.perf_counter() - started < 2
    recorder.release.set()
    assert await first == [(1, "A"), (1, "B")]
    assert await batcher.submit(["c"]) == [(1, "C")]  # room again once they are done
    batcher.close()


async def test_a_failing_batch_fails_every_request_in_it_and_the_next_one_runs():
    recorder = Recorder(fail_on="poison")
    batcher = MicroBatcher(recorder, max_batch=8, max_wait_s=0.05)
    outcomes = await asyncio.gather(
        batcher.submit(["fine"]), batcher.submit(["poison"]), return_exceptions=True
    )
    assert all(isinstance(o, ValueError) for o in outcomes)
    assert await batcher.submit(["after"]) == [(5, "AFTER")]
    batcher.close()


async def test_a_run_that_returns_the_wrong_number_of_results_fails_the_batch():
    batcher = MicroBatcher(lambda texts: texts[:-1], max_batch=4)
    with pytest.raises(RuntimeError, match="1 results for 2 texts"):
        await batcher.submit(["a", "b"])
    batcher.close()


async def test_a_cancelled_request_is_skipped_and_others_are_served():
    recorder = Recorder(delay=0.05)
    batcher = MicroBatcher(recorder, max_batch=1, max_wait_s=0.0)
    slow = asyncio.ensure_future(batcher.submit(["one"]))
    gone = asyncio.ensure_future(batcher.submit(["two"]))
    await asyncio.sleep(0.01)
    gone.cancel()
    assert await slow == [(3, "ONE")]
    assert await batcher.submit(["three"]) == [(5, "THREE")]
    assert ["two"] not in recorder.batches
    batcher.close()


async def test_after_close_submits_fail_clearly(recorder):
    batcher = MicroBatcher(recorder)
    batcher.close()
    with pytest.raises(BatcherClosed):
        await batcher.submit(["x"])


async def test_a_request_waiting_for_room_when_the_batcher_closes_fails_at_once():
    recorder = Recorder(delay=0.2)
    batcher = MicroBatcher(recorder, max_batch=1, max_queue=1, queue_timeout_s=5)
    first = asyncio.ensure_future(batcher.submit(["a"]))
    await asyncio.sleep(0.02)
    waiting = asyncio.ensure_future(batcher.submit(["b"]))
    await asyncio.sleep(0.02)
    batcher.close()
    assert await first == [(1, "A")]
    with pytest.raises(BatcherClosed):
        await asyncio.wait_for(waiting, 2)


def test_bad_sizes_are_refused(recorder):
    with pytest.raises(ValueError, match="at least 1"):
        MicroBatcher(recorder, max_batch=0)
