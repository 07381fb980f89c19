"""Load on a toxicity detector in process: ``c`` asyncio tasks, each awaiting
``detector.detect([text], ctx)`` in a loop, the texts taken in turn from the pool.

A cell runs ``warmup_s`` unmeasured, then ``duration_s`` measured: the requests that
finish inside the window count (texts/s = their number / the window, latencies are
theirs), and the batcher's counters are read at both ends of it (mean batch size). At
the end of the window the tasks stop sending and the requests in flight are waited for,
so the next cell starts on an idle detector.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.proxy_overhead.__main__ import percentile
from guard.detectors.base import Direction, ScanContext
from guard.detectors.toxicity.detector import ToxicityDetector
from guard.registry.cards import ModelCard
from guard.settings import ModelSettings


@dataclass(frozen=True, slots=True)
class Cell:
    """One arm of one model at one concurrency, one round."""

    texts_per_s: float
    latency_s: list[float]  # the requests finished in the window, in order
    mean_batch: float
    cpu_ms_per_text: float  # process CPU (all threads) over the window, per text
    errors: int

    @property
    def count(self) -> int:
        return len(self.latency_s)


def context() -> ScanContext:
    card = ModelCard.from_settings(
        ModelSettings.model_validate({"name": "bench", "upstream": "u", "licence": "apache-2.0"})
    )
    return ScanContext(Direction.INPUT, "/v1/chat/completions", card, False)


def _batch(detector: ToxicityDetector) -> tuple[int, int]:
    """(batches, texts) the detector's batcher has run so far."""
    batch = detector.describe()["batch"]
    assert isinstance(batch, dict)
    return int(batch["batches"]), int(batch["texts"])


async def run_cell(
    detector: ToxicityDetector,
    texts: Sequence[str],
    concurrency: int,
    *,
    warmup_s: float,
    duration_s: float,
) -> Cell:
    ctx = context()
    turn = itertools.count()  # every cell (and arm) sends the same texts in the same order
    done: list[tuple[float, float]] = []  # (finished at, latency)
    errors = 0
    stop = time.perf_counter() + warmup_s + duration_s

    async def client() -> None:
        nonlocal errors
        while (started := time.perf_counter()) < stop:
            try:
                await detector.detect([texts[next(turn) % len(texts)]], ctx)
            except Exception:  # noqa: BLE001  # counted and reported; the load goes on
                errors += 1
                continue
            finished = time.perf_counter()
            done.append((finished, finished - started))

    window: list[tuple[float, float, tuple[int, int]]] = []  # (clock, CPU, batcher)

    async def watch() -> None:
        await asyncio.sleep(warmup_s)
        window.append((time.perf_counter(), time.process_time(), _batch(detector)))
        await asyncio.sleep(max(0.0, stop - time.perf_counter()))
        window.append((time.perf_counter(), time.process_time(), _batch(detector)))

    await asyncio.gather(watch(), *(client() for _ in range(concurrency)))
    (t0, cpu0, (b0, n0)), (t1, cpu1, (b1, n1)) = window
    latency = [lat for at, lat in done if t0 <= at <= t1]
    count = max(1, len(latency))
    return Cell(
        texts_per_s=len(latency) / (t1 - t0),
        latency_s=latency,
        mean_batch=(n1 - n0) / (b1 - b0) if b1 > b0 else 0.0,
        cpu_ms_per_text=(cpu1 - cpu0) * 1000 / count,
        errors=errors,
    )


@dataclass(frozen=True, slots=True)
class Summary:
    """A model, arm and concurrency over the rounds: medians of the rounds' figures."""

    texts_per_s: float
    rounds_tps: list[float]
    p50_ms: float
    p99_ms: float
    mean_batch: float
    cpu_ms_per_text: float
    requests: int
    errors: int


def summarize(cells: Sequence[Cell]) -> Summary:
    """Medians over the rounds of each round's texts/s, p50, p99, mean batch, CPU."""

    def med(values: list[float]) -> float:
        return statistics.median(values)

    live = [c for c in cells if c.latency_s]
    return Summary(
        texts_per_s=med([c.texts_per_s for c in cells]),
        rounds_tps=[c.texts_per_s for c in cells],
        p50_ms=med([percentile(c.latency_s, 50) * 1000 for c in live]) if live else 0.0,
        p99_ms=med([percentile(c.latency_s, 99) * 1000 for c in live]) if live else 0.0,
        mean_batch=med([c.mean_batch for c in cells]),
        cpu_ms_per_text=med([c.cpu_ms_per_text for c in cells]),
        requests=sum(c.count for c in cells),
        errors=sum(c.errors for c in cells),
    )
