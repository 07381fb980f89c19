"""The recorder against a real PostgreSQL that goes away: spool, replay, fail closed or
open, drain on shutdown, and a slow database that never slows a request."""

import threading
import time
import uuid

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from guard.audit.recorder import AuditRecorder
from guard.db import models
from guard.db.base import make_engine
from guard.db.repository import AuditRepository
from guard.settings import AuditSettings
from tests.conftest import make_settings
from tests.fakes.audit import sample_event, stored, wait_until
from tests.fakes.tcp_relay import TcpRelay


@pytest.fixture
def relay():
    with TcpRelay(5432) as relay:
        yield relay


def through(url, relay):
    return url.replace(":5432/", f":{relay.port}/")


def make_recorder(url, tmp_path, **options):
    values = {"flush_interval": 0.01, "retry_interval": 0.1, **options}
    settings = AuditSettings(database_url=url, spool_dir=tmp_path / "spool", **values)
    recorder = AuditRecorder(settings, AuditRepository(make_engine(url, pool_timeout=2)))
    recorder.start()
    return recorder


def test_unreachable_database_spools_then_replays_in_order_exactly_once(pg_url, relay, tmp_path):
    recorder = make_recorder(through(pg_url, relay), tmp_path)
    for i in range(50):
        recorder.record(sample_event(i))
    assert recorder.flush()
    relay.cut()
    for i in range(50, 250):
        recorder.record(sample_event(i))
    assert wait_until(lambda: recorder.stats.spooled == 200)
    assert not recorder.db_up
    assert stored(pg_url)[0].total() == 50
    relay.restore()
    # The replay starts when a retry finds the database back, which on a busy host can
    # come after flush() has seen nothing pending in the open spool: wait for it.
    assert wait_until(lambda: recorder.stats.replayed == 200, timeout=30)
    assert recorder.flush(timeout=20)
    assert recorder.db_up
    assert stored(pg_url)[0].total() == 250
    reports = stored(pg_url)[1]
    assert [(r.checked, r.problem) for r in reports] == [(250, None)]
    recorder.close()
    assert list((tmp_path / "spool").glob("*.spool")) == [
        tmp_path / "spool" / f"{recorder.chain.id}.spool"
    ]


def test_shutdown_drains_the_queue(pg_url, tmp_path):
    recorder = make_recorder(pg_url, tmp_path, flush_interval=5.0)
    for i in range(300):
        recorder.record(sample_event(i))
    recorder.close()
    assert stored(pg_url)[0].total() == 300
    assert recorder.stats.lost == 0


def test_shutdown_with_the_database_down_leaves_a_spool_the_next_start_replays(
    pg_url, relay, tmp_path
):
    first = make_recorder(through(pg_url, relay), tmp_path)
    relay.cut()
    for i in range(40):
        first.record(sample_event(i))
    first.close()
    assert first.stats.spooled == 40
    relay.restore()
    second = make_recorder(through(pg_url, relay), tmp_path)
    assert second.flush(timeout=20)
    assert stored(pg_url)[0].total() == 40
    assert second.stats.replayed == 40
    second.close()
    assert not list((tmp_path / "spool").glob(f"{first.chain.id}.*"))
    reports = stored(pg_url)[1]
    assert [r.problem for r in reports] == [None]


