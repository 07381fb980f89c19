"""Schemathesis against guard's own OpenAPI document, over real HTTP.

Every /admin operation is sent inputs generated from the document with an admin key,
and every /v1 operation with a client key, both schema-valid (positive) and, where the
document declares something to break, schema-invalid (negative). No answer may be a
500; each must have a status, a media type and a body the document declares for it.
The run is bounded and repeatable: a fixed seed, EXAMPLES per operation and mode, no
example database, and nothing beyond loopback (the guard and the fake model server).
"""

from __future__ import annotations

import shutil
from typing import Any

import httpx
import hypothesis
import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from guard.errors import ErrorBody
from tests.conftest import make_settings
from tests.fakes.guard_server import GuardServer

TOKEN = "bootstrap-admin-token-0123456789"  # noqa: S105
SEED = 20240611
EXAMPLES = 40  # per operation and generation mode
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hello"}]}

# The model routes read their bodies by hand, so the document gives schemathesis no
# body to generate: the run sends chat-shaped bodies and arbitrary JSON instead.
_TEXT = st.text(max_size=60)
_NUMBER = st.integers() | st.floats(allow_nan=False, allow_infinity=False)  # JSON has no NaN
_JSON = st.recursive(
    st.none() | st.booleans() | _NUMBER | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
_MODEL = st.sampled_from(["m1", "llama", "olm", "no-such-model"])
_OPTIONS = {"stream": st.booleans(), "max_tokens": st.integers(-1, 64), "user": _TEXT}
_ROLE = st.sampled_from(["system", "user", "assistant", "tool", "x"])
_MESSAGE = st.fixed_dictionaries({"role": _ROLE, "content": _JSON})
_PROMPT = _TEXT | st.lists(_TEXT, max_size=3)
BODIES = {
    "/v1/chat/completions": st.fixed_dictionaries(
        {"model": _MODEL, "messages": st.lists(_MESSAGE, max_size=3)}, optional=_OPTIONS
    ),
    "/v1/completions": st.fixed_dictionaries(
        {"model": _MODEL, "prompt": _PROMPT}, optional=_OPTIONS
    ),
    "/v1/embeddings": st.fixed_dictionaries({"model": _MODEL, "input": _PROMPT}),
}


@pytest.fixture
def server(guard_at, upstream, monkeypatch):
    monkeypatch.setenv("GUARD_ADMIN_TOKEN", TOKEN)
    return guard_at(make_settings(upstream.base_url, auth={"required": True}))


@pytest.fixture(scope="module")
def shared(upstream_server, migrated_sqlite, tmp_path_factory):
    """One guard for all the single-request cases: none changes what another sees, and
    a guard of their own each would double this file's run time."""
    home = tmp_path_factory.mktemp("api-schema")
    shutil.copy(migrated_sqlite, home / "audit.sqlite3")
    database = f"sqlite:///{home / 'audit.sqlite3'}"
    audit = {"database_url": database, "spool_dir": str(home / "spool")}
    settings = make_settings(upstream_server.base_url, auth={"required": True}, audit=audit)
    with pytest.MonkeyPatch.context() as patch, GuardServer(settings) as guard:
        patch.setenv("GUARD_ADMIN_TOKEN", TOKEN)
        yield guard


@pytest.fixture(scope="module")
def document(shared):
    return load(shared)


def new_key(server, role):
    r = httpx.post(
        f"{server.url}/admin/keys",
        headers={"authorization": f"Bearer {TOKEN}"},
        json={"role": role, "name": "schemathesis"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    return r.json()["key"]


def load(server):
    schema = schemathesis.openapi.from_url(f"{server.url}/schema/openapi.json", timeout=10)
    schema.config.update(base_url=server.url)
    return schema


def bearer(key):
    return {"authorization": f"Bearer {key}"} if key else {}


def as_json(body):
    """Case arguments for a JSON body, or for none (the document declares none)."""
    return {} if body is None else {"body": body, "media_type": "application/json"}


def send(case, key):
    response = case.call(headers=bearer(key), timeout=10)
    case.validate_response(response, checks=CHECKS, headers=bearer(key))
    if response.status_code >= 400:  # every error guard answers is the OpenAI envelope
        msgspec.json.decode(response.content, type=ErrorBody)
    return response


def exercise(operation, mode, key):
    bodies: Any = st.none()
    if mode.is_positive and operation.path in BODIES:
        bodies = st.none() | BODIES[operation.path]

    @hypothesis.seed(SEED)
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode), body=bodies)
    def run(case, body):
        if body is not None:
            case.body = body
            case.media_type = "application/json"
        send(case, key)

    run()


@pytest.mark.parametrize(
    ("role", "prefix"),
    [pytest.param("admin", "/admin/", id="admin"), pytest.param("client", "/v1/", id="v1")],
)
def test_every_operation_answers_as_the_document_says(server, subtests, role, prefix):
    key = new_key(server, role)
    found = [r.ok() for r in load(server).get_all_operations()]
    found = [operation for operation in found if operation.path.startswith(prefix)]
    assert found, f"the document has no {prefix} operations"
    for operation in found:
        for mode in GenerationMode:
            with subtests.test(msg=f"{operation.label} ({mode.value})"):
                try:
                    exercise(operation, mode, key)
                except Unsatisfiable:
                    if mode.is_positive:
                        raise
                    pytest.skip("the document declares nothing to make invalid")


# Findings fixed in guard/ingress/openai.py: each request as schemathesis first sent it.
@pytest.mark.parametrize(
    ("path", "role", "body", "status", "media"),
    [
        pytest.param(
            "/v1/chat/completions", "client", None, 400, "application/json", id="chat-no-body"
        ),
        pytest.param("/v1/completions", "client", None, 400, "application/json", id="cmpl-no-body"),
        pytest.param("/v1/embeddings", "client", None, 400, "application/json", id="embed-no-body"),
        pytest.param(
            "/v1/chat/completions",
            "client",
            {**CHAT, "model": "no-such-model"},
            404,
            "application/json",
            id="unknown-model",
        ),
        pytest.param(
            "/v1/chat/completions",
            "client",
            {**CHAT, "stream": True},
            200,
            "text/event-stream",
            id="chat-stream",
        ),
        pytest.param(
            "/v1/completions",
            "client",
            {"model": "m1", "prompt": "hi", "stream": True},
            200,
            "text/event-stream",
            id="cmpl-stream",
        ),
        pytest.param("/v1/chat/completions", None, CHAT, 401, "application/json", id="no-key"),
        pytest.param("/v1/chat/completions", "admin", CHAT, 403, "application/json", id="admin"),
    ],
)
def test_model_route_answers_are_declared(  # noqa: PLR0917
    shared, document, path, role, body, status, media
):
    key = new_key(shared, role) if role else None
    operation = document[path]["POST"]
    case = operation.Case(**as_json(body))
    response = send(case, key)
    assert response.status_code == status
    assert response.headers["content-type"][0].startswith(media)


# Answers the admin API's document once left out: each must now be declared.
@pytest.mark.parametrize(
    ("method", "path", "params", "body", "status"),
    [
        pytest.param(
            "GET",
            "/admin/audit/events/{event_id}",
            {"event_id": "00000000-0000-4000-8000-000000000000"},
            None,
            404,
            id="event-404",
        ),
        pytest.param(
            "GET",
            "/admin/policies/versions/{version}",
            {"version": "nope"},
            None,
            404,
            id="policy-version-404",
        ),
        pytest.param(
            "GET", "/admin/tenants/{tenant_id}", {"tenant_id": "nobody"}, None, 404, id="tenant-404"
        ),
        pytest.param(
            "PATCH",
            "/admin/tenants/{tenant_id}",
            {"tenant_id": "nobody"},
            {"unset": ["x"]},
            404,
            id="tenant-change-404",
        ),
        pytest.param(
            "DELETE",
            "/admin/keys/{key_id}",
            {"key_id": "0000000000000000"},
            None,
            404,
            id="key-revoke-404",
        ),
        pytest.param("POST", "/admin/keys", {}, {"tenant": "nobody"}, 404, id="key-tenant-404"),
        pytest.param("POST", "/admin/tenants", {}, {"id": "bad id!"}, 400, id="tenant-400-shape"),
        pytest.param(
            "PATCH",
            "/admin/tenants/{tenant_id}",
            {"tenant_id": "t"},
            {},
            400,
            id="change-400-shape",
        ),
        pytest.param("POST", "/admin/keys", {}, {"role": "root"}, 400, id="key-400-shape"),
        pytest.param("GET", "/admin/audit/export", {}, None, 200, id="export-media-type"),
    ],
)
def test_admin_answers_are_declared(document, method, path, params, body, status):  # noqa: PLR0917
    operation = document[path][method]
    case = operation.Case(path_parameters=params, **as_json(body))
    response = case.call(headers=bearer(TOKEN), timeout=10)
    assert response.status_code == status
    case.validate_response(response, checks=CHECKS, headers=bearer(TOKEN))


@pytest.mark.parametrize(
    "key", [pytest.param(None, id="no-key"), pytest.param("client", id="client")]
)
def test_admin_refusals_are_declared(shared, document, key):
    operation = document["/admin/tenants"]["GET"]
    case = operation.Case()
    response = case.call(headers=bearer(new_key(shared, key) if key else None), timeout=10)
    assert response.status_code == (403 if key else 401)
    case.validate_response(response, checks=CHECKS)
