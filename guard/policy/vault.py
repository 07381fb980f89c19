"""Where a conversation's pseudonym map waits between turns: encrypted, with a TTL.

A map is stored under a key derived from the tenant and the conversation id (a
SHA-256, so neither is readable in the store) and sealed with AES-GCM, the key
as associated data, so a blob copied to another conversation does not open.
The memory store serves one process; Redis serves replicas. A store that cannot
be reached fails the exchange (503), because a turn whose names cannot be kept
consistent cannot be pseudonymized correctly.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from collections import OrderedDict
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from guard.errors import VaultUnavailable
from guard.policy.pseudonyms import Pseudonyms
from guard.settings import PseudonymSettings

log = logging.getLogger(__name__)
_NONCE = 12
_PREFIX = "guard:pseudonyms:"


class Vault(Protocol):
    async def load(self, tenant: str | None, conversation: str) -> Pseudonyms: ...

    async def save(self, tenant: str | None, conversation: str, pseudonyms: Pseudonyms) -> None: ...

    async def aclose(self) -> None: ...


class Sealer:
    def __init__(self, secret: bytes) -> None:
        self._aead = AESGCM(hashlib.sha256(b"guard pseudonyms\0" + secret).digest())

    def seal(self, key: str, data: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._aead.encrypt(nonce, data, key.encode())

    def open(self, key: str, blob: bytes) -> bytes | None:
        try:
            return self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], key.encode())
        except (InvalidTag, ValueError):
            return None


def storage_key(tenant: str | None, conversation: str) -> str:
    digest = hashlib.sha256(f"{tenant or ''}\0{conversation}".encode()).hexdigest()
    return _PREFIX + digest


def _decoded(sealer: Sealer, key: str, blob: bytes | str | None) -> Pseudonyms:
    """The stored map; an expired, missing or unreadable one starts afresh."""
    if blob is None:
        return Pseudonyms()
    data = sealer.open(key, blob.encode() if isinstance(blob, str) else blob)
    if data is None:  # another key (rotated) or tampered with: not this conversation's
        log.warning("pseudonyms: a stored map could not be opened; starting a new one")
        return Pseudonyms()
    try:
        return Pseudonyms.loads(data)
    except ValueError:
        return Pseudonyms()


class MemoryVault:
    def __init__(self, sealer: Sealer, ttl: float, capacity: int) -> None:
        self._sealer = sealer
        self._ttl = ttl
        self._capacity = capacity
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def load(self, tenant: str | None, conversation: str) -> Pseudonyms:
        key = storage_key(tenant, conversation)
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            self._entries.pop(key, None)
            return Pseudonyms()
        return _decoded(self._sealer, key, entry[1])

    async def save(self, tenant: str | None, conversation: str, pseudonyms: Pseudonyms) -> None:
        key = storage_key(tenant, conversation)
        self._entries[key] = (
            time.monotonic() + self._ttl,
            self._sealer.seal(key, pseudonyms.dumps()),
        )
        self._entries.move_to_end(key)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    async def aclose(self) -> None:
        self._entries.clear()


class RedisVault:
    def __init__(self, sealer: Sealer, ttl: int, url: str) -> None:
        import redis.asyncio as redis  # noqa: PLC0415  # only with store redis

        self._sealer = sealer
        self._ttl = ttl
        self._client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._errors = (redis.RedisError, OSError)

    async def load(self, tenant: str | None, conversation: str) -> Pseudonyms:
        key = storage_key(tenant, conversation)
        try:
            blob = await self._client.get(key)
        except self._errors as exc:
            raise _unavailable(exc) from None
        return _decoded(self._sealer, key, blob)

    async def save(self, tenant: str | None, conversation: str, pseudonyms: Pseudonyms) -> None:
        key = storage_key(tenant, conversation)
        try:
            await self._client.set(key, self._sealer.seal(key, pseudonyms.dumps()), ex=self._ttl)
        except self._errors as exc:
            raise _unavailable(exc) from None

    async def aclose(self) -> None:
        await self._client.aclose()


def _unavailable(exc: BaseException) -> VaultUnavailable:
    log.warning("pseudonyms: the store is unreachable (%s)", type(exc).__name__)
    return VaultUnavailable("The conversation's pseudonyms could not be read or kept; try again.")


def open_vault(settings: PseudonymSettings) -> Vault:
    env = settings.key_env
    secret = os.environ[env].encode() if env else secrets.token_bytes(32)
    sealer = Sealer(secret)
    if settings.store == "redis" and settings.redis_url:
        return RedisVault(sealer, settings.ttl_seconds, settings.redis_url)
    return MemoryVault(sealer, settings.ttl_seconds, settings.max_conversations)
