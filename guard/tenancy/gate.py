"""Limits applied to requests: a request counts against its key's limits and its
tenant's, admitted by both or refused with 429 and Retry-After.

What an exchange takes when admitted (``Held``) is given back when it is recorded:
its stream slot freed, its tokens (from the answer's usage) added. That runs after
the answer, in a task of its own, so a client never waits for the counters' store.
A request with no key, or whose key and tenant have no limits, costs nothing here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

from guard.errors import LimitsUnavailable, RateLimited
from guard.tenancy.limits import Counters, CountersUnavailable
from guard.tenancy.tenants import Principal

log = logging.getLogger(__name__)
_WARN_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class Held:
    """What an admitted exchange took: given back by ``LimitGate.finish``."""

    subjects: tuple[str, ...]
    stream_id: str | None  # a stream slot is held under this id
    counts_tokens: bool  # a token limit applies: add the answer's usage


class LimitGate:
    def __init__(self, counters: Counters, on_store_error: str = "allow") -> None:
        self._counters = counters
        self._refuse_on_error = on_store_error == "refuse"
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned = 0.0
        self.store_errors = 0  # calls that found the counters' store unreachable

    async def admit(self, principal: Principal | None, stream_id: str | None) -> Held | None:
        """Take one request (and a stream slot, for ``stream_id``) from the key and its
        tenant; raise RateLimited when either is over a limit. None: nothing to give
        back later (no limits, or only requests per minute)."""
        if principal is None or not principal.counted:
            return None
        subjects = principal.counted
        streams = stream_id if principal.counts_streams else None
        try:
            verdict = await self._counters.admit(subjects, streams)
        except CountersUnavailable:
            self._unavailable()
            return None
        if not verdict.allowed:
            wait = max(verdict.retry_after_s, 0.001)
            after = f"retry after {math.ceil(wait)} s"
            raise RateLimited(
                f"Rate limit reached: {verdict.limit} of {_whose(verdict.subject)}; {after}",
                retry_after_s=wait,
            )
        if streams is None and not principal.counts_tokens:
            return None
        return Held(tuple(s for s, _ in subjects), streams, principal.counts_tokens)

    def finish(self, held: Held, tokens: int | None) -> None:
        """Give back what ``held`` took, after the answer (never blocks)."""
        if held.stream_id is None and not (held.counts_tokens and tokens):
            return
        task = asyncio.get_running_loop().create_task(self._give_back(held, tokens))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._counters.aclose()

    async def _give_back(self, held: Held, tokens: int | None) -> None:
        try:
            if held.stream_id is not None:
                await self._counters.release_stream(held.subjects, held.stream_id)
            if held.counts_tokens and tokens:
                await self._counters.add_tokens(held.subjects, tokens)
        except CountersUnavailable:
            self._unavailable(refusing=False)

    def _unavailable(self, *, refusing: bool = True) -> None:
        self.store_errors += 1
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY_S:
            self._warned = now
            log.warning(
                "limits: the counters' store cannot be reached (%d so far)", self.store_errors
            )
        if refusing and self._refuse_on_error:
            raise LimitsUnavailable("Limits cannot be checked now; try again shortly")


def _whose(subject: str | None) -> str:
    kind, _, name = (subject or "").partition(":")
    return f"{'tenant' if kind == 'tenant' else 'key'} {name}"
