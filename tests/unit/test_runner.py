"""The detector runner: inline answers without a task, awaited ones under a timeout."""

import asyncio

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
