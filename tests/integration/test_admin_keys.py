"""Roles on the admin API, and tenants and keys managed through it, over real HTTP."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from guard.db import models
from tests.conftest import make_settings

TOKEN = "bootstrap-admin-token-0123456789"  # noqa: S105
CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def server(guard_at, upstream, monkeypatch):
    monkeypatch.setenv("GUARD_ADMIN_TOKEN", TOKEN)
    # A long cache: revocations through the API must not wait for it.
    return guard_at(
        make_settings(upstream.base_url, auth={"required": True, "cache_seconds": 3600})
    )


def call(server, method, path, key=TOKEN, **kwargs):
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=10, **kwargs)


def new_key(server, key=TOKEN, **body):
    r = call(server, "POST", "/admin/keys", key, json=body)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def keys(server):
    r = call(server, "POST", "/admin/tenants", json={"id": "acme", "attributes": {"tier": "gold"}})
    assert r.status_code == 201, r.text
    return {
        "admin": new_key(server, role="admin", name="ops")["key"],
        "auditor": new_key(server, role="auditor", name="compliance")["key"],
        "client": new_key(server, tenant="acme", name="app")["key"],
    }


def admin_events(server):
    repo = server.app.state.recorder.repo
    table = models.events
    return repo.events(sa.select(table).where(table.c.kind == "admin").order_by(table.c.started_at))


def test_keys_made_through_the_api_work_and_are_shown_once(server, upstream, keys):
    r = call(server, "POST", "/v1/chat/completions", keys["client"], json=CHAT)
    assert r.status_code == 200, r.text
    listed = call(server, "GET", "/admin/keys", keys["admin"]).json()["data"]
    assert {k["role"] for k in listed} == {"admin", "auditor", "client"}
    text = str(listed)
    for token in keys.values():
        assert token not in text and token.split("_", 2)[2] not in text
    assert not {"key", "hash", "salt"} & {name for k in listed for name in k}
    assert [k["tenant"] for k in listed if k["role"] == "client"] == ["acme"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("GET", "/admin/audit/events", None, id="audit-read"),
        pytest.param("GET", "/admin/tenants", None, id="tenants-read"),
        pytest.param("POST", "/admin/tenants", {"id": "evil"}, id="tenant-write"),
        pytest.param("POST", "/admin/keys", {"role": "admin"}, id="key-write"),
        pytest.param("POST", "/admin/policies/reload", None, id="policy-reload"),
    ],
)
def test_client_keys_never_reach_the_admin_api(server, keys, method, path, body):
    r = call(server, method, path, keys["client"], json=body)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "insufficient_permissions"
    assert call(server, method, path, None, json=body).status_code == 401
    assert call(server, method, path, "not-a-key-0123456789", json=body).status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("POST", "/admin/tenants", {"id": "auditor-made"}, id="tenant-create"),
        pytest.param(
            "PATCH", "/admin/tenants/acme", {"attributes": {"tier": "x"}}, id="tenant-set"
        ),
        pytest.param("POST", "/admin/keys", {"role": "client"}, id="key-create"),
        pytest.param("GET", "/admin/keys", None, id="key-list"),
        pytest.param("POST", "/admin/policies/reload", None, id="policy-reload"),
        pytest.param("GET", "/admin/policies/", None, id="policy-read"),
    ],
)
def test_auditors_read_the_audit_trail_and_nothing_else(server, keys, method, path, body):
    assert call(server, "GET", "/admin/audit/events", keys["auditor"]).status_code == 200
    assert call(server, "GET", "/admin/audit/stats", keys["auditor"]).status_code == 200
    r = call(server, method, path, keys["auditor"], json=body)
    assert r.status_code == 403
    assert call(server, "GET", "/admin/tenants/auditor-made", keys["admin"]).status_code == 404


def test_a_key_revoked_through_the_api_stops_at_once_and_the_action_is_recorded(
    server, upstream, keys
):
    chat = {"json": CHAT}
    assert call(server, "POST", "/v1/chat/completions", keys["client"], **chat).status_code == 200
    key_id = keys["client"].split("_")[1]
    r = call(server, "DELETE", f"/admin/keys/{key_id}", keys["admin"])
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    refused = call(server, "POST", "/v1/chat/completions", keys["client"], **chat)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["error"]["message"]
    assert call(server, "DELETE", "/admin/keys/0000000000000000", keys["admin"]).status_code == 404
    events = admin_events(server)
    actions = [(e.route, e.method, e.key_id) for e in events]
    admin_id = keys["admin"].split("_")[1]
    assert ("keys.revoke", "DELETE", admin_id) in actions
    assert ("tenants.create", "POST", "admin-token") in actions
    assert [a for a in actions if a[0] == "keys.create"] == [
        ("keys.create", "POST", "admin-token")
    ] * 3
    text = str([e.detail for e in events])
    for token in keys.values():
        assert token.split("_", 2)[2] not in text


def test_a_tenant_change_reaches_the_next_request_at_once(server, upstream, keys):
    # The client key's tenant is cached for an hour; the change made here must not wait.
    r = call(
        server,
        "PATCH",
        "/admin/tenants/acme",
        keys["admin"],
        json={"limits": {"max_body_bytes": 1024}},
    )
    assert r.status_code == 200, r.text
    assert r.json()["limits"] == {"max_body_bytes": 1024}
    big = {"model": "m1", "messages": [{"role": "user", "content": "x" * 2000}]}
    assert call(server, "POST", "/v1/chat/completions", keys["client"], json=big).status_code == 413
    r = call(
        server,
        "PATCH",
        "/admin/tenants/acme",
        keys["admin"],
        json={"limits": {"max_body_bytes": None}},
    )
    assert r.json()["limits"] == {}
    assert call(server, "POST", "/v1/chat/completions", keys["client"], json=big).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "param"),
    [
        pytest.param("POST", "/admin/tenants", {"id": "bad id!"}, 400, None, id="bad-tenant-id"),
        pytest.param("POST", "/admin/tenants", {"id": "acme"}, 409, None, id="duplicate-tenant"),
        pytest.param(
            "POST", "/admin/tenants", {"id": "t2", "colour": 1}, 400, "colour", id="unknown-field"
        ),
        pytest.param(
            "POST",
            "/admin/tenants",
            {"id": "t2", "limits": {"bogus": 1}},
            400,
            None,
            id="unknown-limit",
        ),
        pytest.param(
            "POST",
            "/admin/tenants",
            {"id": "t2", "limits": {"requests_per_minute": 0}},
            400,
            None,
            id="zero-limit",
        ),
        pytest.param(
            "PATCH", "/admin/tenants/nobody", {"unset": ["x"]}, 404, None, id="unknown-tenant"
        ),
        pytest.param("PATCH", "/admin/tenants/acme", {}, 400, None, id="empty-change"),
        pytest.param(
            "POST", "/admin/keys", {"tenant": "nobody"}, 404, None, id="key-unknown-tenant"
        ),
        pytest.param("POST", "/admin/keys", {"role": "root"}, 400, None, id="unknown-role"),
        pytest.param(
            "POST",
            "/admin/keys",
            {"role": "admin", "tenant": "acme"},
            400,
            None,
            id="admin-key-tenant",
        ),
        pytest.param(
            "POST", "/admin/keys", {"expires_at": "2001-01-01T00:00:00Z"}, 400, None, id="expired"
        ),
        pytest.param(
            "POST", "/admin/keys", {"expires_at": "soon"}, 400, "expires_at", id="bad-date"
        ),
    ],
)
def test_bad_admin_input_gets_a_clear_error(  # noqa: PLR0917
    server, keys, method, path, body, status, param
):
    r = call(server, method, path, keys["admin"], json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"]
    if param:
        assert error["param"] == param
