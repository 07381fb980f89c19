"""The audit store on SQLite and PostgreSQL: migrations, exact round trips, and hash
chains that name the event that was changed, deleted or inserted."""

import hashlib
import uuid
from collections.abc import Iterator

import msgspec
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from guard.audit.chain import Sealer, canonical, digest, verify_events, verify_trail
from guard.audit.events import AuditEvent
from guard.db import models
from guard.db.base import make_engine
from guard.db.migrate import MIGRATIONS, current_revision, downgrade, head_revision, upgrade
from guard.db.repository import AuditRepository, ChainInfo
from tests.fakes.audit import T0, sample_event
from tests.fakes.postgres import scratch_database

KEY = b"chain-secret"
VERSIONS = {
    "toxicity": "unitary/toxic-bert@4d6c22e (apache-2.0; cuda:0, float16)",
    "pii": "spacy:en_core_web_lg@3.8.0 (mit; cpu)",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'a.sqlite3'}")
        yield engine
        engine.dispose()
        return
    with scratch_database() as url:
        engine = make_engine(url)
        yield engine
        engine.dispose()


def test_every_migration_applies_in_turn_and_matches_the_models(engine):
    revisions = [s.revision for s in ScriptDirectory(str(MIGRATIONS)).walk_revisions()]
    for revision in reversed(revisions):
        upgrade(engine, revision)
        assert current_revision(engine) == revision
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), models.metadata)
    assert diff == []
    downgrade(engine, "base")
    assert current_revision(engine) is None
    assert not sa.inspect(engine).has_table("audit_events")
    upgrade(engine)


def test_migration_files_are_date_prefixed():
    names = sorted(p.name for p in (MIGRATIONS / "versions").glob("*.py"))
    assert names
    assert all(name[:8].isdigit() and name[8] == "_" for name in names)


def _store(engine, events, key=None):
    upgrade(engine)
    repo = AuditRepository(engine)
    chain = ChainInfo(str(uuid.uuid4()), "test:1", T0, keyed=key is not None)
    sealer = Sealer(chain.id, key)
    sealed = [sealer.seal(e) for e in events]
    repo.write(sealed, {chain.id: chain})
    return repo, chain, sealed


def test_events_come_back_exactly_as_hashed(engine):
    repo, chain, sealed = _store(engine, [sample_event(i) for i in range(3)])
    back = list(repo.chain_events(chain.id, 0))
    assert back == sealed
    assert [digest(e, None) for e in back] == [e.hash for e in sealed]
    # Writing the same batch again (a spool replayed twice) changes nothing.
    repo.write(sealed, {chain.id: chain})
    assert list(repo.chain_events(chain.id, 0)) == sealed
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(models.findings)).scalar() == 3
    assert repo.chain(chain.id).head_seq == 3


def _problem(repo, key=None):
    [report] = verify_trail(repo, key)
    return report.problem


def _update(engine, stmt):
    with engine.begin() as conn:
        conn.execute(stmt)


E = models.events


def test_verify_passes_an_intact_chain_and_names_a_changed_event(engine):
    repo, _chain, sealed = _store(engine, [sample_event(i) for i in range(5)])
    assert _problem(repo) is None
    _update(engine, sa.update(E).where(E.c.seq == 3).values(decision="allow"))
    problem = _problem(repo)
    assert (problem.kind, problem.event_id) == ("changed", sealed[2].id)


def test_verify_names_a_deleted_event(engine):
    repo, _chain, sealed = _store(engine, [sample_event(i) for i in range(5)])
    _update(engine, sa.delete(E).where(E.c.seq == 3))
    problem = _problem(repo)
    assert (problem.kind, problem.event_id) == ("deleted", sealed[3].id)
    _update(engine, sa.delete(E).where(E.c.seq == 5))
    problem = _problem(repo)
    assert problem.kind == "deleted"


def _forge(event, after, seq):
    """What a forger without the chain's key can do: a self-consistent sha256."""
    forged = msgspec.structs.replace(
        event, id=str(uuid.uuid4()), chain_id=after.chain_id, prev_hash=after.hash, seq=seq
    )
    return msgspec.structs.replace(forged, hash=digest(forged, None))


def _insert(engine, event):
    row = msgspec.to_builtins(event, builtin_types=(type(T0),))
    row["id"], row["chain_id"] = uuid.UUID(event.id), uuid.UUID(event.chain_id)
    _update(engine, sa.insert(E).values(**row))


@pytest.mark.parametrize("keyed", [False, True], ids=["sha256", "hmac"])
def test_verify_names_an_inserted_event(engine, keyed):
    key = KEY if keyed else None
    repo, _chain, sealed = _store(engine, [sample_event(i) for i in range(5)], key)
    # Make room at seq 3 and slip a forged event in, linked to the event before it.
    _update(engine, sa.update(E).where(E.c.seq >= 3).values(seq=E.c.seq + 100))
    _update(engine, sa.update(E).where(E.c.seq >= 100).values(seq=E.c.seq - 99))
    forged = _forge(sample_event(9, decision="allow"), sealed[1], 3)
    _insert(engine, forged)
    problem = _problem(repo, key)
    assert (problem.kind, problem.event_id) == ("inserted", forged.id)


def test_verify_names_an_event_appended_past_the_head(engine):
    repo, _chain, sealed = _store(engine, [sample_event(i) for i in range(3)])
    forged = _forge(sample_event(9), sealed[-1], 4)
    _insert(engine, forged)
    problem = _problem(repo)
    assert (problem.kind, problem.event_id) == ("inserted", forged.id)


