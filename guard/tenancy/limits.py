"""Limit counters for tenants and keys: requests, tokens and streams per subject.

``admit`` checks every (subject, limits) pair of a request at once and takes from
all of them or from none, so a key over its limit does not use up its tenant's
budget. Requests per minute use GCRA (one "theoretical arrival time" per subject);
tokens, known only once an answer is done, are added afterwards by ``add_tokens``
and refuse the *next* request once a window is full (a sliding minute and the UTC
calendar day); streams hold a leased slot until ``release_stream``.

All arithmetic is in integer microseconds, the same in Python and in Lua, so that
both stores give the same verdicts and retry times. ``MemoryCounters`` serves one
process; ``RedisCounters`` lets replicas share the counts, one round trip per call.
Refused verdicts report the check with the longest wait: only after it can a
retry pass every check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from guard.settings import LimitSettings

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

Clock = Callable[[], float]
_S = 1_000_000  # microseconds per second
_MINUTE = 60 * _S
_DAY = 86_400 * _S
_MINUTE_KEY_TTL_S = 120
_DAY_KEY_TTL_S = 2 * 86_400
_STREAM_WAIT = _S  # a slot frees when some stream ends: no better guess than soon
_PREFIX = "guard:limits:"
# Verdict.limit by the code the checks (and the Lua script) report.
_NAMES = ("", "requests_per_minute", "tokens_per_minute", "tokens_per_day", "concurrent_streams")
_RPM, _TPM, _TPD, _STREAMS = 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class Verdict:
    """Admitted, or refused by ``limit`` (a field name of ``LimitSettings``) of ``subject``
    (as passed in); then ``retry_after_s`` > 0: when trying again can succeed."""

    allowed: bool
    limit: str | None = None
    subject: str | None = None
    retry_after_s: float = 0.0


_ALLOWED = Verdict(allowed=True)


class CountersUnavailable(Exception):
    """The shared store could not be reached; the caller decides: allow or refuse."""


class Counters(Protocol):
    async def admit(
        self, subjects: Sequence[tuple[str, LimitSettings]], stream_id: str | None = None
    ) -> Verdict: ...

    async def add_tokens(self, subjects: Sequence[str], amount: int) -> None: ...

    async def release_stream(self, subjects: Sequence[str], stream_id: str) -> None: ...

    async def aclose(self) -> None: ...


def _refused(subject: str, code: int, wait_us: int) -> Verdict:
    return Verdict(False, _NAMES[code], subject, wait_us / _S)


def _gcra(tat: int, now: int, limit: int) -> tuple[int, int]:
    """(the new arrival time, the wait: > 0 when this request must be refused).
    The burst is ``limit`` emission intervals, not 60 s, so that exactly ``limit``
    requests pass at once even where 60 s does not divide evenly."""
    interval = max(_MINUTE // limit, 1)
    new_tat = max(tat, now) + interval
    return new_tat, new_tat - interval * limit - now


def _minute_wait(this: int, last: int, into: int, limit: int) -> int:
    """The wait until the sliding minute's count drops under ``limit``, with no
    new usage (0: already under). The last minute weighs by its part still
    inside the trailing 60 s: ``this + last * (60 s - into) / 60 s``."""
    if this * _MINUTE + last * (_MINUTE - into) < limit * _MINUTE:
        return 0
    if this >= limit:  # this minute alone is full: it must end, then fade enough
        return _MINUTE - into + _MINUTE * (this - limit) // this + 1
    # The last minute fades until this + last * (left - s) / 60 s < limit.
    return ((_MINUTE - into) * last - _MINUTE * (limit - this)) // last + 1


@dataclass(slots=True)
class _Usage:
    """A subject's tokens: this and the last fixed minute, and this UTC day."""

    minute: int = 0
    this_minute: int = 0
    last_minute: int = 0
    day: int = 0
    today: int = 0

    def roll(self, now: int) -> None:
        minute, day = now // _MINUTE, now // _DAY
        if minute != self.minute:
            self.last_minute = self.this_minute if minute == self.minute + 1 else 0
            self.this_minute, self.minute = 0, minute
        if day != self.day:
            self.today, self.day = 0, day

    def matters(self, now: int) -> bool:
        return self.minute >= now // _MINUTE - 1 or self.day == now // _DAY


