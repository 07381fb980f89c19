"""Tenants and keys over the admin API (admin keys only), as `guard tenants|keys` do
it on the command line: both go through guard.tenancy.manage. Every change is an
admin audit event naming the key that made it; a revoked key stops working on this
instance at once (others within ``auth.cache_seconds``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, TypeVar

from litestar import Router, delete, get, patch, post
from litestar.params import FromPath, JSONBody
from pydantic import BaseModel, ConfigDict, Field

from guard.audit.recorder import record_admin_action
from guard.db.repository import DatabaseUnavailable
from guard.db.tenants import TenantExists, TenantRepository, UnknownTenant
from guard.errors import AuditUnavailable, BadRequest, ClientFacingError, NotFound
from guard.ingress.admin import actor, repo_of, require
from guard.ingress.common import HTTPRequest, errors, services_of
from guard.settings import LimitSettings, TenantId
from guard.tenancy import Role, manage

T = TypeVar("T")


class Conflict(ClientFacingError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantCreate(_Body):
    id: TenantId
    attributes: dict[str, Any] = Field(default_factory=dict)
    limits: LimitSettings = LimitSettings()


class TenantChange(_Body):
    attributes: dict[str, Any] = Field(default_factory=dict)
    unset: list[str] = Field(default_factory=list, description="Attribute names to remove.")
    limits: dict[str, int | None] = Field(default_factory=dict, description="null removes a limit.")


class KeyCreate(_Body):
    tenant: TenantId | None = Field(default=None, description="Client keys only.")
    role: Literal["client", "admin", "auditor"] = "client"
    name: str = Field(default="", max_length=128)
    expires_at: datetime | None = Field(default=None, description="In the future.")
    limits: LimitSettings = LimitSettings()


def _store(request: HTTPRequest) -> TenantRepository:
    return TenantRepository(repo_of(request).engine)


async def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a database call off the event loop, its errors turned into API errors."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except manage.InvalidInput as exc:
        raise BadRequest(str(exc)) from None
    except TenantExists as exc:
        raise Conflict(f"A tenant {exc} exists") from None
    except UnknownTenant as exc:
        raise NotFound(f"No tenant {exc}") from None
    except DatabaseUnavailable:
        raise AuditUnavailable("The database cannot be reached") from None


async def _recorded(request: HTTPRequest, action: str, detail: dict[str, Any]) -> None:
    who = actor(request)
    client = request.client.host if request.client else ""
    await _call(
        record_admin_action,
        repo_of(request),
        services_of(request).settings.audit,
        action,
        detail,
        method=request.method,
        client=client,
        key_id=who.key_id,
    )


@get("/tenants", responses=errors(401, 403, 503))
async def list_tenants(request: HTTPRequest) -> dict[str, Any]:
    found = await _call(_store(request).tenants)
    return {"data": [manage.tenant_view(t) for t in found]}


@post("/tenants", status_code=201, responses=errors(400, 401, 403, 409, 503))
async def create_tenant(request: HTTPRequest, data: JSONBody[TenantCreate]) -> dict[str, Any]:
    limits = data.limits.model_dump(exclude_none=True)
    made = await _call(manage.create_tenant, _store(request), data.id, data.attributes, limits)
    await _recorded(
        request,
        "tenants.create",
        {"tenant": made.id, "attributes": sorted(made.attributes), "limits": made.limits},
    )
    return manage.tenant_view(made)


@get("/tenants/{tenant_id:str}", responses=errors(400, 401, 403, 404, 503))
async def show_tenant(request: HTTPRequest, tenant_id: FromPath[str]) -> dict[str, Any]:
    found = await _call(_store(request).tenant, tenant_id)
    if found is None:
        raise NotFound(f"No tenant {tenant_id[:64]}")
    return manage.tenant_view(found)


@patch("/tenants/{tenant_id:str}", responses=errors(400, 401, 403, 404, 503))
async def change_tenant(
    request: HTTPRequest, tenant_id: FromPath[str], data: JSONBody[TenantChange]
) -> dict[str, Any]:
    if not (data.attributes or data.unset or data.limits):
        raise BadRequest("Nothing to change: give attributes, unset or limits")
    changed = await _call(
        manage.update_tenant,
        _store(request),
        tenant_id,
        attributes=data.attributes,
        unset=tuple(data.unset),
        limits=data.limits,
    )
    services_of(request).auth.forget_tenant(tenant_id)
    detail = {
        "tenant": tenant_id,
        "attributes": sorted(data.attributes),
        "unset": sorted(data.unset),
        "limits": data.limits,
    }
    await _recorded(request, "tenants.set", detail)
    return manage.tenant_view(changed)


@get("/keys", responses=errors(401, 403, 503))
async def list_keys(request: HTTPRequest) -> dict[str, Any]:
    tenant = request.query_params.get("tenant")
    found = await _call(_store(request).keys, tenant)
    return {"data": [manage.key_view(k) for k in found]}


@post("/keys", status_code=201, responses=errors(400, 401, 403, 404, 503))
async def create_key(request: HTTPRequest, data: JSONBody[KeyCreate]) -> dict[str, Any]:
    """A new key: the response holds it (``key``) once; guard keeps only its hash."""
    record, token = await _call(
        manage.create_key,
        _store(request),
        tenant_id=data.tenant,
        role=data.role,
        name=data.name,
        expires_at=data.expires_at,
        limits=data.limits.model_dump(exclude_none=True),
    )
    detail = {"key": record.id, "tenant": record.tenant_id, "role": record.role}
    await _recorded(request, "keys.create", detail)
    return {"key": token, **manage.key_view(record)}


@delete("/keys/{key_id:str}", status_code=200, responses=errors(400, 401, 403, 404, 503))
async def revoke_key(request: HTTPRequest, key_id: FromPath[str]) -> dict[str, Any]:
    revoked = await _call(_store(request).revoke_key, key_id)
    if revoked is None:
        raise NotFound(f"No key {key_id[:32]}")
    services_of(request).auth.forget(key_id)
    await _recorded(request, "keys.revoke", {"key": key_id, "tenant": revoked.tenant_id})
    return manage.key_view(revoked)


ROUTES = Router(
    path="/admin",
    route_handlers=[
        list_tenants,
        create_tenant,
        show_tenant,
        change_tenant,
        list_keys,
        create_key,
        revoke_key,
    ],
    guards=[require(Role.ADMIN)],
    include_in_schema=True,
)
