"""API keys: made once, shown once, kept only as a salted hash, checked in constant time.

A key reads ``gk_<id>_<secret>``: the id finds the stored record without a scan, the
secret (256 random bits) is what proves it. A secret that random needs no slow hash to
resist guessing; a salted SHA-256 keeps a stolen table from matching keys elsewhere, and
it costs microseconds on the request path where a password hash would cost milliseconds.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "gk"
_KEY = re.compile(r"gk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


class Role(enum.StrEnum):
    """What a key may do: ``client`` calls models; ``admin`` manages tenants, keys and
    policies; ``auditor`` reads the audit trail. No role includes another."""

    CLIENT = "client"
    ADMIN = "admin"
    AUDITOR = "auditor"


@dataclass(frozen=True, slots=True)
class NewKey:
    id: str
    token: str  # the whole key, shown once to whoever made it
    salt: str
    hash: str


def new_key() -> NewKey:
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    return NewKey(key_id, f"{PREFIX}_{key_id}_{secret}", salt, digest(salt, secret))


def parse(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else None."""
    found = _KEY.fullmatch(token)
    return (found.group(1), found.group(2)) if found else None


def digest(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def matches(salt: str, stored: str, secret: str) -> bool:
    return hmac.compare_digest(digest(salt, secret), stored)


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header (None for none or another scheme)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