class MemoryCounters:
    """Counts for one process in plain dicts (one event loop: no awaits between a
    check and its take, so no locks).

    Memory stays bounded by sweeping, at most once a minute of the clock, every
    subject whose state can no longer matter: a GCRA time already passed, token
    windows of earlier days and minutes, expired stream leases. What remains is
    the subjects active within the last day, which are configured tenants and
    keys, not strings a client can invent. Stream slots are leased here too, so a
    stream whose release was lost frees its slot as it would in Redis.
    """

    def __init__(self, *, stream_lease_s: float = 900.0, clock: Clock = time.time) -> None:
        self._clock = clock
        self._lease = round(stream_lease_s * _S)
        self._tats: dict[str, int] = {}
        self._usage: dict[str, _Usage] = {}
        self._streams: dict[str, dict[str, int]] = {}
        self._swept = 0

    def held(self) -> int:
        """How many subjects have state (for tests and gauges)."""
        return len(self._tats.keys() | self._usage.keys() | self._streams.keys())

    async def admit(
        self, subjects: Sequence[tuple[str, LimitSettings]], stream_id: str | None = None
    ) -> Verdict:
        now = self._now()
        worst = (0, 0, "")  # (code, wait, subject) of the longest wait
        for subject, limits in subjects:
            for code, wait in self._checks(subject, limits, now, stream_id):
                if wait > worst[1]:
                    worst = (code, wait, subject)
        if worst[1] > 0:
            return _refused(worst[2], worst[0], worst[1])
        for subject, limits in subjects:
            self._take(subject, limits, now, stream_id)
        return _ALLOWED

    async def add_tokens(self, subjects: Sequence[str], amount: int) -> None:
        if amount <= 0:
            return
        now = self._now()
        for subject in subjects:
            usage = self._usage.setdefault(subject, _Usage())
            usage.roll(now)
            usage.this_minute += amount
            usage.today += amount

    async def release_stream(self, subjects: Sequence[str], stream_id: str) -> None:
        for subject in subjects:
            open_ = self._streams.get(subject)
            if open_ is not None:
                open_.pop(stream_id, None)
                if not open_:
                    del self._streams[subject]

    async def aclose(self) -> None:
        self._tats.clear()
        self._usage.clear()
        self._streams.clear()

    def _now(self) -> int:
        now = round(self._clock() * _S)
        if now - self._swept >= _MINUTE:
            self._sweep(now)
        return now

    def _checks(
        self, subject: str, limits: LimitSettings, now: int, stream_id: str | None
    ) -> list[tuple[int, int]]:
        """(limit code, wait) for each limit set, in the order the Lua script uses."""
        checks: list[tuple[int, int]] = []
        usage = self._usage.get(subject)
        if usage is not None:
            usage.roll(now)
        if limits.tokens_per_day and usage and usage.today >= limits.tokens_per_day:
            checks.append((_TPD, (usage.day + 1) * _DAY - now))
        if limits.tokens_per_minute and usage:
            into = now - usage.minute * _MINUTE
            wait = _minute_wait(
                usage.this_minute, usage.last_minute, into, limits.tokens_per_minute
            )
            checks.append((_TPM, wait))
        if limits.requests_per_minute:
            _, wait = _gcra(self._tats.get(subject, 0), now, limits.requests_per_minute)
            checks.append((_RPM, wait))
        if limits.concurrent_streams and stream_id is not None:
            full = len(self._open_streams(subject, now)) >= limits.concurrent_streams
            checks.append((_STREAMS, _STREAM_WAIT if full else 0))
        return checks

    def _take(self, subject: str, limits: LimitSettings, now: int, stream_id: str | None) -> None:
        if limits.requests_per_minute:
            tat = self._tats.get(subject, 0)
            self._tats[subject], _ = _gcra(tat, now, limits.requests_per_minute)
        if limits.concurrent_streams and stream_id is not None:
            self._streams.setdefault(subject, {})[stream_id] = now + self._lease

    def _open_streams(self, subject: str, now: int) -> dict[str, int]:
        open_ = self._streams.get(subject, {})
        for stream_id in [s for s, expiry in open_.items() if expiry <= now]:
            del open_[stream_id]
        return open_

    def _sweep(self, now: int) -> None:
        self._swept = now
        self._tats = {s: tat for s, tat in self._tats.items() if tat > now}
        self._usage = {s: u for s, u in self._usage.items() if u.matters(now)}
        streams = {s: self._open_streams(s, now) for s in self._streams}
        self._streams = {s: open_ for s, open_ in streams.items() if open_}


