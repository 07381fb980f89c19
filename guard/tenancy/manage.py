"""Managing tenants and keys: what `guard tenants|keys` and the admin API both do.

Input is checked here, once, for both: tenant ids, attribute names, limits (through
``LimitSettings``), roles. A key's secret leaves only in ``create_key``'s return
value; views of keys never hold their hash or salt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from guard.db.tenants import KeyRecord, TenantRecord, TenantRepository
from guard.settings import TENANT_ID, LimitSettings
from guard.tenancy import keys
from guard.tenancy.keys import Role

_ID = re.compile(TENANT_ID)
_ATTRIBUTE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_NAME_MAX = 128


class InvalidInput(ValueError):
    """What was asked cannot be stored; the message says which part and why."""


def check_tenant_id(tenant_id: str) -> str:
    if not _ID.fullmatch(tenant_id):
        raise InvalidInput(
            "a tenant id is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit"
        )
    return tenant_id


def check_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    for name, value in attributes.items():
        if not _ATTRIBUTE.fullmatch(name) or name == "id":
            raise InvalidInput(
                f"attribute {name[:64]!r}: a name is letters, digits and '_' (not 'id')"
            )
        if not isinstance(value, str | int | float | bool | list):
            raise InvalidInput(f"attribute {name!r}: a value is a string, number, boolean or list")
    return dict(attributes)


def check_limits(limits: Mapping[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """The limits as stored (unset ones left out); with ``partial``, None values stay,
    meaning "remove this limit"."""
    kept = {k: v for k, v in limits.items() if v is not None}
    try:
        checked = LimitSettings.model_validate(kept)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in error["loc"]) or "limits"
        message = "unknown limit" if error["type"] == "extra_forbidden" else error["msg"]
        raise InvalidInput(f"limit {where}: {message}") from None
    out: dict[str, Any] = checked.model_dump(exclude_none=True)
    if partial:
        out.update({k: None for k, v in limits.items() if v is None})
        unknown = [k for k in out if k not in LimitSettings.model_fields]
        if unknown:
            raise InvalidInput(f"limit {unknown[0]}: unknown limit")
    return out


def create_tenant(
    repo: TenantRepository,
    tenant_id: str,
    attributes: Mapping[str, Any],
    limits: Mapping[str, Any],
) -> TenantRecord:
    return repo.create_tenant(
        check_tenant_id(tenant_id), check_attributes(attributes), check_limits(limits)
    )


def update_tenant(
    repo: TenantRepository,
    tenant_id: str,
    *,
    attributes: Mapping[str, Any] | None = None,
    unset: tuple[str, ...] = (),
    limits: Mapping[str, Any] | None = None,
) -> TenantRecord:
    return repo.update_tenant(
        tenant_id,
        attributes=check_attributes(attributes or {}),
        unset=unset,
        limits=check_limits(limits or {}, partial=True),
    )


def create_key(
    repo: TenantRepository,
    *,
    tenant_id: str | None,
    role: str = "client",
    name: str = "",
    expires_at: datetime | None = None,
    limits: Mapping[str, Any] | None = None,
) -> tuple[KeyRecord, str]:
    """A new key, stored as its hash; returns the record and the key itself, which
    nothing keeps: it is shown once."""
    try:
        checked_role = Role(role)
    except ValueError:
        raise InvalidInput(f"role must be one of {', '.join(r.value for r in Role)}") from None
    if checked_role is not Role.CLIENT and tenant_id is not None:
        raise InvalidInput(f"an {checked_role.value} key belongs to no tenant")
    if len(name) > _NAME_MAX:
        raise InvalidInput(f"a key name has at most {_NAME_MAX} characters")
    now = datetime.now(UTC)
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("the expiry is in the past")
    made = keys.new_key()
    record = KeyRecord(
        made.id,
        tenant_id,
        checked_role.value,
        name,
        made.salt,
        made.hash,
        check_limits(limits or {}),
        now,
        expires_at,
        None,
    )
    repo.create_key(record)
    return record, made.token


def key_view(key: KeyRecord) -> dict[str, Any]:
    """A key as shown to admins: never its hash or salt."""
    return {
        "id": key.id,
        "tenant": key.tenant_id,
        "role": key.role,
        "name": key.name,
        "state": key.state(),
        "limits": key.limits,
        "created_at": _iso(key.created_at),
        "expires_at": _iso(key.expires_at),
        "revoked_at": _iso(key.revoked_at),
    }


def tenant_view(tenant: TenantRecord) -> dict[str, Any]:
    return {
        "id": tenant.id,
        "attributes": tenant.attributes,
        "limits": tenant.limits,
        "created_at": _iso(tenant.created_at),
        "updated_at": _iso(tenant.updated_at),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None
