"""The admin API. Every route needs a key with a role (``require``): audit queries
under /admin/audit (read-only) take admin or auditor keys; the policy bundle under
/admin/policies (its state, its reload, any recorded version) and tenants and keys
(guard.ingress.manage) take admin keys. Client keys never pass. The token in
``admin.token_env`` acts as an admin key, to create the first keys with."""

from __future__ import annotations

import asyncio
import hmac
import os
import uuid
from collections.abc import Iterator
from typing import Any

from litestar import Router, get, post
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath
from litestar.response import Response, Stream
from litestar.types import Guard
from pydantic import ValidationError

from guard.audit import queries
from guard.audit.chain import verify_trail
from guard.db.repository import AuditRepository
from guard.errors import (
    AuditUnavailable,
    BadRequest,
    ClientFacingError,
    ConfigError,
    Forbidden,
    NotFound,
    Unauthorized,
)
from guard.ingress.common import HTTPRequest, errors, services_of
from guard.tenancy import Principal, Role, keys

_MAX_LIMIT = 10_000
BOOTSTRAP_KEY_ID = "admin-token"  # the key id admin events name for admin.token_env
_CONTROL = {"limit", "format"}


def require(*roles: Role) -> Guard:
    """A route guard: the request's key must have one of ``roles``; the key is kept on
    the request's state as ``principal`` (who did what, for admin events)."""
    needed = ", ".join(r.value for r in roles)

    async def check(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = await _admin_principal(connection)
        if principal.role not in roles:
            if principal.role is Role.CLIENT:
                raise Forbidden("Client keys cannot use the admin API")
            raise Forbidden(f"This route needs a key with the role: {needed}")
        connection.state.principal = principal

    return check


async def _admin_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    services = connection.app.state.services
    given = connection.headers.getall("authorization", [])
    if len(given) > 1:
        raise Unauthorized("Send one Authorization header")
    token = keys.bearer(given[0] if given else None)
    if token is None:
        raise Unauthorized("An admin or auditor key is required: 'Authorization: Bearer <key>'")
    bootstrap = os.environ.get(services.settings.admin.token_env, "")
    if bootstrap and hmac.compare_digest(token.encode(), bootstrap.encode()):
        return Principal(BOOTSTRAP_KEY_ID, Role.ADMIN)
    principal: Principal | None = await services.auth.authenticate(given[0])
    if principal is None:
        raise Unauthorized("Invalid API key")
    return principal


def actor(request: HTTPRequest) -> Principal:
    principal: Principal = request.state.principal
    return principal


def repo_of(request: HTTPRequest) -> AuditRepository:
    recorder = request.app.state.recorder
    if recorder is None:
        raise AuditUnavailable("The audit trail is off (audit.enabled: false)")
    repo: AuditRepository = recorder.repo
    return repo


def _filter(request: HTTPRequest) -> queries.AuditFilter:
    params = {k: v for k, v in request.query_params.items() if k not in _CONTROL}
    try:
        return queries.AuditFilter(**params)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        name = str(error["loc"][0]) if error["loc"] else "query"
        message = "unknown parameter" if error["type"] == "extra_forbidden" else error["msg"]
        raise BadRequest(f"'{name}': {message}", param=name) from None


def _choice(request: HTTPRequest, name: str, allowed: tuple[str, ...]) -> str:
    value = request.query_params.get(name, allowed[0])
    if value not in allowed:
        raise BadRequest(f"'{name}' must be one of {', '.join(allowed)}", param=name)
    return value


def _limit(request: HTTPRequest) -> int:
    raw = request.query_params.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= _MAX_LIMIT:
        raise BadRequest(f"'limit' must be an integer from 1 to {_MAX_LIMIT}", param="limit")
    return int(raw)


@get("/events", responses=errors(400, 401, 403, 503))
async def list_events(request: HTTPRequest) -> Response[Any]:
    """Events, newest first: ``format`` json (default), jsonl or csv."""
    repo, where = repo_of(request), _filter(request)
    fmt = _choice(request, "format", ("json", "jsonl", "csv"))
    events = await asyncio.to_thread(repo.events, queries.list_events(where, _limit(request)))
    if fmt == "json":
        return Response({"data": [queries.to_json(e) for e in events]})
    media = "application/x-ndjson" if fmt == "jsonl" else "text/csv"
    return Response("".join(queries.render(events, fmt)), media_type=media)  # type: ignore[arg-type]


@get("/events/{event_id:uuid}", responses=errors(400, 401, 403, 404, 503))
async def show_event(request: HTTPRequest, event_id: FromPath[uuid.UUID]) -> dict[str, Any]:
    found = await asyncio.to_thread(repo_of(request).events, queries.one_event(event_id))
    if not found:
        raise NotFound(f"No audit event {event_id}")
    return queries.to_json(found[0])


@get("/stats", responses=errors(400, 401, 403, 503))
async def stats(request: HTTPRequest) -> dict[str, Any]:
    repo, where = repo_of(request), _filter(request)
    return await asyncio.to_thread(queries.stats, repo, where)


@get("/export", responses=errors(400, 401, 403, 503), media_type="application/x-ndjson")
async def export(request: HTTPRequest) -> Stream:
    """An evidence file with every field and the chain hashes, streamed."""
    repo, where = repo_of(request), _filter(request)
    fmt = _choice(request, "format", ("jsonl", "csv"))
    events = repo.iter_events(queries.export_events(where))
    body: Iterator[bytes | str] = (
        queries.jsonl(events)
        if fmt == "jsonl"
        else queries.csv_lines(events, queries.EXPORT_COLUMNS)
    )
    media = "application/x-ndjson" if fmt == "jsonl" else "text/csv"
    return Stream(body, media_type=media)


@get("/verify", responses=errors(401, 403, 409, 503))
async def verify(request: HTTPRequest) -> Response[dict[str, Any]]:
    settings = services_of(request).settings.audit
    key = os.environ[settings.chain_key_env].encode() if settings.chain_key_env else None
    reports = await asyncio.to_thread(verify_trail, repo_of(request), key)
    chains = [
        {
            "chain_id": r.chain_id,
            "instance": r.instance,
            "checked": r.checked,
            "problem": r.problem.describe() if r.problem else None,
        }
        for r in reports
    ]
    ok = all(r.problem is None for r in reports)
    return Response({"ok": ok, "chains": chains}, status_code=200 if ok else 409)


AUDIT = Router(
    path="/admin/audit",
    route_handlers=[list_events, show_event, stats, export, verify],
    guards=[require(Role.ADMIN, Role.AUDITOR)],
    include_in_schema=True,
)


class NothingToReload(ClientFacingError):
    status = 409
    type = "invalid_request_error"
    code = "fixed_policy"


@get("/", responses=errors(401, 403))
async def policy_status(request: HTTPRequest) -> dict[str, Any]:
    """The bundle in force, its policies, and how the last load or reload went."""
    return services_of(request).policies.status()


@post("/reload", status_code=200, responses=errors(401, 403, 409, 422))
async def reload_policies(request: HTTPRequest) -> Response[dict[str, Any]]:
    """Load, check and test the bundle's directory now; 422 if it was turned away."""
    try:
        attempt = await services_of(request).policies.reload("admin")
    except ConfigError as exc:
        raise NothingToReload(str(exc)) from None
    status = 422 if attempt.outcome == "rejected" else 200
    return Response(attempt.as_json(), status_code=status)


@get("/versions/{version:str}", responses=errors(400, 401, 403, 404, 503))
async def policy_version(request: HTTPRequest, version: FromPath[str]) -> dict[str, Any]:
    """A bundle as recorded when it was put in force: its files, exactly."""
    found = await asyncio.to_thread(repo_of(request).events, queries.policy_bundle(version))
    if not found:
        raise NotFound(f"No policy bundle {version[:80]} in the audit store")
    event = found[0]
    detail = event.detail or {}
    return {
        "version": version,
        "first_in_force": event.started_at.isoformat(),
        "files": detail.get("files", {}),
        "policies": detail.get("policies", []),
    }


POLICIES = Router(
    path="/admin/policies",
    route_handlers=[policy_status, reload_policies, policy_version],
    guards=[require(Role.ADMIN)],
    include_in_schema=True,
)
