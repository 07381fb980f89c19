"""Every error case: the right status, the API's own error shape, and a process that lives on."""

import json
import socket
import threading

import httpx
import pytest

from tests.conftest import make_settings

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}


def openai_error(r, status):
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error


def ollama_error(r, status):
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"]
    assert isinstance(body["error"], str)
    return body["error"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param(b"{not json", None, id="malformed"),
        pytest.param(b"\xff\xfe{}", None, id="invalid-utf8"),
        pytest.param(b"[1, 2]", None, id="not-an-object"),
        pytest.param(b"", None, id="empty"),
        pytest.param(b'{"model": "m1", "messages": "hi"}', "messages", id="messages-type"),
        pytest.param(
            b'{"model": "m1", "messages": [], "stream": "yes"}', "stream", id="stream-type"
        ),
        pytest.param(b'{"model": 7, "messages": []}', "model", id="model-type"),
        pytest.param(
            b'{"model": "m1", "messages": [{"content": {"a": 1}}]}', "messages", id="content-type"
        ),
    ],
)
def test_bad_input_is_400_and_never_reaches_upstream(guard, upstream, body, param):
    r = httpx.post(f"{guard.url}/v1/chat/completions", content=body)
    error = openai_error(r, 404 if param == "model" else 400)
    assert error["param"] == param
    assert upstream.requests == []


def test_bad_input_on_ollama_routes_uses_ollama_shape(guard, upstream):
    ollama_error(httpx.post(f"{guard.url}/api/chat", content=b"{oops"), 400)
    ollama_error(
        httpx.post(
            f"{guard.url}/api/generate", json={"model": "olm", "prompt": "x", "context": [1, 2]}
        ),
        400,
    )
    assert upstream.requests == []


def test_token_id_prompts_are_refused(guard, upstream):
    r = httpx.post(f"{guard.url}/v1/completions", json={"model": "m1", "prompt": [1, 2, 3]})
    assert "token ids" in openai_error(r, 400)["message"]


def test_body_over_the_limit_is_413(guard_at, upstream):
    guard = guard_at(make_settings(upstream.base_url, server={"max_body_bytes": 2048}))
    big = {"model": "m1", "messages": [{"role": "user", "content": "x" * 4000}]}
    error = openai_error(httpx.post(f"{guard.url}/v1/chat/completions", json=big), 413)
    assert error["code"] == "request_too_large"

    def chunks():  # no content-length: the limit holds while reading
        for _ in range(10):
            yield b" " * 1000

    r = httpx.post(f"{guard.url}/v1/chat/completions", content=chunks())
    openai_error(r, 413)
    ollama_error(httpx.post(f"{guard.url}/api/chat", json=big), 413)
    assert upstream.requests == []


def test_unknown_paths_and_methods_are_refused(guard, upstream):
    assert openai_error(httpx.get(f"{guard.url}/v1/files"), 404)["code"] == "not_found"
    openai_error(httpx.post(f"{guard.url}/v1/audio/speech", json={}), 404)
    openai_error(httpx.post(f"{guard.url}/admin", json={}), 404)
    ollama_error(httpx.post(f"{guard.url}/api/pull", json={"model": "x"}), 404)
    openai_error(httpx.get(f"{guard.url}/v1/chat/completions"), 405)
    assert upstream.requests == []


def test_listed_passthrough_paths_are_forwarded(guard_at, upstream):
    settings = make_settings(
        upstream.base_url, passthrough=[{"path": "/health", "methods": ["GET"], "upstream": "fake"}]
    )
    guard = guard_at(settings)
    r = httpx.get(f"{guard.url}/health?probe=1")
    assert r.status_code == 200
    assert r.text == "ok"
    assert upstream.requests[-1].query == "probe=1"
    openai_error(httpx.post(f"{guard.url}/health"), 405)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (
            400,
            {
                "error": {
                    "message": "bad max_tokens",
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                }
            },
        ),
        (
            429,
            {"error": {"message": "slow down", "type": "rate_limit", "param": None, "code": None}},
        ),
        (
            500,
            {
                "error": {
                    "message": "engine died",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            },
        ),
        (503, b"<html>upstream maintenance</html>"),
    ],
)
def test_upstream_errors_pass_through_with_their_status(guard, upstream, status, body):
    upstream.behaviour.status = status
    upstream.behaviour.error_body = body
    for payload in (CHAT, {**CHAT, "stream": True}):
        r = httpx.post(f"{guard.url}/v1/chat/completions", json=payload)
        assert r.status_code == status
        if isinstance(body, bytes):
            assert r.content == body
        else:
            assert r.json() == body