def test_a_keyed_chain_needs_its_key(engine):
    repo, _, _ = _store(engine, [sample_event(0)], KEY)
    assert _problem(repo, KEY) is None
    assert _problem(repo, None) is not None
    assert _problem(repo, b"wrong").kind == "changed"


def test_purge_keeps_the_rest_of_the_chain_verifiable(engine):
    repo, chain, sealed = _store(engine, [sample_event(i) for i in range(6)])
    assert repo.purge(sealed[3].started_at) == 3
    assert [e.seq for e in repo.chain_events(chain.id, 0)] == [4, 5, 6]
    assert _problem(repo) is None
    with engine.connect() as conn:
        left = conn.execute(sa.select(sa.func.count()).select_from(models.findings)).scalar()
    assert left == 3


def test_an_export_verifies_on_its_own():
    chain_id = str(uuid.uuid4())
    sealer = Sealer(chain_id, None)
    sealed = [sealer.seal(sample_event(i)) for i in range(4)]
    [report] = verify_events(reversed(sealed), None)
    assert (report.checked, report.problem) == (4, None)
    tampered = [*sealed[:2], msgspec.structs.replace(sealed[2], status=500), sealed[3]]
    [report] = verify_events(tampered, None)
    assert (report.problem.kind, report.problem.event_id) == ("changed", sealed[2].id)


def test_verify_since_starts_at_the_first_event_of_the_period(engine):
    repo, _chain, sealed = _store(engine, [sample_event(i) for i in range(6)])
    _update(engine, sa.update(E).where(E.c.seq == 1).values(decision="allow"))
    assert _problem(repo).kind == "changed"  # the whole chain: seq 1 was changed
    [report] = verify_trail(repo, None, since=sealed[2].ended_at)
    assert (report.checked, report.problem) == (4, None)
    _update(engine, sa.update(E).where(E.c.seq == 5).values(status=201))
    [report] = verify_trail(repo, None, since=sealed[2].ended_at)
    assert (report.problem.kind, report.problem.event_id) == ("changed", sealed[4].id)


def _encoded_without_versions(event: AuditEvent) -> bytes:
    """The canonical encoding as it was before ``detector_versions`` existed."""
    data = msgspec.to_builtins(msgspec.structs.replace(event, seq=0, hash=""))
    del data["detector_versions"]
    return msgspec.json.encode(data, order="sorted")


def test_an_event_without_detector_versions_hashes_as_before_the_field_existed():
    sealed = Sealer(str(uuid.uuid4()), None).seal(sample_event(0))
    before = _encoded_without_versions(sealed)
    assert canonical(sealed) == before
    assert sealed.hash == hashlib.sha256(before).hexdigest()
    # Such an event, encoded then and read back now, gets an empty dict and its hash.
    reread = msgspec.json.decode(before, type=AuditEvent)
    assert reread.detector_versions == {}
    assert digest(reread, None) == sealed.hash


@pytest.mark.parametrize("key", [None, KEY], ids=["sha256", "hmac"])
def test_detector_versions_are_covered_by_the_hash(key):
    sealed = Sealer(str(uuid.uuid4()), key).seal(sample_event(0, detector_versions=VERSIONS))
    assert b'"detector_versions":{"pii":' in canonical(sealed)
    assert digest(sealed, key) == sealed.hash
    on_cpu = {**VERSIONS, "toxicity": "unitary/toxic-bert@4d6c22e (apache-2.0; cpu, float32)"}
    for versions in (on_cpu, {"pii": VERSIONS["pii"]}, {}):
        changed = msgspec.structs.replace(sealed, detector_versions=versions)
        assert digest(changed, key) != sealed.hash


def test_detector_versions_come_back_exactly_as_hashed(engine):
    events = [sample_event(0), sample_event(1, detector_versions=VERSIONS)]
    repo, chain, sealed = _store(engine, events)
    back = list(repo.chain_events(chain.id, 0))
    assert back == sealed
    assert [e.detector_versions for e in back] == [{}, VERSIONS]
    assert _problem(repo) is None
    on_cpu = {**VERSIONS, "toxicity": "unitary/toxic-bert@4d6c22e (apache-2.0; cpu, float32)"}
    _update(engine, sa.update(E).where(E.c.seq == 2).values(detector_versions=on_cpu))
    problem = _problem(repo)
    assert (problem.kind, problem.event_id) == ("changed", sealed[1].id)


def test_events_stored_before_the_detector_versions_column_still_verify(engine):
    upgrade(engine, "2026112803")  # the schema before the column
    chain = ChainInfo(str(uuid.uuid4()), "test:old", T0, keyed=False)
    sealer = Sealer(chain.id, None)
    sealed = [sealer.seal(sample_event(i)) for i in range(3)]
    assert [e.hash for e in sealed] == [
        hashlib.sha256(_encoded_without_versions(e)).hexdigest() for e in sealed
    ]
    for event in sealed:
        row = msgspec.to_builtins(event, builtin_types=(type(T0),))
        del row["detector_versions"]
        row["id"], row["chain_id"] = uuid.UUID(event.id), uuid.UUID(event.chain_id)
        _update(engine, sa.insert(E).values(**row))
    head = {"head_seq": 3, "head_hash": sealed[-1].hash, "anchor_seq": 0}
    values = {"id": uuid.UUID(chain.id), "instance": chain.instance, "keyed": False}
    _update(engine, sa.insert(models.chains).values(**values, started_at=T0, **head))
    upgrade(engine)
    repo = AuditRepository(engine)
    assert list(repo.chain_events(chain.id, 0)) == sealed
    assert _problem(repo) is None
