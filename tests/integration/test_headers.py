"""Headers: hop-by-hop dropped, credentials injected, client keys never forwarded."""

import httpx

from tests.conftest import make_settings

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}


def test_credentials_come_from_the_environment_not_the_client(guard_at, upstream, monkeypatch):
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-123")
    monkeypatch.setenv("FAKE_ORG", "org-7")
    settings = make_settings(
        upstream.base_url,
        upstreams=[
            {
                "name": "fake",
                "base_url": upstream.base_url,
                "api_key_env": "FAKE_UPSTREAM_KEY",
                "headers_env": {"X-Org": "FAKE_ORG"},
            },
            {"name": "fake-ollama", "base_url": upstream.base_url},
        ],
    )
    guard = guard_at(settings)
    r = httpx.post(
        f"{guard.url}/v1/chat/completions",
        json=CHAT,
        headers={"authorization": "Bearer client-key-for-guard", "x-org": "client-org"},
    )
    assert r.status_code == 200
    sent = upstream.requests[-1]
    assert sent.headers["authorization"] == "Bearer sk-upstream-123"
    assert [v for k, v in sent.raw_headers if k.lower() == "x-org"] == ["org-7"]
    assert "client-key-for-guard" not in str(sent.raw_headers)


def test_hop_by_hop_dropped_end_to_end_kept(guard, upstream):
    upstream.behaviour.response_headers = {
        "x-request-id": "up-1",
        "keep-alive": "timeout=5",
        "x-drop-me": "1",
        "connection": "x-drop-me",
    }
    r = httpx.post(
        f"{guard.url}/v1/chat/completions",
        json=CHAT,
        headers={
            "x-trace": "t1",
            "keep-alive": "300",
            "te": "trailers",
            "connection": "x-hop",
            "x-hop": "secret",
            "user-agent": "my-client/1.0",
            "client-authorization": "keep",
        },
    )
    sent = upstream.requests[-1].headers
    assert sent["x-trace"] == "t1"
    assert sent["user-agent"] == "my-client/1.0"
    assert sent["client-authorization"] == "keep"
    assert "x-hop" not in sent and "te" not in sent and "keep-alive" not in sent
    assert sent["accept-encoding"] == "identity"
    assert r.headers["x-request-id"] == "up-1"
    assert "x-drop-me" not in r.headers and "keep-alive" not in r.headers


def test_no_duplicate_date_or_server_headers(guard, upstream):
    upstream.behaviour.response_headers = {"server": "vllm"}
    r = httpx.post(f"{guard.url}/v1/chat/completions", json=CHAT)
    names = [k.lower() for k, _ in r.headers.multi_items()]
    assert names.count("date") <= 1
    assert names.count("server") <= 1
    assert names.count("content-length") == 1


def test_upstream_cookies_never_travel_to_another_client(guard, upstream):
    upstream.behaviour.response_headers = {"set-cookie": "session=alice-secret; Path=/"}
    with httpx.Client() as alice:
        assert alice.post(f"{guard.url}/v1/chat/completions", json=CHAT).status_code == 200
    upstream.behaviour.response_headers = {}
    with httpx.Client() as bob:
        bob.post(f"{guard.url}/v1/chat/completions", json=CHAT)
    assert "cookie" not in upstream.requests[-1].headers


def test_json_content_type_is_sent_when_the_client_omits_it(guard, upstream):
    raw = b'{"model": "m1", "messages": [{"role": "user", "content": "hi"}]}'
    assert httpx.post(f"{guard.url}/v1/chat/completions", content=raw).status_code == 200
    assert upstream.requests[-1].headers["content-type"] == "application/json"