def test_upstream_reset_is_502(guard, upstream):
    upstream.behaviour.reset = True
    error = openai_error(httpx.post(f"{guard.url}/v1/chat/completions", json=CHAT), 502)
    assert error["type"] == "upstream_error"
    assert "closed the connection" in error["message"]
    assert "closed the connection" in ollama_error(
        httpx.post(f"{guard.url}/api/chat", json={**CHAT, "model": "olm"}), 502
    )


def test_upstream_refusing_connections_is_502(guard_at, upstream):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening
        guard = guard_at(make_settings(dead))
        error = openai_error(httpx.post(f"{guard.url}/v1/chat/completions", json=CHAT), 502)
    assert "refused" in error["message"]


def test_upstream_timeout_is_504(guard_at, upstream):
    settings = make_settings(
        upstream.base_url,
        upstreams=[
            {"name": "fake", "base_url": upstream.base_url, "timeouts": {"read": 0.3}},
            {"name": "fake-ollama", "base_url": upstream.base_url},
        ],
    )
    guard = guard_at(settings)
    upstream.behaviour.first_byte_delay = 1.5
    error = openai_error(httpx.post(f"{guard.url}/v1/chat/completions", json=CHAT), 504)
    assert error["code"] == "upstream_timeout"


def test_connect_timeout_is_504(guard_at, upstream):
    # A listening socket whose backlog is full never completes new handshakes.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        addr = f"http://127.0.0.1:{sock.getsockname()[1]}"
        fillers = []
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(sock.getsockname())
            fillers.append(filler)
        settings = make_settings(
            addr,
            upstreams=[
                {"name": "fake", "base_url": addr, "timeouts": {"connect": 0.3}},
                {"name": "fake-ollama", "base_url": addr},
            ],
        )
        guard = guard_at(settings)
        r = httpx.post(f"{guard.url}/v1/chat/completions", json=CHAT, timeout=10)
        for filler in fillers:
            filler.close()
    assert openai_error(r, 504)["code"] == "upstream_timeout"


def test_process_survives_a_burst_of_garbage(guard, upstream):
    payloads = [
        b"{",
        b"\x00" * 100,
        b'{"model": "m1", "messages": [' * 50,
        b"null",
        b'{"model": "m1", "messages": [], "n": 1e999999}',
        b'{"model":"m1","model":"x"}',
    ]

    def fire(payload):
        httpx.post(f"{guard.url}/v1/chat/completions", content=payload)

    threads = [threading.Thread(target=fire, args=(p,)) for p in payloads * 5]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert httpx.get(f"{guard.url}/healthz").json() == {"status": "ok"}


def test_deep_nesting_is_400_not_500(guard, upstream):
    deep = b'{"model": "m1", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    error = openai_error(httpx.post(f"{guard.url}/v1/chat/completions", content=deep), 400)
    assert "nests too deeply" in error["message"]
    args = b'{"a": ' * 800 + b'"leaf"' + b"}" * 800
    body = (
        b'{"model": "olm", "stream": false, "messages": [{"role": "assistant", "content": "",'
        b' "tool_calls": [{"function": {"name": "f", "arguments": ' + args + b"}}]}]}"
    )
    assert httpx.post(f"{guard.url}/api/chat", content=body).status_code == 200
    sent = upstream.requests[-1].json()
    assert sent["messages"] == json.loads(body)["messages"]


def test_invalid_utf8_is_400_not_500(guard, upstream):
    body = b'{"model": "m1", "messages": [{"role": "user", "content": "\xff\xfe"}]}'
    error = openai_error(httpx.post(f"{guard.url}/v1/chat/completions", content=body), 400)
    assert error["message"] == "The request body is not valid UTF-8"
    assert upstream.requests == []
