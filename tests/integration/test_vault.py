"""Conversation pseudonym stores: memory and the real Redis on 127.0.0.1:6379."""

import asyncio
import secrets

import pytest
import redis

from guard.errors import VaultUnavailable
from guard.policy.pseudonyms import Pseudonyms
from guard.policy.vault import MemoryVault, RedisVault, Sealer, open_vault, storage_key
from guard.settings import PseudonymSettings

REDIS_URL = "redis://127.0.0.1:6379/0"


def a_map(*names):
    p = Pseudonyms()
    for name in names:
        p.token("PERSON", name)
    return p


async def test_memory_vault_keeps_a_map_per_tenant_and_conversation():
    vault = MemoryVault(Sealer(b"s"), ttl=60, capacity=10)
    await vault.save("acme", "conv-0001", a_map("Maria"))
    assert (await vault.load("acme", "conv-0001")).token("PERSON", "Maria") == "<PERSON_1>"
    assert len(await vault.load("globex", "conv-0001")) == 0  # another tenant
    assert len(await vault.load("acme", "conv-0002")) == 0


async def test_memory_vault_forgets_after_the_ttl_and_beyond_capacity():
    vault = MemoryVault(Sealer(b"s"), ttl=0.05, capacity=2)
    await vault.save(None, "conv-0001", a_map("A"))
    await asyncio.sleep(0.1)
    assert len(await vault.load(None, "conv-0001")) == 0
    vault = MemoryVault(Sealer(b"s"), ttl=60, capacity=2)
    for i in range(3):
        await vault.save(None, f"conv-000{i}", a_map("A"))
    assert len(await vault.load(None, "conv-0000")) == 0  # the oldest went
    assert len(await vault.load(None, "conv-0002")) == 1


def test_a_sealed_map_hides_its_values_and_opens_only_under_its_key():
    sealer = Sealer(b"secret")
    blob = sealer.seal("k1", a_map("Maria Gonzalez").dumps())
    assert b"Maria" not in blob
    assert sealer.open("k1", blob) is not None
    assert sealer.open("k2", blob) is None  # moved to another conversation
    assert Sealer(b"other").open("k1", blob) is None


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield client
    client.close()


async def test_redis_vault_shares_maps_encrypted_with_a_ttl(redis_client):
    conversation = "conv-" + secrets.token_hex(8)
    first = RedisVault(Sealer(b"shared"), ttl=120, url=REDIS_URL)
    second = RedisVault(Sealer(b"shared"), ttl=120, url=REDIS_URL)  # another replica
    try:
        await first.save("acme", conversation, a_map("Maria Gonzalez"))
        back = await second.load("acme", conversation)
        assert back.token("PERSON", "Maria Gonzalez") == "<PERSON_1>"
        key = storage_key("acme", conversation)
        raw = redis_client.get(key)
        assert raw and b"Maria" not in raw and conversation.encode() not in key.encode()
        assert 0 < redis_client.ttl(key) <= 120
        wrong = RedisVault(Sealer(b"rotated"), ttl=120, url=REDIS_URL)
        assert len(await wrong.load("acme", conversation)) == 0
        await wrong.aclose()
    finally:
        await first.aclose()
        await second.aclose()
        redis_client.delete(storage_key("acme", conversation))


async def test_an_unreachable_redis_is_a_503_not_a_crash():
    vault = RedisVault(Sealer(b"s"), ttl=60, url="redis://127.0.0.1:1/0")
    with pytest.raises(VaultUnavailable) as caught:
        await vault.load(None, "conv-0001")
    assert caught.value.status == 503
    await vault.aclose()


def test_settings_refuse_a_shared_store_without_a_key(monkeypatch):
    with pytest.raises(ValueError, match="key_env"):
        PseudonymSettings(store="redis", redis_url=REDIS_URL)
    monkeypatch.setenv("GUARD_TEST_PSEUDONYM_KEY", "s3cret")
    settings = PseudonymSettings(
        store="redis", redis_url=REDIS_URL, key_env="GUARD_TEST_PSEUDONYM_KEY"
    )
    assert isinstance(open_vault(settings), RedisVault)
