"""Limit counters: the behaviour both stores share (``CountersContract``, run here
in memory and against Redis in tests/integration/test_limits_redis.py), and what
only the memory store does."""

import pytest

from guard.settings import LimitSettings
from guard.tenancy.limits import MemoryCounters, Verdict, open_counters

MIDNIGHT = 1_749_945_600.0  # a UTC midnight
NOON = MIDNIGHT + 12 * 3600  # also the start of a minute


class FakeClock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def admitted(counters, subjects, stream_id=None):
    return (await counters.admit(subjects, stream_id)).allowed


class CountersContract:
    """Each store's test class provides ``make_counters(clock, **kw)``."""

    @pytest.fixture
    def clock(self):
        return FakeClock()

    @pytest.mark.parametrize("limit", [1, 3, 7, 60])
    async def test_a_burst_of_the_limit_then_one_request_per_interval(
        self, make_counters, clock, limit
    ):
        counters = make_counters(clock)
        key = [("key:k1", LimitSettings(requests_per_minute=limit))]
        for _ in range(limit):
            assert await admitted(counters, key)
        refused = await counters.admit(key)
        assert (refused.allowed, refused.limit, refused.subject) == (
            False,
            "requests_per_minute",
            "key:k1",
        )
        assert refused.retry_after_s == pytest.approx(60 / limit, abs=1e-6)
        clock.advance(refused.retry_after_s - 0.001)
        assert not await admitted(counters, key)
        clock.advance(0.001)
        assert await admitted(counters, key)
        assert not await admitted(counters, key)

    async def test_a_refusal_takes_nothing_from_any_subject(self, make_counters, clock):
        counters = make_counters(clock)
        tenant = ("tenant:acme", LimitSettings(requests_per_minute=2, concurrent_streams=1))
        key = ("key:k1", LimitSettings(requests_per_minute=1))
        assert await admitted(counters, [tenant, key])
        refused = await counters.admit([tenant, key], stream_id="s1")
        assert (refused.limit, refused.subject) == ("requests_per_minute", "key:k1")
        # The tenant's second request and its only stream slot are still there.
        assert await admitted(counters, [tenant], stream_id="s2")
        refused = await counters.admit([tenant], stream_id="s3")
        assert (refused.limit, refused.subject) == ("requests_per_minute", "tenant:acme")

    async def test_the_verdict_names_the_check_with_the_longest_wait(self, make_counters, clock):
        counters = make_counters(clock)
        tenant = ("tenant:acme", LimitSettings(tokens_per_day=100, concurrent_streams=1))
        key = ("key:k1", LimitSettings(requests_per_minute=1))
        assert await admitted(counters, [tenant, key], stream_id="s1")
        await counters.add_tokens(["tenant:acme", "key:k1"], 100)
        assert await counters.admit([tenant, key], stream_id="s2") == Verdict(
            False, "tokens_per_day", "tenant:acme", 12 * 3600.0
        )

    @pytest.mark.parametrize(
        ("usage", "retry_after_s"),
        [
            pytest.param([(30, 100)], 30.000001, id="this-minute-reaches-the-limit"),
            pytest.param([(0, 80), (60, 40)], 15.000001, id="last-minute-fades-out"),
            pytest.param([(0, 150)], 80.000001, id="this-minute-over-then-fading"),
        ],
    )
    async def test_tokens_per_minute_refuse_until_the_sliding_minute_is_under(
        self, make_counters, clock, usage, retry_after_s
    ):
        counters = make_counters(clock)
        key = [("key:k1", LimitSettings(tokens_per_minute=100))]
        for at_s, tokens in usage:
            clock.now = NOON + at_s
            assert await admitted(counters, key)
            await counters.add_tokens(["key:k1"], tokens)
        refused = await counters.admit(key)
        assert (refused.allowed, refused.limit) == (False, "tokens_per_minute")
        assert refused.retry_after_s == pytest.approx(retry_after_s, abs=1e-6)
        clock.advance(retry_after_s - 0.001)
        assert not await admitted(counters, key)
        clock.advance(0.001)
        assert await admitted(counters, key)

    async def test_tokens_per_day_refuse_until_the_next_utc_midnight(self, make_counters, clock):
        counters = make_counters(clock)
        key = [("key:k1", LimitSettings(tokens_per_day=1000))]
        await counters.add_tokens(["key:k1"], 600)
        assert await admitted(counters, key)
        await counters.add_tokens(["key:k1"], 400)
        assert await counters.admit(key) == Verdict(False, "tokens_per_day", "key:k1", 43_200.0)
        clock.advance(43_199.0)
        assert await counters.admit(key) == Verdict(False, "tokens_per_day", "key:k1", 1.0)
        clock.advance(1.0)
        assert await admitted(counters, key)

    async def test_tokens_count_for_every_subject_given(self, make_counters, clock):
        counters = make_counters(clock)
        await counters.add_tokens(["tenant:acme", "key:k1"], 50)
        for subject in ("tenant:acme", "key:k1"):
            verdict = await counters.admit([(subject, LimitSettings(tokens_per_day=50))])
            assert (verdict.limit, verdict.subject) == ("tokens_per_day", subject)
        assert await admitted(counters, [("key:k2", LimitSettings(tokens_per_day=50))])

    async def test_streams_are_refused_at_the_limit_until_one_is_released(
        self, make_counters, clock
    ):
        counters = make_counters(clock)
        tenant = [("tenant:acme", LimitSettings(concurrent_streams=2))]
        assert await admitted(counters, tenant, "s1")
        assert await admitted(counters, tenant, "s2")
        assert await counters.admit(tenant, "s3") == Verdict(
            False, "concurrent_streams", "tenant:acme", 1.0
        )
        assert await admitted(counters, tenant)  # a request that is not a stream
        await counters.release_stream(["tenant:acme"], "s1")
        await counters.release_stream(["tenant:acme", "key:none"], "s1")  # again: harmless
        await counters.release_stream(["tenant:acme"], "unknown")
        assert await admitted(counters, tenant, "s3")
        assert not await admitted(counters, tenant, "s4")

    async def test_a_subject_without_a_stream_limit_holds_no_slot(self, make_counters, clock):
        counters = make_counters(clock)
        tenant = ("tenant:acme", LimitSettings(concurrent_streams=5))
        assert await admitted(counters, [tenant, ("key:k1", LimitSettings())], "s1")
        assert await admitted(counters, [("key:k1", LimitSettings(concurrent_streams=1))], "s2")

    async def test_an_expired_stream_lease_frees_its_slot(self, make_counters, clock):
        counters = make_counters(clock, stream_lease_s=10.0)
        tenant = [("tenant:acme", LimitSettings(concurrent_streams=1))]
        assert await admitted(counters, tenant, "s1")  # never released: its replica died
        clock.advance(9.9)
        assert not await admitted(counters, tenant, "s2")
        clock.advance(0.1)
        assert await admitted(counters, tenant, "s2")

    async def test_no_limits_and_no_subjects_are_always_admitted(self, make_counters, clock):
        counters = make_counters(clock)
        assert await counters.admit([]) == Verdict(True)
        for _ in range(100):
            assert await admitted(
                counters, [("tenant:acme", LimitSettings(max_body_bytes=2048))], "s"
            )


