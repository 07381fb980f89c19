"""A client that leaves mid-stream cancels the upstream request."""

import httpx
import pytest

from tests.conftest import make_settings
from tests.fakes.detectors import MarkerPolicy, marker_registry

LONG = " ".join(f"word{i}." for i in range(60))


@pytest.mark.parametrize("detectors", [False, True], ids=["relay", "guarded"])
@pytest.mark.parametrize(
    ("path", "model"), [("/v1/chat/completions", "m1"), ("/api/chat", "olm")], ids=["sse", "ndjson"]
)
def test_client_disconnect_cancels_upstream(guard_at, upstream, detectors, path, model):
    if detectors:
        registry, _ = marker_registry()
        settings = make_settings(upstream.base_url, detectors={"marker": {}})
        server = guard_at(settings, registry=registry, policy=MarkerPolicy())
    else:
        server = guard_at()
    upstream.behaviour.reply_text = LONG
    upstream.behaviour.chunk_delay = 0.05
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "go"}]}
    with httpx.Client() as client, client.stream("POST", server.url + path, json=body) as r:
        first = next(r.iter_bytes())
        assert first
    assert upstream.wait_for(lambda: upstream.disconnects == 1, timeout=5)
    assert upstream.streams_finished == 0


def test_upstream_failing_mid_stream_ends_the_client_stream(guard_at, upstream):
    settings = make_settings(
        upstream.base_url,
        upstreams=[
            {"name": "fake", "base_url": upstream.base_url, "timeouts": {"read": 0.3}},
            {"name": "fake-ollama", "base_url": upstream.base_url},
        ],
    )
    server = guard_at(settings)
    upstream.behaviour.reply_text = "a b c d"
    upstream.behaviour.chunk_delay = 1.0  # longer than guard's read timeout
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        timeout=10,
        json={"model": "m1", "stream": True, "messages": [{"role": "user", "content": "go"}]},
    )
    assert r.status_code == 200  # headers were sent before the upstream stalled
    assert b"[DONE]" not in r.content
    assert httpx.get(f"{server.url}/healthz").status_code == 200


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_client_leaving_before_the_first_byte_cancels_upstream(guard, upstream, stream):
    upstream.behaviour.first_byte_delay = 3.0
    body = {"model": "m1", "stream": stream, "messages": [{"role": "user", "content": "go"}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{guard.url}/v1/chat/completions", json=body, timeout=0.3)
    assert upstream.wait_for(lambda: upstream.disconnects == 1, timeout=2)
    assert httpx.get(f"{guard.url}/healthz").status_code == 200
