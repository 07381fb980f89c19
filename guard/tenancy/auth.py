"""Who sent a request: an ``Authorization: Bearer`` key → the key's role and tenant.

Keys come from two places: the settings (``auth.keys``, values in environment
variables) and the database (``guard keys create``). A database key is read once and
trusted for ``auth.cache_seconds``; so a request costs a hash and a dict lookup, and a
key revoked elsewhere stops working within that time (at once on the instance whose
admin API revoked it). Lookups of one unknown key by concurrent requests share one read.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from guard.db.repository import DatabaseUnavailable
from guard.db.tenants import KeyRecord, TenantRepository
from guard.errors import AuthUnavailable, Unauthorized
from guard.settings import AuthSettings, LimitSettings, TenantSettings
from guard.tenancy import keys
from guard.tenancy.keys import Role
from guard.tenancy.tenants import NO_LIMITS, Principal, Tenant, principal

log = logging.getLogger(__name__)
_CACHE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class _Loaded:
    at: float  # clock time of the read
    key: KeyRecord | None  # None: no such key
    principal: Principal | None  # what the key is, made once per read


class Authenticator:
    def __init__(
        self,
        settings: AuthSettings,
        tenants: list[TenantSettings],
        repo: TenantRepository | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.required = settings.required
        self._ttl = settings.cache_seconds
        self._repo = repo
        self._clock = clock
        by_id = {t.id: t for t in tenants}
        # Settings keys by a digest of the key: the key itself is not kept in memory
        # longer than the settings object holds it.
        self._config: dict[bytes, Principal] = {}
        for key in settings.keys:
            tenant = by_id.get(key.tenant) if key.tenant else None
            self._config[_digest(os.environ.get(key.key_env, ""))] = principal(
                key.id,
                Role(key.role),
                _tenant(tenant.id, tenant.attributes) if tenant else None,
                key.limits,
                tenant.limits if tenant else NO_LIMITS,
            )
        self._cache: OrderedDict[str, _Loaded] = OrderedDict()
        self._reading: dict[str, asyncio.Future[_Loaded]] = {}

    async def authenticate(self, authorization: str | None) -> Principal | None:
        """The request's principal; None when it sent no key guard knows. A guard key
        (``gk_…``) that is unknown, wrong, revoked or expired raises Unauthorized; so
        does any other credential where keys are required. Where they are not, other
        credentials pass unnoticed: OpenAI's clients send a placeholder key always."""
        token = keys.bearer(authorization)
        if token is None:
            if authorization and self.required:
                raise Unauthorized("Send the API key as 'Authorization: Bearer <key>'")
            return None
        parsed = keys.parse(token)
        if parsed is not None:
            return await self._stored(*parsed)
        found = self._config.get(_digest(token))
        if found is None and self.required:
            raise Unauthorized("Invalid API key")
        return found

    def forget(self, key_id: str) -> None:
        """Drop what is known of a key (it was revoked or changed here)."""
        self._cache.pop(key_id, None)

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop what is known of a tenant's keys (the tenant was changed here)."""
        stale = [k for k, v in self._cache.items() if v.key and v.key.tenant_id == tenant_id]
        for key_id in stale:
            del self._cache[key_id]

    async def _stored(self, key_id: str, secret: str) -> Principal:
        loaded = await self._load(key_id)
        key = loaded.key
        if key is None or not keys.matches(key.salt, key.hash, secret):
            raise Unauthorized("Invalid API key")
        # Only the key's holder learns why a real key no longer works.
        state = key.state()
        if state != "active":
            raise Unauthorized(
                f"This API key has {'been revoked' if state == 'revoked' else state}"
            )
        assert loaded.principal is not None  # noqa: S101  # made with every key read
        return loaded.principal

    async def _load(self, key_id: str) -> _Loaded:
        cached = self._cache.get(key_id)
        if cached is not None and self._clock() - cached.at < self._ttl:
            self._cache.move_to_end(key_id)
            return cached
        pending = self._reading.get(key_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_Loaded] = asyncio.get_running_loop().create_future()
        self._reading[key_id] = future
        try:
            loaded = await self._read(key_id)
            future.set_result(loaded)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a read nobody else waited for is not an error
            raise
        finally:
            del self._reading[key_id]
        self._cache[key_id] = loaded
        self._cache.move_to_end(key_id)
        if len(self._cache) > _CACHE_MAX:
            self._cache.popitem(last=False)
        return loaded

    async def _read(self, key_id: str) -> _Loaded:
        if self._repo is None:  # no database: settings keys only
            return _Loaded(self._clock(), None, None)
        try:
            found = await asyncio.to_thread(self._repo.key, key_id)
        except DatabaseUnavailable as exc:
            log.warning("auth: cannot read API keys from the database (%s)", exc)
            raise AuthUnavailable("API keys cannot be checked now; try again shortly") from None
        if found is None:
            return _Loaded(self._clock(), None, None)
        key, tenant = found
        made = principal(
            key.id,
            Role(key.role),
            _tenant(tenant.id, tenant.attributes) if tenant else None,
            _limits(key.limits),
            _limits(tenant.limits) if tenant else NO_LIMITS,
        )
        return _Loaded(self._clock(), key, made)


def _tenant(tenant_id: str, attributes: Mapping[str, Any]) -> Tenant:
    return Tenant(tenant_id, MappingProxyType(dict(attributes)))


def _limits(stored: Mapping[str, Any]) -> LimitSettings:
    """Limits as stored (written through LimitSettings, so they validate)."""
    return LimitSettings.model_validate(stored) if stored else NO_LIMITS


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
