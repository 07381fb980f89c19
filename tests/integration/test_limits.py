"""Limits per tenant and per key over real HTTP: 429 with Retry-After in the OpenAI
error format, recorded, and the model server spared; counted in memory, or in the
real Redis server shared by replicas."""

from __future__ import annotations

import threading
import uuid

import httpx
import pytest
import redis

from tests.conftest import make_settings
from tests.integration.test_audit_events import recorded

REDIS_URL = "redis://127.0.0.1:6379/0"
KEYS = {"A1": "key-a1-0123456789abcdef", "A2": "key-a2-0123456789abcdef"}


def settings_for(upstream, monkeypatch, *, key_limits=None, tenant_limits=None, **extra):
    for name, value in KEYS.items():
        monkeypatch.setenv(f"LIMIT_TEST_{name}", value)
    keys = [
        {
            "id": name.lower(),
            "key_env": f"LIMIT_TEST_{name}",
            "tenant": "acme",
            "limits": key_limits or {},
        }
        for name in KEYS
    ]
    return make_settings(
        upstream.base_url,
        auth={"required": True, "keys": keys},
        tenants=[{"id": "acme", "limits": tenant_limits or {}}],
        **extra,
    )


def chat(guard, key="A1", stream=False, content="hello"):
    body = {"model": "m1", "messages": [{"role": "user", "content": content}], "stream": stream}
    return httpx.post(
        f"{guard.url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {KEYS[key]}"},
        timeout=10,
    )


def test_over_the_keys_request_rate_gets_429_with_retry_after(guard_at, upstream, monkeypatch):
    guard = guard_at(settings_for(upstream, monkeypatch, key_limits={"requests_per_minute": 2}))
    assert [chat(guard).status_code for _ in range(2)] == [200, 200]
    refused = chat(guard)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 30
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert "requests_per_minute of key a1" in error["message"]
    assert len(upstream.requests) == 2
    assert chat(guard, "A2").status_code == 200  # another key of the tenant has its own
    events = recorded(guard, 4)
    assert [(e.status, e.key_id) for e in events] == [
        (200, "a1"),
        (200, "a1"),
        (429, "a1"),
        (200, "a2"),
    ]
    assert events[2].error_code == "rate_limit_exceeded"


def test_a_tenant_limit_counts_every_key_of_the_tenant(guard_at, upstream, monkeypatch):
    guard = guard_at(settings_for(upstream, monkeypatch, tenant_limits={"requests_per_minute": 3}))
    codes = [chat(guard, key).status_code for key in ("A1", "A2", "A1", "A2")]
    assert codes == [200, 200, 200, 429]
    assert "of tenant acme" in chat(guard, "A1").json()["error"]["message"]


def test_tokens_per_minute_refuse_once_the_answers_used_them(guard_at, upstream, monkeypatch):
    guard = guard_at(settings_for(upstream, monkeypatch, key_limits={"tokens_per_minute": 20}))
    upstream.behaviour.reply_text = " ".join(["word"] * 30)  # 30 completion tokens
    assert chat(guard).status_code == 200
    refused = None
    for _ in range(50):  # tokens are added just after the answer, off the request path
        refused = chat(guard)
        if refused.status_code == 429:
            break
    assert refused is not None and refused.status_code == 429
    assert "tokens_per_minute" in refused.json()["error"]["message"]
    # This minute alone is over: it must end (up to 60 s), then fade until 30 tokens
    # weigh under 20 (a third of the next minute, 20 s).
    assert 20 < int(refused.headers["retry-after"]) <= 81


def test_concurrent_streams_hold_a_slot_until_they_close(guard_at, upstream, monkeypatch):
    guard = guard_at(settings_for(upstream, monkeypatch, key_limits={"concurrent_streams": 1}))
    upstream.behaviour.reply_pieces = ["one ", "two ", "three"]
    upstream.behaviour.chunk_delay = 0.3
    started = threading.Event()
    first: dict[str, object] = {}

    def stream() -> None:
        body = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with httpx.stream(
            "POST",
            f"{guard.url}/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {KEYS['A1']}"},
            timeout=10,
        ) as r:
            first["status"] = r.status_code
            started.set()
            first["text"] = r.read().decode()

    worker = threading.Thread(target=stream)
    worker.start()
    assert started.wait(5)
    second = chat(guard, stream=True)
    assert second.status_code == 429
    assert "concurrent_streams" in second.json()["error"]["message"]
    assert chat(guard).status_code == 200  # an answer that is not streamed holds no slot
    worker.join(10)
    assert first["status"] == 200 and "three" in str(first["text"])
    upstream.behaviour.chunk_delay = 0.0
    for _ in range(50):  # the slot is freed as the stream's exchange is recorded
        if chat(guard, stream=True).status_code == 200:
            break
    else:
        pytest.fail("the stream slot was never freed")


@pytest.fixture
def redis_prefix():
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()  # Redis must run here (CI starts it)
    yield
    for key in client.scan_iter("guard:limits:*key:a1*"):
        client.delete(key)
    client.close()


def test_replicas_share_the_counts_in_redis(guard_at, upstream, monkeypatch, redis_prefix):
    settings = settings_for(
        upstream,
        monkeypatch,
        key_limits={"requests_per_minute": 3},
        limits={"redis_url": REDIS_URL},
    )
    # A fresh key id per run, so that counts left by another run cannot meet this one.
    suffix = uuid.uuid4().hex[:8]
    data = settings.model_dump()
    for key in data["auth"]["keys"]:
        key["id"] = f"{key['id']}-{suffix}"
    settings = type(settings).model_validate(data)
    first, second = guard_at(settings), guard_at(settings)
    codes = [chat(g).status_code for g in (first, second, first, second)]
    assert codes == [200, 200, 200, 429]


@pytest.mark.parametrize(("policy", "status"), [("allow", 200), ("refuse", 503)])
def test_an_unreachable_redis_follows_on_store_error(
    guard_at, upstream, monkeypatch, policy, status
):
    settings = settings_for(
        upstream,
        monkeypatch,
        key_limits={"requests_per_minute": 1},
        limits={"redis_url": "redis://127.0.0.1:1/0", "on_store_error": policy},
    )
    guard = guard_at(settings)
    codes = [chat(guard).status_code for _ in range(3)]
    assert codes == [status] * 3
    if status == 503:
        assert chat(guard).json()["error"]["code"] == "limits_unavailable"
        assert upstream.requests == []


def test_passthrough_paths_count_against_the_same_limits(guard_at, upstream, monkeypatch):
    settings = settings_for(
        upstream,
        monkeypatch,
        key_limits={"requests_per_minute": 2},
        passthrough=[{"path": "/health", "methods": ["GET"], "upstream": "fake"}],
    )
    guard = guard_at(settings)
    headers = {"authorization": f"Bearer {KEYS['A1']}"}
    codes = [httpx.get(f"{guard.url}/health", headers=headers).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert len(upstream.requests) == 2
    assert chat(guard).status_code == 429  # the model routes share the count