@pytest.mark.parametrize("mode", ["fail_closed", "fail_open"])
def test_when_nothing_can_keep_events(guard_at, upstream, pg_url, relay, mode):
    audit = {
        "database_url": through(pg_url, relay),
        "spool_max_bytes": 4096,
        "on_spool_failure": mode,
        "retry_interval": 0.1,
    }
    server = guard_at(make_settings(upstream.base_url, audit=audit))
    recorder = server.app.state.recorder
    body = {"model": "m1", "messages": [{"role": "user", "content": "x" * 500}]}
    assert recorder.flush()  # the policy bundle's event, written at start
    relay.cut()
    statuses = [httpx.post(f"{server.url}/v1/chat/completions", json=body).status_code]
    assert wait_until(lambda: not recorder.db_up)
    for _ in range(30):
        statuses.append(httpx.post(f"{server.url}/v1/chat/completions", json=body).status_code)
        time.sleep(0.02)
    assert recorder.broken
    ready = httpx.get(f"{server.url}/readyz")
    if mode == "fail_closed":
        assert statuses[-1] == 503
        r = httpx.post(f"{server.url}/v1/chat/completions", json=body)
        statuses.append(r.status_code)
        assert r.json()["error"]["code"] == "audit_unavailable"
        assert ready.status_code == 503
    else:
        assert set(statuses) == {200}
        assert ready.status_code == 200
    relay.restore()
    assert wait_until(lambda: not recorder.broken and recorder.db_up, timeout=20)
    statuses.append(httpx.post(f"{server.url}/v1/chat/completions", json=body).status_code)
    assert statuses[-1] == 200
    assert recorder.flush(timeout=20)
    kept = stored(pg_url)[0].total()
    # Fail closed loses nothing (refusals are recorded too); fail open counts its losses.
    assert kept + recorder.stats.lost == len(statuses)
    if mode == "fail_closed":
        assert recorder.stats.lost == 0


def test_a_locked_table_never_slows_requests(guard_at, upstream, pg_url):
    server = guard_at(make_settings(upstream.base_url, audit={"database_url": pg_url}))
    recorder = server.app.state.recorder
    body = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    release = threading.Event()

    def hold_lock():
        with psycopg.connect(dsn) as conn:
            conn.execute("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE")
            release.wait(10)

    locker = threading.Thread(target=hold_lock)
    locker.start()
    time.sleep(0.2)
    try:
        with httpx.Client() as client:
            took = []
            for _ in range(40):
                started = time.perf_counter()
                assert client.post(f"{server.url}/v1/chat/completions", json=body).is_success
                took.append(time.perf_counter() - started)
        assert stored(pg_url)[0].total() == 0  # the writer is stuck behind the lock ...
        assert max(took) < 0.5  # ... and no request waited for it
    finally:
        release.set()
        locker.join()
    assert recorder.flush(timeout=20)
    assert stored(pg_url)[0].total() == 40


def test_each_chain_belongs_to_one_process(pg_url, tmp_path):
    a = make_recorder(pg_url, tmp_path)
    b = make_recorder(pg_url, tmp_path)
    for i in range(20):
        a.record(sample_event(i))
        b.record(sample_event(i))
    for recorder in (a, b):
        recorder.close()
    reports = stored(pg_url)[1]
    assert sorted(r.chain_id for r in reports) == sorted([a.chain.id, b.chain.id])
    assert {(r.checked, r.problem) for r in reports} == {(20, None)}
    assert uuid.UUID(a.chain.id).version == 7


def test_a_dead_writer_process_is_replaced_and_recording_goes_on(guard, upstream):
    writer = guard.app.state.recorder
    body = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{guard.url}/v1/chat/completions", json=body).status_code == 200
    assert writer.flush()
    first_chain, first = writer.chain.id, writer._process
    first.kill()
    first.join(5)
    assert wait_until(lambda: writer.chain.id != first_chain and writer._process.is_alive())
    assert httpx.post(f"{guard.url}/v1/chat/completions", json=body).status_code == 200
    assert writer.flush(timeout=20)
    engine = writer.repo.engine
    with engine.connect() as conn:
        exchanges = sa.select(models.events.c.chain_id).where(models.events.c.kind == "exchange")
        chains = conn.execute(exchanges).scalars().all()
    assert sorted(map(str, chains)) == sorted([first_chain, writer.chain.id])


def test_an_event_the_database_refuses_is_set_aside_and_the_rest_written(pg_url, tmp_path):
    recorder = make_recorder(pg_url, tmp_path)
    poison = sample_event(1, error_code="x" * 100)  # longer than the column allows
    for event in (sample_event(0), poison, sample_event(2)):
        recorder.record(event)
    assert recorder.flush()
    recorder.close()
    assert stored(pg_url)[0].total() == 2
    assert (recorder.stats.written, recorder.stats.dead_letters) == (2, 1)
    [dead] = (tmp_path / "spool").glob("*.dead-letter")
    [line] = dead.read_text().splitlines()
    assert poison.id in line
    # The gap it leaves in the chain is reported, not hidden.
    [report] = stored(pg_url)[1]
    assert report.problem.kind == "deleted"
