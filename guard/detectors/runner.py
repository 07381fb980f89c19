"""Runs the detectors of one direction concurrently, each under a timeout.

A detector that raises or times out is reported as failed, never as "nothing
found": the policy engine decides what a failure means (fail closed by default).

Inline scans (``Inline``: pattern matching on short texts) that concurrent requests
ask one detector for during one turn of the event loop run back to back, in one
callback at the start of the next turn. The work is the same, but the detector's
code and data stay in the CPU's caches from one scan to the next, where a scan run
between two requests' other work finds them evicted (bench.pii measures the gain).
One request alone waits one turn of the loop. A streamed answer's windows are scanned
at once, in the stream's own task: a stream scans at every boundary, and each wait
would delay its tokens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from guard.detectors.base import Detector, Direction, Finding, Inline, ScanContext

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScanResult:
    findings: tuple[Finding, ...] = ()
    failed: tuple[str, ...] = ()
    scanned: bool = False
    detectors: tuple[str, ...] = ()  # the detectors that ran, failed ones included
    # perf_counter spans of the work: ("detector:NAME" | "policy", start, end)
    timings: tuple[tuple[str, float, float], ...] = ()

    def timed(self, timing: tuple[str, float, float]) -> ScanResult:
        """This result with one more timing (``dataclasses.replace`` costs 4 µs)."""
        timings = (*self.timings, timing)
        return ScanResult(self.findings, self.failed, self.scanned, self.detectors, timings)


NOTHING_SCANNED = ScanResult()


class DetectorRunner:
    def __init__(self, detectors: Sequence[Detector], timeout: float) -> None:
        self._by_direction = {
            d: tuple(det for det in detectors if d in det.directions) for d in Direction
        }
        self._timeout = timeout
        self._inline = {id(det) for det in detectors if isinstance(det, Inline)}

    def detectors(self, direction: Direction | None = None) -> list[Detector]:
        """This direction's detectors, or every one (each once)."""
        if direction is not None:
            return list(self._by_direction[direction])
        every = [det for dets in self._by_direction.values() for det in dets]
        return list({id(det): det for det in every}.values())

    def names(self) -> list[str]:
        return sorted({det.name for dets in self._by_direction.values() for det in dets})

    def active(self, direction: Direction) -> bool:
        return bool(self._by_direction[direction])

    async def scan(self, texts: Sequence[str], ctx: ScanContext) -> ScanResult:
        detectors = self._by_direction[ctx.direction]
        names = tuple(det.name for det in detectors)
        if not detectors or not texts:
            return ScanResult(scanned=True, detectors=names)
        timings: list[tuple[str, float, float]] = []
        outcomes: list[list[Finding] | BaseException]
        if len(detectors) == 1:  # no task to schedule (about 30 µs a scan)
            try:
                outcomes = [await self._run_one(detectors[0], texts, ctx, timings)]
            except Exception as exc:  # noqa: BLE001  # reported below, as gather would
                outcomes = [exc]
        else:
            outcomes = await asyncio.gather(
                *(self._run_one(det, texts, ctx, timings) for det in detectors),
                return_exceptions=True,
            )
        findings: list[Finding] = []
        failed: list[str] = []
        for det, outcome in zip(detectors, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                # Only the type: an exception message may quote the text it choked on.
                log.warning("detector %s failed: %s", det.name, type(outcome).__name__)
                failed.append(det.name)
            else:
                findings.extend(outcome)
        return ScanResult(
            findings=tuple(findings),
            failed=tuple(failed),
            scanned=True,
            detectors=names,
            timings=tuple(timings),
        )

    async def _run_one(
        self,
        detector: Detector,
        texts: Sequence[str],
        ctx: ScanContext,
        timings: list[tuple[str, float, float]],
    ) -> list[Finding]:
        if id(detector) in self._inline:
            inline = cast("Inline", detector)
            if ctx.stream and ctx.direction is Direction.OUTPUT:
                # A streamed answer's text is scanned as it comes, token by token:
                # no scan of it waits for a turn of the loop.
                found, started, ended = _scan_now(inline, texts)
            else:
                found, started, ended = await _in_next_turn(inline, texts)
            if found is not None:
                timings.append((f"detector:{detector.name}", started, ended))
                if isinstance(found, BaseException):
                    raise found
                return found
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                return await detector.detect(texts, ctx)
        finally:
            timings.append((f"detector:{detector.name}", started, time.perf_counter()))


# An inline scan's answer (None: too much for the loop, await detect), or what it
# raised, and when it ran.
_Inlined = tuple[list[Finding] | Exception | None, float, float]
_Waiting = list[tuple[Sequence[str], "asyncio.Future[_Inlined]"]]
# The scans asked for in this turn of each event loop, by loop and detector. The key
# holds the loop itself: while an entry waits, no other loop can take its place.
_Key = tuple[asyncio.AbstractEventLoop, int]
_next_turn: dict[_Key, _Waiting] = {}


def _in_next_turn(detector: Inline, texts: Sequence[str]) -> asyncio.Future[_Inlined]:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_Inlined] = loop.create_future()
    key = (loop, id(detector))
    waiting = _next_turn.get(key)
    if waiting is None:
        waiting = _next_turn[key] = []
        loop.call_soon(_run_turn, key, detector)
    waiting.append((texts, future))
    return future


def _run_turn(key: _Key, detector: Inline) -> None:
    for texts, future in _next_turn.pop(key):
        if not future.done():  # else the request was cancelled (its client left)
            future.set_result(_scan_now(detector, texts))


def _scan_now(detector: Inline, texts: Sequence[str]) -> _Inlined:
    started = time.perf_counter()
    found: list[Finding] | Exception | None
    try:
        found = detector.scan_inline(texts)
    except Exception as exc:  # noqa: BLE001  # the request's runner reports it
        found = exc
    return found, started, time.perf_counter()