# The clock: the Redis server's TIME unless ARGV[1] carries one. Replicas' clocks
# may disagree by more than a GCRA interval, and one shared clock keeps their
# counts coherent; tests pass a fake clock's time instead. Keys are named by
# their minute or day, so the window keys are built here from the base names in
# KEYS: fine on one Redis (or a primary with replicas), not on a Redis Cluster.
_LUA_CLOCK = """
local S, MINUTE, DAY = 1000000, 60000000, 86400000000
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * S + tonumber(t[2])
end
local minute, day = math.floor(now / MINUTE), math.floor(now / DAY)
"""

# KEYS, four a subject: GCRA time, tokens-per-minute base, tokens-per-day base,
# stream set. ARGV: now | '', lease (µs), stream id | '', then four limits a
# subject ('' when unset). Returns {allowed, subject index, limit code, wait µs}.
_ADMIT_LUA = (
    _LUA_CLOCK
    + """
local lease, stream = tonumber(ARGV[2]), ARGV[3]
local worst = {0, 0, 0}
local function refuse(i, code, wait)
  if wait > worst[3] then worst = {i, code, wait} end
end
local function minute_wait(this, last, into, limit)
  if this * MINUTE + last * (MINUTE - into) < limit * MINUTE then return 0 end
  if this >= limit then return MINUTE - into + math.floor(MINUTE * (this - limit) / this) + 1 end
  return math.floor(((MINUTE - into) * last - MINUTE * (limit - this)) / last) + 1
end
local function gcra(key, limit)
  local interval = math.max(math.floor(MINUTE / limit), 1)
  local tat = math.max(tonumber(redis.call('GET', key) or '0'), now) + interval
  return tat, tat - interval * limit - now
end
local n = #KEYS / 4
for i = 1, n do
  local k, a = (i - 1) * 4, 3 + (i - 1) * 4
  local rpm, tpm, tpd, streams = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]),
    tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  if tpd then
    local today = tonumber(redis.call('GET', KEYS[k + 3] .. ':' .. day) or '0')
    if today >= tpd then refuse(i, 3, (day + 1) * DAY - now) end
  end
  if tpm then
    local this = tonumber(redis.call('GET', KEYS[k + 2] .. ':' .. minute) or '0')
    local last = tonumber(redis.call('GET', KEYS[k + 2] .. ':' .. (minute - 1)) or '0')
    refuse(i, 2, minute_wait(this, last, now - minute * MINUTE, tpm))
  end
  if rpm then
    local _, wait = gcra(KEYS[k + 1], rpm)
    refuse(i, 1, wait)
  end
  if streams and stream ~= '' then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 4], '-inf', now)
    if redis.call('ZCARD', KEYS[k + 4]) >= streams then refuse(i, 4, S) end
  end
end
if worst[1] > 0 then return {0, worst[1], worst[2], worst[3]} end
for i = 1, n do
  local k, a = (i - 1) * 4, 3 + (i - 1) * 4
  local rpm, streams = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 4])
  if rpm then
    local tat = gcra(KEYS[k + 1], rpm)
    -- Kept until the time passes: after it the subject is as good as new.
    redis.call('SET', KEYS[k + 1], string.format('%.0f', tat), 'PX',
      math.ceil((tat - now) / 1000))
  end
  if streams and stream ~= '' then
    redis.call('ZADD', KEYS[k + 4], now + lease, stream)
    -- The set lives as long as its latest lease, whoever's lease that is.
    local ttl = math.max(redis.call('PTTL', KEYS[k + 4]), math.ceil(lease / 1000))
    redis.call('PEXPIRE', KEYS[k + 4], ttl)
  end
end
return {1, 0, 0, 0}
"""
)

# KEYS, two a subject: tokens-per-minute base, tokens-per-day base. ARGV: now | '', amount.
_ADD_TOKENS_LUA = (
    _LUA_CLOCK
    + f"""
for i = 1, #KEYS, 2 do
  local m, d = KEYS[i] .. ':' .. minute, KEYS[i + 1] .. ':' .. day
  redis.call('INCRBY', m, ARGV[2])
  redis.call('EXPIRE', m, {_MINUTE_KEY_TTL_S})
  redis.call('INCRBY', d, ARGV[2])
  redis.call('EXPIRE', d, {_DAY_KEY_TTL_S})
end
"""
)


