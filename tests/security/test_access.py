"""Getting around the keys: no key, a bad one, the wrong role, and paths and methods
that try to reach the model server or the admin API by another way."""

from __future__ import annotations

import httpx
import pytest

from tests.security.conftest import ADMIN_TOKEN, raw_request, status_of

CHAT = b'{"model": "m1", "messages": [{"role": "user", "content": "hello"}]}'
# Scanned, the bundled pii policy refuses it: a path routed to a model route shows
# it went through the guards by this 400.
CARD = b'{"model": "m1", "messages": [{"role": "user", "content": "card 4111 1111 1111 1111"}]}'


def bearer(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


@pytest.mark.parametrize(
    "which",
    ["none", "garbage", "revoked", "expired", "truncated", "other-scheme", "admin", "auditor"],
)
def test_only_a_live_client_key_reaches_the_model(strict, sealed, suite_keys, which):
    tokens = {
        "none": None,
        "garbage": "sk-0123456789abcdef0123456789",
        "revoked": suite_keys.revoked,
        "expired": suite_keys.expired,
        "truncated": suite_keys.client[:-1],
        "admin": suite_keys.admin,
        "auditor": suite_keys.auditor,
    }
    if which == "other-scheme":
        headers = {"authorization": f"Basic {suite_keys.client}"}
    else:
        headers = bearer(tokens[which])
    r = httpx.post(f"{strict.url}/v1/chat/completions", content=CHAT, headers=headers)
    assert r.status_code == (403 if which in {"admin", "auditor"} else 401)
    assert set(r.json()["error"]) >= {"message", "type", "code"}
    sealed.allow(1)
    ok = httpx.post(
        f"{strict.url}/v1/chat/completions", content=CHAT, headers=bearer(suite_keys.client)
    )
    assert ok.status_code == 200 and sealed.received == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/audit/events"),
        ("GET", "/admin/audit/export"),
        ("GET", "/admin/tenants"),
        ("POST", "/admin/keys"),
        ("DELETE", "/admin/keys/0123456789abcdef"),
        ("POST", "/admin/policies/reload"),
    ],
)
def test_client_keys_never_reach_admin_routes_and_auditors_only_read(
    strict, sealed, suite_keys, method, path
):
    url = f"{strict.url}{path}"
    assert httpx.request(method, url, headers=bearer(suite_keys.client), json={}).status_code == 403
    assert httpx.request(method, url, json={}).status_code == 401
    auditor = httpx.request(method, url, headers=bearer(suite_keys.auditor), json={})
    assert auditor.status_code == (200 if path.startswith("/admin/audit") else 403)
    assert httpx.request(method, url, headers=bearer(ADMIN_TOKEN + "x"), json={}).status_code == 401


# Each of these must be refused, or guarded as the route it resolves to (the card in
# the body is then refused by the bundled pii policy): none reaches the model server
# unscanned, and none reaches an admin route without an admin key.
TRICKY_PATHS = [
    "/v1/../admin/tenants",
    "/v1/%2e%2e/admin/tenants",
    "/v1/chat/completions/../../admin/keys",
    "/v1%2fchat%2fcompletions",
    "/v1/chat%2fcompletions",
    "//v1/chat/completions",
    "/V1/chat/completions",
    "/v1/CHAT/completions",
    "/v1/chat/completions/",
    "/v1/chat/completions;x=1",
    "/v1/chat/completions%00",
    "/v1/models",
    "/v1/fine_tuning/jobs",
    "/api/../admin/tenants",
    "/%61dmin/tenants",
    "/admin%2ftenants",
    "/admin/./tenants",
]


@pytest.mark.parametrize("path", TRICKY_PATHS)
def test_paths_outside_the_guarded_routes_never_reach_the_model_or_the_admin_api(
    strict, sealed, suite_keys, path
):
    for token in (suite_keys.client, None):
        head = f"POST {path} HTTP/1.1\r\nHost: guard\r\nContent-Type: application/json\r\n"
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        request = f"{head}{auth}Content-Length: {len(CARD)}\r\nConnection: close\r\n\r\n"
        response = raw_request(strict.port, request.encode() + CARD)
        status = status_of(response)
        assert status in {400, 401, 403, 404, 405}, (path, response[:300])
        assert b"acme" not in response  # no tenant listing leaked


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE", "TRACE"])
def test_other_methods_on_model_routes_never_reach_the_model(strict, sealed, suite_keys, method):
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/api/chat"):
        r = httpx.request(
            method, f"{strict.url}{path}", headers=bearer(suite_keys.client), content=CHAT
        )
        if method == "OPTIONS":  # the allowed methods, answered by guard itself
            assert r.status_code == 204 and "POST" in r.headers["allow"]
            continue
        assert r.status_code in {404, 405}, (method, path, r.status_code)
        if method != "HEAD":
            assert "error" in r.json()


def test_method_override_headers_are_not_honoured(strict, sealed, suite_keys):
    sealed.allow(1)
    headers = {**bearer(suite_keys.client), "x-http-method-override": "DELETE"}
    r = httpx.post(f"{strict.url}/v1/chat/completions", content=CHAT, headers=headers)
    assert r.status_code == 200
    assert sealed.server.requests[-1].method == "POST"


@pytest.mark.parametrize(
    "path",
    [
        "/v1%2fchat%2fcompletions",
        "/v1/chat%2Fcompletions",
        "/v1/chat/completions%5c",
        "//v1/chat/completions",
        "/v1/./chat/completions",
        "/v1/x/../chat/completions",
        "/v1/%2e%2e/v1/chat/completions",
        "/v1/chat/completions%00",
    ],
)
def test_ambiguous_paths_are_refused_before_routing(strict, sealed, suite_keys, path):
    head = f"POST {path} HTTP/1.1\r\nHost: guard\r\nAuthorization: Bearer {suite_keys.client}\r\n"
    request = f"{head}Content-Length: {len(CHAT)}\r\nConnection: close\r\n\r\n"
    response = raw_request(strict.port, request.encode() + CHAT)
    assert status_of(response) == 400, response[:200]
    assert b'"code":"invalid_path"' in response


@pytest.mark.parametrize("path", ["/v1/models", "/api/tags"])
def test_model_lists_take_the_same_keys_as_the_models(strict, sealed, suite_keys, path):
    assert httpx.get(f"{strict.url}{path}").status_code == 401
    assert httpx.get(f"{strict.url}{path}", headers=bearer(suite_keys.revoked)).status_code == 401
    assert httpx.get(f"{strict.url}{path}", headers=bearer(suite_keys.admin)).status_code == 403
    listed = httpx.get(f"{strict.url}{path}", headers=bearer(suite_keys.client))
    assert listed.status_code == 200 and "m1" in listed.text
