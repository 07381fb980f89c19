"""Keys and the authenticator: parsing, hashing, the read cache and its failure modes."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest

from guard.db.repository import DatabaseUnavailable
from guard.db.tenants import KeyRecord, TenantRecord
from guard.errors import AuthUnavailable, Unauthorized
from guard.settings import AuthSettings
from guard.tenancy import keys
from guard.tenancy.auth import Authenticator
from guard.tenancy.keys import Role


def test_a_new_key_parses_back_to_its_id_and_matches_only_its_own_secret():
    made = keys.new_key()
    key_id, secret = keys.parse(made.token)
    assert key_id == made.id
    assert keys.matches(made.salt, made.hash, secret)
    assert not keys.matches(made.salt, made.hash, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert made.hash != keys.digest(keys.new_key().salt, secret)  # salted: same secret, other hash


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("gk_0123456789abcdef", id="no-secret"),
        pytest.param("gk_0123456789ABCDEF_" + "a" * 43, id="upper-case-id"),
        pytest.param("gk_0123456789abcdef_" + "a" * 42, id="short-secret"),
        pytest.param("gk_0123456789abcdef_" + "a" * 42 + "!", id="bad-character"),
        pytest.param("xk_0123456789abcdef_" + "a" * 43, id="other-prefix"),
    ],
)
def test_malformed_keys_do_not_parse(token):
    assert keys.parse(token) is None


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("  Bearer   abc  ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_tokens_are_read_from_the_header(header, token):
    assert keys.bearer(header) == token


class FakeKeys:
    """A TenantRepository's one read the authenticator uses, counting its calls."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[KeyRecord, TenantRecord | None]] = {}
        self.reads = 0
        self.down = False
        self.gate = threading.Event()
        self.gate.set()

    def add(self, tenant: str | None = "acme") -> keys.NewKey:
        made = keys.new_key()
        now = datetime.now(UTC)
        record = KeyRecord(
            made.id, tenant, "client", "t", made.salt, made.hash, {}, now, None, None
        )
        owner = TenantRecord(tenant, {"tier": "gold"}, {"requests_per_minute": 5}, now, now)
        self.records[made.id] = (record, owner if tenant else None)
        return made

    def key(self, key_id: str):
        self.reads += 1
        self.gate.wait(5)
        if self.down:
            raise DatabaseUnavailable("OperationalError")
        return self.records.get(key_id)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def authenticator(repo, clock, **settings):
    return Authenticator(AuthSettings(**settings), [], repo, clock=clock)


async def test_a_key_is_read_once_per_cache_period():
    repo, clock = FakeKeys(), Clock()
    auth = authenticator(repo, clock, cache_seconds=10)
    made = repo.add()
    first = await auth.authenticate(f"Bearer {made.token}")
    assert (first.key_id, first.role, first.tenant.id) == (made.id, Role.CLIENT, "acme")
    assert first.tenant.get("tier") == "gold"
    assert first.tenant_limits.requests_per_minute == 5
    await auth.authenticate(f"Bearer {made.token}")
    assert repo.reads == 1
    clock.now += 10.5
    await auth.authenticate(f"Bearer {made.token}")
    assert repo.reads == 2
    auth.forget(made.id)
    await auth.authenticate(f"Bearer {made.token}")
    assert repo.reads == 3


async def test_concurrent_requests_with_one_unknown_key_share_one_read():
    repo, clock = FakeKeys(), Clock()
    auth = authenticator(repo, clock)
    made = repo.add()
    repo.gate.clear()
    calls = [asyncio.create_task(auth.authenticate(f"Bearer {made.token}")) for _ in range(20)]
    await asyncio.sleep(0.05)
    repo.gate.set()
    principals = await asyncio.gather(*calls)
    assert {p.key_id for p in principals} == {made.id}
    assert repo.reads == 1


async def test_an_unreachable_key_store_is_503_and_is_not_cached():
    repo, clock = FakeKeys(), Clock()
    auth = authenticator(repo, clock)
    made = repo.add()
    repo.down = True
    with pytest.raises(AuthUnavailable):
        await auth.authenticate(f"Bearer {made.token}")
    repo.down = False
    assert (await auth.authenticate(f"Bearer {made.token}")).key_id == made.id


async def test_a_wrong_secret_fails_even_when_the_key_is_cached():
    repo, clock = FakeKeys(), Clock()
    auth = authenticator(repo, clock)
    made = repo.add()
    await auth.authenticate(f"Bearer {made.token}")
    wrong = made.token[:-1] + ("A" if made.token[-1] != "A" else "B")
    with pytest.raises(Unauthorized, match="Invalid API key"):
        await auth.authenticate(f"Bearer {wrong}")


async def test_without_a_database_stored_keys_are_unknown():
    auth = Authenticator(AuthSettings(), [], None)
    with pytest.raises(Unauthorized):
        await auth.authenticate(f"Bearer {keys.new_key().token}")
