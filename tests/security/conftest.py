"""The security suite: real requests over loopback against a running guard, in front
of a recording model server that fails the test when it receives what it should not.

``strict`` is guard as a security boundary: keys required (a client, an admin and an
auditor key in its database), the bundled policies on. ``sealed`` is its upstream,
asserted at the end of each test to have received nothing, unless the test says
what it may receive (``sealed.allow(n)``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from guard.db.base import make_engine
from guard.db.tenants import KeyRecord, TenantRepository
from guard.policy.loader import BUNDLED
from guard.tenancy import keys
from tests.conftest import make_settings
from tests.fakes.guard_server import GuardServer
from tests.fakes.upstream import FakeModelServer

ADMIN_TOKEN = "security-suite-admin-token-0123456789"  # noqa: S105


class Sealed:
    def __init__(self, server: FakeModelServer) -> None:
        self.server = server
        self.allowed = 0

    def allow(self, count: int) -> None:
        """This test's guard may forward ``count`` requests (the legitimate ones)."""
        self.allowed = count

    @property
    def received(self) -> int:
        return len(self.server.requests)


@pytest.fixture
def sealed(upstream: FakeModelServer) -> Iterator[Sealed]:
    seal = Sealed(upstream)
    yield seal
    got = [(r.method, r.path) for r in upstream.requests]
    assert len(got) <= seal.allowed, f"the model server received what it should not: {got}"


@dataclass(frozen=True)
class Keys:
    client: str
    admin: str
    auditor: str
    revoked: str
    expired: str


@pytest.fixture
def suite_keys(audit_home) -> Keys:
    engine = make_engine(f"sqlite:///{audit_home / 'audit.sqlite3'}")
    repo = TenantRepository(engine)
    repo.create_tenant("acme", {"commercial": True}, {})
    now = datetime.now(UTC)

    def made(role: str, tenant: str | None, **times: datetime) -> str:
        new = keys.new_key()
        repo.create_key(
            KeyRecord(
                new.id, tenant, role, role, new.salt, new.hash, {}, now,
                times.get("expires_at"), times.get("revoked_at"),
            )
        )  # fmt: skip
        return new.token

    result = Keys(
        client=made("client", "acme"),
        admin=made("admin", None),
        auditor=made("auditor", None),
        revoked=made("client", "acme", revoked_at=now),
        expired=made("client", "acme", expires_at=now),
    )
    engine.dispose()
    return result


@pytest.fixture
def strict(guard_at, upstream, suite_keys, monkeypatch) -> GuardServer:
    monkeypatch.setenv("GUARD_ADMIN_TOKEN", ADMIN_TOKEN)
    settings = make_settings(
        upstream.base_url,
        auth={"required": True, "cache_seconds": 0},
        policy={"dir": str(BUNDLED)},
        server={"max_body_bytes": 64 * 1024},
    )
    return guard_at(settings)


def raw_request(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send ``data`` as it is (no client normalizes the path or the headers) and read
    the whole response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_response(sock)


def read_response(sock: socket.socket) -> bytes:
    """One whole response (its Content-Length worth of body), or what came before the
    connection closed or went quiet."""
    chunks: list[bytes] = []
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
            break
    return b"".join(chunks)


def _complete(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])
