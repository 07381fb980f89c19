"""The spool on its own: appended, fsynced, replayed from its offset, adopted after a crash."""

import fcntl
import os
import uuid

import pytest
import sqlalchemy as sa

from guard.audit.chain import Sealer
from guard.audit.spool import Spool, SpoolFull
from guard.db import models
from guard.db.base import make_engine
from guard.db.migrate import upgrade
from guard.db.repository import AuditRepository, ChainInfo
from tests.fakes.audit import T0, sample_event


def sealed_events(chain, count, **fields):
    sealer = Sealer(chain.id, None)
    return [sealer.seal(sample_event(i, **fields)) for i in range(count)]


def new_chain():
    return ChainInfo(str(uuid.uuid4()), "test:1", T0, keyed=False)


def test_appended_events_replay_in_order_and_the_spool_starts_over(tmp_path):
    chain = new_chain()
    spool = Spool(tmp_path, chain, 10**9)
    events = sealed_events(chain, 7)
    spool.append(events[:3])
    spool.append(events[3:])
    assert spool.pending
    first, offset = spool.read(5)
    assert first == events[:5]
    spool.advance(offset)
    rest, offset = spool.read(5)
    assert rest == events[5:]
    spool.advance(offset)
    assert not spool.pending
    assert spool.size == 0
    assert spool.path.stat().st_size < 1000  # back to its header
    spool.close()


def test_a_full_spool_refuses_and_stays_as_it_was(tmp_path):
    chain = new_chain()
    spool = Spool(tmp_path, chain, 4096)
    events = sealed_events(chain, 3, request_texts=["x" * 1500])
    spool.append(events[:1])
    size = spool.path.stat().st_size
    with pytest.raises(SpoolFull):
        spool.append(events[1:])
    assert spool.path.stat().st_size == size
    spool.close()


def test_a_spool_left_by_a_dead_process_is_adopted_and_replayed_exactly_once(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'a.sqlite3'}")
    upgrade(engine)
    repo = AuditRepository(engine)
    chain = new_chain()
    events = sealed_events(chain, 4)
    spool = Spool(tmp_path / "spool", chain, 10**9)
    spool.append(events)
    batch, offset = spool.read(2)
    repo.write(batch, {chain.id: chain})  # written, then the process died before advance()
    with spool.path.open("ab") as file:
        file.write(b'{"id": "torn')  # and an unfinished write at the end
    # A live owner holds the lock: nobody adopts it.
    assert list(Spool.orphans(tmp_path / "spool", 10**9)) == []
    spool.close()  # the owner is gone (a dead process's locks go with it)
    [orphan] = Spool.orphans(tmp_path / "spool", 10**9)
    assert orphan.chain.id == chain.id
    replayed, offset = orphan.read(100)
    assert replayed == events  # from the last recorded offset: the first two again
    repo.write(replayed, {chain.id: chain})
    orphan.advance(offset)
    assert orphan.read(100) == ([], offset)  # only the torn tail is left
    orphan.remove()
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(models.events)).scalar() == 4
    assert repo.chain(chain.id).head_seq == 4
    assert not list((tmp_path / "spool").iterdir())
    engine.dispose()


def test_events_longer_than_a_read_come_back_whole(tmp_path):
    chain = new_chain()
    spool = Spool(tmp_path, chain, 10**9)
    big = "é" * (3 * 1024 * 1024)  # 6 MB of UTF-8: more than one read
    events = sealed_events(chain, 2, request_texts=[big])
    spool.append(events)
    back = []
    while spool.pending:
        more, offset = spool.read(10)
        back.extend(more)
        spool.advance(offset)
    assert back == events
    spool.close()


def test_the_spool_file_is_private_and_locked(tmp_path):
    chain = new_chain()
    spool = Spool(tmp_path, chain, 10**9)
    spool.append(sealed_events(chain, 1))
    assert spool.path.stat().st_mode & 0o777 == 0o600
    fd = os.open(spool.path, os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
    spool.close()
