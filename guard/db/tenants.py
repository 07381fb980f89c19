"""Tenants and API keys in the database: the CLI and the admin API write them, the
proxy reads one key (with its tenant) when a request presents it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from guard.db import models
from guard.db.repository import translated


@dataclass(frozen=True, slots=True)
class TenantRecord:
    id: str
    attributes: dict[str, Any]
    limits: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    tenant_id: str | None
    role: str
    name: str
    salt: str
    hash: str
    limits: dict[str, Any]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime | None = None) -> str:
        """active, expired or revoked (revoked wins: it is final)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and (now or datetime.now(UTC)) >= self.expires_at:
            return "expired"
        return "active"


class TenantExists(Exception):
    """A tenant with this id is already there."""


class UnknownTenant(Exception):
    """No tenant has this id."""


_T, _K = models.tenants, models.api_keys


class TenantRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- tenants ----------------------------------------------------------------

    def create_tenant(
        self, tenant_id: str, attributes: Mapping[str, Any], limits: Mapping[str, Any]
    ) -> TenantRecord:
        now = _now()
        row = {"id": tenant_id, "attributes": dict(attributes), "limits": dict(limits)}
        with translated(), self.engine.begin() as conn:
            if conn.execute(sa.select(_T.c.id).where(_T.c.id == tenant_id)).first():
                raise TenantExists(tenant_id)
            conn.execute(sa.insert(_T).values(**row, created_at=now, updated_at=now))
        return TenantRecord(tenant_id, dict(attributes), dict(limits), now, now)

    def tenants(self) -> list[TenantRecord]:
        with translated(), self.engine.connect() as conn:
            rows = conn.execute(sa.select(_T).order_by(_T.c.id))
            return [_tenant(r._mapping) for r in rows]

    def tenant(self, tenant_id: str) -> TenantRecord | None:
        with translated(), self.engine.connect() as conn:
            row = conn.execute(sa.select(_T).where(_T.c.id == tenant_id)).first()
            return _tenant(row._mapping) if row else None

    def update_tenant(
        self,
        tenant_id: str,
        *,
        attributes: Mapping[str, Any] | None = None,
        unset: tuple[str, ...] = (),
        limits: Mapping[str, Any] | None = None,
    ) -> TenantRecord:
        """Merge ``attributes`` and ``limits`` into the tenant's (a None limit removes
        it), drop the attributes named in ``unset``."""
        with translated(), self.engine.begin() as conn:
            row = conn.execute(sa.select(_T).where(_T.c.id == tenant_id).with_for_update()).first()
            if row is None:
                raise UnknownTenant(tenant_id)
            old = _tenant(row._mapping)
            merged = {**old.attributes, **(attributes or {})}
            for name in unset:
                merged.pop(name, None)
            caps = {k: v for k, v in {**old.limits, **(limits or {})}.items() if v is not None}
            now = _now()
            conn.execute(
                sa.update(_T)
                .where(_T.c.id == tenant_id)
                .values(attributes=merged, limits=caps, updated_at=now)
            )
        return TenantRecord(tenant_id, merged, caps, old.created_at, now)

    # -- keys -------------------------------------------------------------------

    def create_key(self, key: KeyRecord) -> None:
        values = {name: getattr(key, name) for name in KeyRecord.__slots__}
        with translated(), self.engine.begin() as conn:
            if key.tenant_id is not None:
                found = conn.execute(sa.select(_T.c.id).where(_T.c.id == key.tenant_id)).first()
                if found is None:
                    raise UnknownTenant(key.tenant_id)
            conn.execute(sa.insert(_K).values(**values))

    def keys(self, tenant_id: str | None = None) -> list[KeyRecord]:
        query = sa.select(_K).order_by(_K.c.created_at, _K.c.id)
        if tenant_id is not None:
            query = query.where(_K.c.tenant_id == tenant_id)
        with translated(), self.engine.connect() as conn:
            return [_key(r._mapping) for r in conn.execute(query)]

    def key(self, key_id: str) -> tuple[KeyRecord, TenantRecord | None] | None:
        """A key and its tenant, in one query: the proxy asks this per unknown key."""
        query = sa.select(_K, _T.c.attributes.label("t_attributes"), *_tenant_columns()).where(
            _K.c.id == key_id
        )
        query = query.select_from(_K.outerjoin(_T, _K.c.tenant_id == _T.c.id))
        with translated(), self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        m = row._mapping
        tenant = None
        if m["tenant_id"] is not None and m["t_id"] is not None:
            tenant = TenantRecord(
                m["t_id"],
                m["t_attributes"],
                m["t_limits"],
                _aware(m["t_created_at"]),
                _aware(m["t_updated_at"]),
            )
        return _key(m), tenant

    def revoke_key(self, key_id: str) -> KeyRecord | None:
        """Revoke a key (a key revoked before keeps its first revocation time)."""
        with translated(), self.engine.begin() as conn:
            row = conn.execute(sa.select(_K).where(_K.c.id == key_id)).first()
            if row is None:
                return None
            key = _key(row._mapping)
            if key.revoked_at is None:
                now = _now()
                conn.execute(sa.update(_K).where(_K.c.id == key_id).values(revoked_at=now))
                key = _replace_revoked(key, now)
        return key


def _tenant_columns() -> list[sa.Label[Any]]:
    return [
        _T.c.id.label("t_id"),
        _T.c.limits.label("t_limits"),
        _T.c.created_at.label("t_created_at"),
        _T.c.updated_at.label("t_updated_at"),
    ]


def _tenant(m: sa.RowMapping) -> TenantRecord:
    return TenantRecord(
        m["id"], m["attributes"], m["limits"], _aware(m["created_at"]), _aware(m["updated_at"])
    )


def _key(m: sa.RowMapping) -> KeyRecord:
    return KeyRecord(
        m["id"],
        m["tenant_id"],
        m["role"],
        m["name"],
        m["salt"],
        m["hash"],
        m["limits"],
        _aware(m["created_at"]),
        _aware_or_none(m["expires_at"]),
        _aware_or_none(m["revoked_at"]),
    )


def _replace_revoked(key: KeyRecord, when: datetime) -> KeyRecord:
    values = {name: getattr(key, name) for name in KeyRecord.__slots__}
    values["revoked_at"] = when
    return KeyRecord(**values)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    """SQLite gives naive datetimes back; every time here is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _aware_or_none(value: datetime | None) -> datetime | None:
    return _aware(value) if value is not None else None