class TestMemoryCounters(CountersContract):
    @pytest.fixture
    def make_counters(self):
        return lambda clock, **kw: MemoryCounters(clock=clock, **kw)


@pytest.mark.parametrize(
    "field",
    ["requests_per_minute", "tokens_per_minute", "tokens_per_day", "concurrent_streams"],
)
@pytest.mark.parametrize("value", [0, -1])
def test_limits_are_positive_or_unset(field, value):
    with pytest.raises(ValueError, match=field):
        LimitSettings(**{field: value})


async def test_memory_forgets_subjects_once_they_no_longer_matter():
    clock = FakeClock()
    counters = MemoryCounters(clock=clock, stream_lease_s=30.0)
    for i in range(10):
        assert await admitted(counters, [(f"key:{i}", LimitSettings(requests_per_minute=60))])
    await counters.add_tokens(["tenant:busy"], 10)
    assert await admitted(counters, [("tenant:streams", LimitSettings(concurrent_streams=1))], "s1")
    assert counters.held() == 12
    clock.advance(61.0)
    await counters.admit([])  # any call sweeps, at most once a minute
    assert counters.held() == 1  # the day's tokens still count
    clock.advance(86_400.0)
    await counters.admit([])
    assert counters.held() == 0


async def test_open_counters_without_a_url_counts_in_memory():
    counters = open_counters(None, clock=FakeClock())
    assert isinstance(counters, MemoryCounters)
    await counters.aclose()
