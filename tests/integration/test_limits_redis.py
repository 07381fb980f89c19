"""Limit counters in the real Redis on 127.0.0.1:6379: the shared behaviour
(``CountersContract``), replicas sharing counts, key TTLs, the server's clock,
and an unreachable store. Each test has its own key prefix, deleted afterwards."""

import asyncio
import logging
import time
import uuid

import pytest
import redis

from guard.tenancy.limits import (
    CountersUnavailable,
    LimitSettings,
    RedisCounters,
    Verdict,
    open_counters,
)
from tests.fakes.tcp_relay import TcpRelay
from tests.unit.test_limits import CountersContract, FakeClock, admitted

REDIS_PORT = 6379
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/0"


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()  # no Redis is a failure, not a skip
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client):
    prefix = f"guard:test:limits:{uuid.uuid4().hex}:"
    yield prefix
    stale = list(redis_client.scan_iter(match=prefix + "*"))
    if stale:
        redis_client.delete(*stale)


@pytest.fixture
async def replicas(prefix):
    """``replicas(n, clock=..., **kw)``: n RedisCounters sharing this test's prefix."""
    opened: list[RedisCounters] = []

    def open_(n=1, **kw):
        new = [RedisCounters(REDIS_URL, prefix=prefix, **kw) for _ in range(n)]
        opened.extend(new)
        return new

    yield open_
    for counters in opened:
        await counters.aclose()


class TestRedisCounters(CountersContract):
    @pytest.fixture
    def make_counters(self, replicas):
        return lambda clock, **kw: replicas(clock=clock, **kw)[0]


async def test_two_replicas_share_every_count(replicas):
    clock = FakeClock()
    first, second = replicas(2, clock=clock)
    key = [
        ("key:k1", LimitSettings(requests_per_minute=3, tokens_per_day=100, concurrent_streams=1))
    ]
    assert await admitted(first, key, "s1")
    assert (await second.admit(key, "s2")).limit == "concurrent_streams"
    await first.release_stream(["key:k1"], "s1")
    assert await admitted(second, key, "s2")
    assert await admitted(first, key)
    assert (await second.admit(key)).limit == "requests_per_minute"  # 3 of 3, together
    clock.advance(60.0)
    await second.add_tokens(["key:k1"], 100)
    assert (await first.admit(key)).limit == "tokens_per_day"


async def test_every_key_expires(replicas, redis_client):
    clock = FakeClock()
    (counters,) = replicas(clock=clock, stream_lease_s=30.0)
    limits = LimitSettings(requests_per_minute=60, tokens_per_minute=10, concurrent_streams=1)
    assert await admitted(counters, [("key:k1", limits)], "s1")
    await counters.add_tokens(["key:k1"], 5)
    minute, day = int(clock.now // 60), int(clock.now // 86_400)
    ttls_ms = {
        "rpm": redis_client.pttl(counters.key("rpm", "key:k1")),
        "tpm": redis_client.pttl(f"{counters.key('tpm', 'key:k1')}:{minute}"),
        "tpd": redis_client.pttl(f"{counters.key('tpd', 'key:k1')}:{day}"),
        "streams": redis_client.pttl(counters.key("streams", "key:k1")),
    }
    assert 0 < ttls_ms["rpm"] <= 1_000  # until the GCRA time passes: one interval
    assert 110_000 < ttls_ms["tpm"] <= 120_000
    assert 2 * 86_400_000 - 10_000 < ttls_ms["tpd"] <= 2 * 86_400_000
    assert 20_000 < ttls_ms["streams"] <= 30_000
    await counters.release_stream(["key:k1"], "s1")
    assert not redis_client.exists(counters.key("streams", "key:k1"))


async def test_without_a_clock_the_server_time_counts(replicas):
    (counters,) = replicas(stream_lease_s=0.2)
    key = [
        ("key:k1", LimitSettings(requests_per_minute=2, tokens_per_day=10, concurrent_streams=1))
    ]
    assert await admitted(counters, key, "s1")
    refused = await counters.admit(key, "s2")
    assert refused.limit == "concurrent_streams"
    await asyncio.sleep(0.25)  # s1's lease ran out on the server's clock
    assert await admitted(counters, key, "s2")
    refused = await counters.admit(key)
    assert refused.limit == "requests_per_minute"
    assert 29.0 < refused.retry_after_s <= 30.0
    await counters.add_tokens(["key:k1"], 10)
    refused = await counters.admit(key)
    until_midnight = 86_400 - time.time() % 86_400
    assert refused.limit == "tokens_per_day"
    assert refused.retry_after_s == pytest.approx(until_midnight, abs=2.0)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(
            lambda c: c.admit([("key:k1", LimitSettings(requests_per_minute=1))]), id="admit"
        ),
        pytest.param(lambda c: c.add_tokens(["key:k1"], 5), id="add_tokens"),
        pytest.param(lambda c: c.release_stream(["key:k1"], "s1"), id="release_stream"),
    ],
)
async def test_an_unreachable_store_raises_quickly_without_the_password(call, caplog):
    counters = RedisCounters("redis://:hunter2@127.0.0.1:1/0")
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(CountersUnavailable) as caught:
        await call(counters)
    assert time.monotonic() - started < 1.0
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in caplog.text
    await counters.aclose()


async def test_counting_resumes_when_the_store_comes_back(prefix):
    with TcpRelay(REDIS_PORT) as relay:
        counters = RedisCounters(f"redis://127.0.0.1:{relay.port}/0", prefix=prefix)
        key = [("key:k1", LimitSettings(requests_per_minute=2))]
        try:
            assert await admitted(counters, key)
            relay.cut()
            with pytest.raises(CountersUnavailable):
                await counters.admit(key)
            relay.restore()
            assert await admitted(counters, key)
            assert not await admitted(counters, key)  # the cut request was not counted
        finally:
            await counters.aclose()


async def test_open_counters_with_a_url_shares_counts_in_redis(prefix):
    counters = open_counters(REDIS_URL, prefix=prefix, clock=FakeClock())
    assert isinstance(counters, RedisCounters)
    key = [("key:k1", LimitSettings(requests_per_minute=1))]
    assert await counters.admit(key) == Verdict(True)
    assert (await counters.admit(key)).limit == "requests_per_minute"
    await counters.aclose()
