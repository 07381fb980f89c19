"""API keys over real HTTP: a request reaches the model server only with a key that is
known, right, live and a client's; every exchange records its tenant and key."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from guard.db.base import make_engine
from guard.db.tenants import KeyRecord, TenantRepository
from guard.tenancy import keys
from tests.conftest import make_settings
from tests.fakes.policies import write_bundle
from tests.integration.test_audit_events import recorded

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def repo(audit_home):
    engine = make_engine(f"sqlite:///{audit_home / 'audit.sqlite3'}")
    yield TenantRepository(engine)
    engine.dispose()


def make_key(repo, tenant="acme", role="client", **fields):
    made = keys.new_key()
    record = KeyRecord(
        made.id,
        tenant,
        role,
        fields.pop("name", "test"),
        made.salt,
        made.hash,
        fields.pop("limits", {}),
        datetime.now(UTC),
        fields.pop("expires_at", None),
        fields.pop("revoked_at", None),
    )
    repo.create_key(record)
    return made


def post(guard, token=None, path="/v1/chat/completions", body=CHAT, headers=None):
    sent = dict(headers or {})
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    return httpx.post(f"{guard.url}{path}", json=body, headers=sent)


@pytest.fixture
def acme(repo):
    repo.create_tenant("acme", {"commercial": False, "tier": "gold"}, {})
    return repo


@pytest.fixture
def strict_guard(guard_at, upstream, acme):
    return guard_at(make_settings(upstream.base_url, auth={"required": True, "cache_seconds": 0}))


def test_a_client_key_reaches_the_model_and_its_tenant_and_key_are_recorded(
    strict_guard, upstream, acme
):
    made = make_key(acme)
    r = post(strict_guard, made.token)
    assert r.status_code == 200, r.text
    assert made.token not in str(upstream.requests[-1].raw_headers)
    [event] = recorded(strict_guard, 1)
    assert (event.tenant_id, event.key_id, event.status) == ("acme", made.id, 200)


def _wrong_secret(repo):
    made = make_key(repo)
    return made.token[:-4] + ("AAAA" if not made.token.endswith("AAAA") else "BBBB")


@pytest.mark.parametrize(
    ("credential", "message"),
    [
        pytest.param(lambda repo: None, "An API key is required", id="no-key"),
        pytest.param(lambda repo: "not-a-key-at-all", "Invalid API key", id="unknown-token"),
        pytest.param(lambda repo: keys.new_key().token, "Invalid API key", id="unknown-key-id"),
        pytest.param(_wrong_secret, "Invalid API key", id="wrong-secret"),
        pytest.param(
            lambda repo: make_key(repo, revoked_at=datetime.now(UTC)).token,
            "revoked",
            id="revoked",
        ),
        pytest.param(
            lambda repo: make_key(repo, expires_at=datetime.now(UTC) - timedelta(seconds=1)).token,
            "expired",
            id="expired",
        ),
    ],
)
def test_a_request_without_a_good_key_gets_401_and_never_reaches_the_model(
    strict_guard, upstream, acme, credential, message
):
    token = credential(acme)
    r = post(strict_guard, token)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].lower().startswith("bearer")
    error = r.json()["error"]
    assert message in error["message"]
    assert error["code"] == "invalid_api_key"
    assert upstream.requests == []
    [event] = recorded(strict_guard, 1)
    assert (event.status, event.error_code, event.tenant_id) == (401, "invalid_api_key", None)


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Basic dXNlcjpwYXNz", id="another-scheme"),
        pytest.param("Bearer", id="no-token"),
        pytest.param("Bearer gk_", id="bare-prefix"),
    ],
)
def test_a_malformed_authorization_header_is_refused_where_keys_are_required(
    strict_guard, upstream, authorization
):
    r = post(strict_guard, headers={"authorization": authorization})
    assert r.status_code == 401
    assert upstream.requests == []


def test_two_authorization_headers_are_refused(strict_guard, upstream, acme):
    made = make_key(acme)
    r = httpx.post(
        f"{strict_guard.url}/v1/chat/completions",
        json=CHAT,
        headers=[("authorization", f"Bearer {made.token}"), ("authorization", "Bearer other")],
    )
    assert r.status_code == 401
    assert upstream.requests == []


@pytest.mark.parametrize("role", ["admin", "auditor"])
def test_admin_and_auditor_keys_cannot_call_models(strict_guard, upstream, acme, role):
    made = make_key(acme, tenant=None, role=role)
    r = post(strict_guard, made.token)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "insufficient_permissions"
    assert upstream.requests == []


def test_ollama_routes_take_the_same_bearer_key(strict_guard, upstream, acme):
    made = make_key(acme)
    body = {"model": "olm", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    assert post(strict_guard, None, "/api/chat", body).status_code == 401
    assert upstream.requests == []
    r = post(strict_guard, made.token, "/api/chat", body)
    assert r.status_code == 200, r.text


def test_a_revoked_key_stops_working_once_its_cached_read_expires(guard_at, upstream, acme):
    guard = guard_at(
        make_settings(upstream.base_url, auth={"required": True, "cache_seconds": 0.3})
    )
    made = make_key(acme)
    assert post(guard, made.token).status_code == 200
    acme.revoke_key(made.id)
    assert post(guard, made.token).status_code == 200  # still cached on this instance
    time.sleep(0.35)
    r = post(guard, made.token)
    assert r.status_code == 401
    assert "revoked" in r.json()["error"]["message"]


def test_without_required_keys_a_placeholder_key_passes_but_a_bad_guard_key_does_not(
    guard_at, upstream, acme
):
    guard = guard_at(make_settings(upstream.base_url))
    assert post(guard, "EMPTY").status_code == 200  # what OpenAI clients send by default
    assert post(guard).status_code == 200
    assert post(guard, keys.new_key().token).status_code == 401
    made = make_key(acme)
    assert post(guard, made.token).status_code == 200
    events = recorded(guard, 4)
    assert [(e.status, e.tenant_id) for e in events] == [
        (200, None),
        (200, None),
        (401, None),
        (200, "acme"),
    ]


def test_settings_keys_name_their_tenant_and_key_without_a_database(
    guard_at, upstream, monkeypatch
):
    monkeypatch.setenv("TEAM_A_KEY", "team-a-secret-0123456789")
    settings = make_settings(
        upstream.base_url,
        audit={"enabled": False},
        auth={
            "required": True,
            "keys": [{"id": "team-a-ci", "key_env": "TEAM_A_KEY", "tenant": "team-a"}],
        },
        tenants=[{"id": "team-a", "attributes": {"tier": "gold"}}],
    )
    guard = guard_at(settings)
    assert post(guard, "team-a-secret-0123456789").status_code == 200
    assert post(guard, "team-a-secret-012345678X").status_code == 401
    assert post(guard, keys.new_key().token).status_code == 401  # no database: no stored keys


def test_policies_condition_on_the_tenant_of_the_key(guard_at, upstream, acme, tmp_path):
    bundle = write_bundle(
        tmp_path / "policies",
        {
            "tenants.yaml": """
                name: tenant-models
                rules:
                  - id: no-commercial-tenant
                    when: {expr: "tenant.commercial == false"}
                    action: block
                    status: 403
                    message: This team may not use this model.
            """
        },
    )
    settings = make_settings(
        upstream.base_url,
        auth={"required": True, "cache_seconds": 0},
        policy={"dir": str(bundle)},
    )
    guard = guard_at(settings)
    acme.create_tenant("paying", {"commercial": True}, {})
    blocked = post(guard, make_key(acme).token)
    assert blocked.status_code == 403
    assert blocked.json()["error"]["message"] == "This team may not use this model."
    assert post(guard, make_key(acme, tenant="paying").token).status_code == 200
    assert len(upstream.requests) == 1
