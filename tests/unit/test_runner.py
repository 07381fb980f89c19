"""The detector runner: inline answers without a task, awaited ones under a timeout."""

import asyncio
import dataclasses

from guard.detectors.base import Direction, Finding
from guard.detectors.runner import DetectorRunner
from tests.fakes.policies import context


class Quick:
    name = "quick"
    directions = frozenset(Direction)

    def __init__(self, inline: bool) -> None:
        self.inline, self.awaited = inline, 0

    def scan_inline(self, texts):
        return [Finding(self.name, "X", 1.0, 0, (0, 1))] if self.inline else None

    async def detect(self, texts, ctx):
        self.awaited += 1
        await asyncio.sleep(0)
        return [Finding(self.name, "Y", 1.0, 0, (0, 1))]


class Slow(Quick):
    name = "slow"

    def scan_inline(self, texts):
        return None  # too much for the loop: awaited, under the timeout

    async def detect(self, texts, ctx):
        await asyncio.sleep(1)
        return []


async def test_an_inline_answer_needs_no_await_and_is_timed():
    detector = Quick(inline=True)
    scan = await DetectorRunner([detector], 1.0).scan(["a"], context())
    assert [f.label for f in scan.findings] == ["X"]
    assert detector.awaited == 0
    assert [name for name, _, _ in scan.timings] == ["detector:quick"]


async def test_without_an_inline_answer_the_detector_is_awaited():
    detector = Quick(inline=False)
    scan = await DetectorRunner([detector], 1.0).scan(["a"], context())
    assert [f.label for f in scan.findings] == ["Y"]
    assert detector.awaited == 1


async def test_an_awaited_detector_still_times_out_and_counts_as_failed():
    scan = await DetectorRunner([Slow(inline=False)], 0.05).scan(["a"], context())
    assert scan.failed == ("slow",) and scan.findings == ()


class Recording:
    """Finds one X per text at the text's length; records where each scan ran."""

    name = "recording"
    directions = frozenset(Direction)

    def __init__(self) -> None:
        self.ran_in = []

    def scan_inline(self, texts):
        self.ran_in.append(asyncio.current_task())
        if texts[0] == "boom":
            raise RuntimeError("a detector bug")
        return [Finding(self.name, "X", 1.0, 0, (0, len(texts[0])))]

    async def detect(self, texts, ctx):
        raise AssertionError("inline detectors answer inline")


async def test_inline_scans_of_one_turn_run_together_and_each_gets_its_own_answer():
    detector = Recording()
    runner = DetectorRunner([detector], 1.0)
    texts = ["a" * n for n in range(1, 9)]
    scans = await asyncio.gather(*(runner.scan([t], context()) for t in texts))
    assert [s.findings[0].span for s in scans] == [(0, len(t)) for t in texts]
    # All eight in one loop callback, outside every request's task.
    assert detector.ran_in == [None] * 8
    assert all(name == "detector:recording" for s in scans for name, _, _ in s.timings)


async def test_one_failing_scan_in_a_turn_fails_only_its_own_request():
    detector = Recording()
    runner = DetectorRunner([detector], 1.0)
    good, bad, other = await asyncio.gather(
        runner.scan(["fine"], context()),
        runner.scan(["boom"], context()),
        runner.scan(["also fine"], context()),
    )
    assert bad.failed == ("recording",) and bad.findings == ()
    assert good.failed == other.failed == ()
    assert [f.span for f in good.findings + other.findings] == [(0, 4), (0, 9)]


async def test_a_request_cancelled_before_its_turn_is_not_scanned():
    detector = Recording()
    runner = DetectorRunner([detector], 1.0)
    waiting = asyncio.ensure_future(runner.scan(["left"], context()))
    await asyncio.sleep(0)  # it has asked for its scan
    waiting.cancel()
    kept = await runner.scan(["stayed"], context())
    assert [f.span for f in kept.findings] == [(0, 6)]
    assert len(detector.ran_in) == 1


async def test_a_streamed_answer_is_scanned_at_once_in_its_own_task():
    detector = Recording()
    runner = DetectorRunner([detector], 1.0)
    streamed = dataclasses.replace(context(Direction.OUTPUT), stream=True)
    scan = await runner.scan(["token"], streamed)
    assert [f.span for f in scan.findings] == [(0, 5)]
    assert detector.ran_in == [asyncio.current_task()]
    # A streamed request's prompt waits for its turn as any other.
    await runner.scan(["prompt"], dataclasses.replace(context(), stream=True))
    assert detector.ran_in[1] is None