class RedisCounters:
    """Counts shared by replicas in Redis: every call is one round trip, and
    ``admit`` one script, so its checks and takes are atomic across subjects.

    Keys (``prefix`` + kind + subject) all expire: a GCRA time when it passes,
    minute windows after 2 minutes, day windows after 2 days, a stream set with
    its latest lease, so slots held by a replica that died free themselves.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = _PREFIX,
        stream_lease_s: float = 900.0,
        clock: Clock | None = None,
        timeout_s: float = 1.0,
    ) -> None:
        import redis.asyncio as redis  # noqa: PLC0415  # only when a Redis URL is set
        from redis.asyncio.retry import Retry  # noqa: PLC0415
        from redis.backoff import NoBackoff  # noqa: PLC0415

        self._prefix = prefix
        self._lease = round(stream_lease_s * _S)
        self._clock = clock
        # One quick retry (a pooled connection the server closed), not redis-py's
        # ten with backoff: every request waits on this check.
        self._client: Redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
        )
        self._errors = (redis.RedisError, OSError)
        self._admit = self._client.register_script(_ADMIT_LUA)
        self._add_tokens = self._client.register_script(_ADD_TOKENS_LUA)

    def key(self, kind: str, subject: str) -> str:
        """The key (or, for "tpm" and "tpd", the base before ``:window``) of a
        subject's state of one kind: "rpm", "tpm", "tpd" or "streams"."""
        return f"{self._prefix}{kind}:{subject}"

    async def admit(
        self, subjects: Sequence[tuple[str, LimitSettings]], stream_id: str | None = None
    ) -> Verdict:
        if not any(any(_counted(limits)) for _, limits in subjects):
            return _ALLOWED  # nothing to count: spare the round trip
        keys: list[str] = []
        args: list[str | int] = [self._now_arg(), self._lease, stream_id or ""]
        for subject, limits in subjects:
            keys += [self.key(kind, subject) for kind in ("rpm", "tpm", "tpd", "streams")]
            args += ["" if limit is None else str(limit) for limit in _counted(limits)]
        try:
            allowed, index, code, wait = await self._admit(keys=keys, args=args)
        except self._errors as exc:
            raise _unavailable(exc) from None
        if allowed:
            return _ALLOWED
        return _refused(subjects[int(index) - 1][0], int(code), int(wait))

    async def add_tokens(self, subjects: Sequence[str], amount: int) -> None:
        if amount <= 0 or not subjects:
            return
        keys = [self.key(kind, s) for s in subjects for kind in ("tpm", "tpd")]
        try:
            await self._add_tokens(keys=keys, args=[self._now_arg(), amount])
        except self._errors as exc:
            raise _unavailable(exc) from None

    async def release_stream(self, subjects: Sequence[str], stream_id: str) -> None:
        if not subjects:
            return
        pipe = self._client.pipeline(transaction=False)
        for subject in subjects:
            pipe.zrem(self.key("streams", subject), stream_id)
        try:
            await pipe.execute()
        except self._errors as exc:
            raise _unavailable(exc) from None

    async def aclose(self) -> None:
        await self._client.aclose()

    def _now_arg(self) -> str:
        return "" if self._clock is None else str(round(self._clock() * _S))


def _counted(limits: LimitSettings) -> tuple[int | None, ...]:
    """The limits counted here, in the order of their codes (and of the ARGV)."""
    rpm, tpm, tpd = limits.requests_per_minute, limits.tokens_per_minute, limits.tokens_per_day
    return rpm, tpm, tpd, limits.concurrent_streams


def _unavailable(exc: BaseException) -> CountersUnavailable:
    # Only the type: no message may carry the URL, whose password it may hold.
    log.warning("limits: the shared counters are unreachable (%s)", type(exc).__name__)
    return CountersUnavailable("The limit counters' store could not be reached.")


def open_counters(
    redis_url: str | None,
    *,
    prefix: str = _PREFIX,
    stream_lease_s: float = 900.0,
    clock: Clock | None = None,
) -> Counters:
    """Redis when a URL is set (replicas share the counts), memory otherwise. With
    no clock, Redis uses its server's time and memory this process's."""
    if redis_url:
        return RedisCounters(redis_url, prefix=prefix, stream_lease_s=stream_lease_s, clock=clock)
    return MemoryCounters(stream_lease_s=stream_lease_s, clock=clock or time.time)
