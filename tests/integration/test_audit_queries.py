"""Compliance queries: the filters on both databases, the command line, the admin API."""

import csv
import io
import json
import os
import subprocess
import sys
import uuid
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from guard.audit import queries
from guard.audit.chain import Sealer
from guard.audit.events import FindingCount, RuleHit
from guard.db import models
from guard.db.base import make_engine
from guard.db.migrate import upgrade
from guard.db.repository import AuditRepository, ChainInfo
from tests.conftest import make_settings
from tests.fakes.audit import T0, sample_event
from tests.fakes.postgres import scratch_database

EVENTS = [
    sample_event(0),  # redact, llama, EMAIL_ADDRESS 0.95, rule pii.contact
    sample_event(
        1,
        decision="block",
        status=403,
        model="qwen",
        licence_id="apache-2.0",
        licence_commercial_use=True,
        findings=(FindingCount("input", "pii", "US_SSN", 1, 0.85),),
        rules=(RuleHit("input", "pii.block-ssn", "block"),),
        output_scan="unscanned",
        prompt_tokens=None,
        completion_tokens=None,
    ),
    sample_event(
        2,
        decision="flag",
        model="bloom",
        licence_id="bigscience-openrail-m",
        licence_commercial_use=False,
        findings=(FindingCount("output", "toxicity", "toxic", 1, 0.62),),
        rules=(RuleHit("output", "tox.flag", "flag"),),
        output_scan="degraded",
        client_address="10.0.0.9",
        detector_versions={"toxicity": "unitary/toxic-bert@4d6c22e (apache-2.0; cuda:0)"},
    ),
    sample_event(3, decision="allow", findings=(), rules=(), status=200, tenant_id="team-a"),
]


def seed(engine):
    upgrade(engine)
    repo = AuditRepository(engine)
    chain = ChainInfo(str(uuid.uuid4()), "seed:1", T0, keyed=False)
    sealer = Sealer(chain.id, None)
    sealed = [sealer.seal(e) for e in EVENTS]
    repo.write(sealed, {chain.id: chain})
    return repo, sealed


@pytest.fixture(params=["sqlite", "postgresql"])
def seeded(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'q.sqlite3'}"
        engine = make_engine(url)
        yield (url, *seed(engine))
        engine.dispose()
        return
    with scratch_database() as url:
        engine = make_engine(url)
        yield (url, *seed(engine))
        engine.dispose()


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        pytest.param({}, [0, 1, 2, 3], id="all"),
        pytest.param({"model": "qwen"}, [1], id="model"),
        pytest.param({"licence": "llama3.1"}, [0, 3], id="licence"),
        pytest.param({"commercial": False}, [2], id="non-commercial"),
        pytest.param({"decision": "block"}, [1], id="decision"),
        pytest.param({"rule": "pii.contact"}, [0], id="rule"),
        pytest.param({"entity": "US_SSN"}, [1], id="entity"),
        pytest.param({"min_score": 0.9}, [0], id="min-score"),
        pytest.param({"entity": "toxic", "min_score": 0.5}, [2], id="label-score"),
        pytest.param({"entity": "toxic", "min_score": 0.7}, [], id="label-score-over"),
        pytest.param({"status": 403}, [1], id="status"),
        pytest.param({"scan": "degraded"}, [2], id="scan-status"),
        pytest.param({"tenant": "team-a"}, [3], id="tenant"),
        pytest.param({"client": "10.0.0.9"}, [2], id="client"),
        pytest.param({"since": T0 + timedelta(minutes=1), "until": T0 + timedelta(minutes=3)},
                     [1, 2], id="time-range"),
    ],
)  # fmt: skip
def test_filters(seeded, filters, expected):
    _, repo, sealed = seeded
    found = repo.events(queries.list_events(queries.AuditFilter(**filters), limit=100))
    assert sorted(e.id for e in found) == sorted(sealed[i].id for i in expected)


def test_stats_count_by_each_dimension_and_total_tokens(seeded):
    _, repo, _ = seeded
    report = queries.stats(repo, queries.AuditFilter())
    assert {r["decision"]: r["events"] for r in report["decision"]} == {
        "redact": 1,
        "block": 1,
        "flag": 1,
        "allow": 1,
    }
    assert {r["rule_id"]: r["events"] for r in report["rule"]} == {
        "pii.contact": 1,
        "pii.block-ssn": 1,
        "tox.flag": 1,
    }
    ssn = next(r for r in report["entity"] if r["label"] == "US_SSN")
    assert (ssn["events"], ssn["findings"]) == (1, 1)
    assert {r["model"]: r["events"] for r in report["model"]} == {"llama": 2, "qwen": 1, "bloom": 1}
    assert {r["tenant"]: r["events"] for r in report["tenant"]} == {
        "10.0.0.7": 2,
        "10.0.0.9": 1,
        "team-a": 1,
    }
    tokens = {(r["tenant"], r["model"]): r["prompt_tokens"] for r in report["tokens"]}
    assert tokens[("10.0.0.7", "llama")] == 12
    assert tokens[("10.0.0.7", "qwen")] == 0


def guard_cli(url, *args, input_text=None):
    return subprocess.run(
        [sys.executable, "-m", "guard", "audit", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        input=input_text,
        env={**os.environ, "GUARD_AUDIT__DATABASE_URL": url},
    )


def test_command_line_list_show_stats(seeded):
    url, _, sealed = seeded
    listed = guard_cli(url, "list", "--decision", "block", "--format", "jsonl")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [sealed[1].id]
    table = guard_cli(url, "list", "--entity", "EMAIL_ADDRESS").stdout.splitlines()
    assert table[0].split()[:2] == ["id", "started"]
    assert sealed[0].id in table[1] and "EMAIL_ADDRESSx2" in table[1]
    rows = list(csv.DictReader(io.StringIO(guard_cli(url, "list", "--format", "csv").stdout)))
    assert {r["id"] for r in rows} == {e.id for e in sealed}
    shown = guard_cli(url, "show", sealed[1].id)
    assert "decision: block" in shown.stdout
    assert "input pii US_SSN: 1 (max score 0.85)" in shown.stdout
    assert "upstream_ttfb: 120.5" in shown.stdout
    assert "detector versions: none recorded" in shown.stdout
    versioned = guard_cli(url, "show", sealed[2].id).stdout
    assert "  toxicity: unitary/toxic-bert@4d6c22e (apache-2.0; cuda:0)" in versioned
    missing = guard_cli(url, "show", str(uuid.uuid4()))
    assert missing.returncode == 1
    bad = guard_cli(url, "list", "--min-score", "2")
    assert bad.returncode == 2
    assert "--min-score" in bad.stderr
    stats = guard_cli(url, "stats", "--since", "2026-03-01T12:01:00")
    assert "by decision:" in stats.stdout
    assert "redact" not in stats.stdout.split("by rule:")[0]


def test_export_verifies_and_purge_records_itself(seeded, tmp_path):
    url, repo, sealed = seeded
    path = tmp_path / "evidence.jsonl"
    assert guard_cli(url, "export", "-o", str(path)).returncode == 0
    exported = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["hash"] for e in exported] == [e.hash for e in sealed]
    assert exported[2]["detector_versions"] == EVENTS[2].detector_versions
    assert guard_cli(url, "verify", "--file", str(path)).returncode == 0
    exported[2]["decision"] = "allow"
    path.write_text("".join(json.dumps(e) + "\n" for e in exported))
    tampered = guard_cli(url, "verify", "--file", str(path))
    assert tampered.returncode == 1
    assert f"changed: event {sealed[2].id}" in tampered.stdout
    csv_out = guard_cli(url, "export", "--format", "csv").stdout
    assert csv_out.splitlines()[0].startswith("id,chain_id,seq,prev_hash,hash")
    assert "detector_versions" in csv_out.splitlines()[0].split(",")
    purged = guard_cli(url, "purge", "--before", "2026-03-01T12:02:00", "--yes")
    assert purged.stdout.strip() == "deleted 2 events"
    verified = guard_cli(url, "verify")
    assert verified.returncode == 0, verified.stdout
    assert "2 chains, 0 broken" in verified.stdout
    admin = repo.events(queries.list_events(queries.AuditFilter(kind="admin"), limit=10))
    assert [(e.route, e.detail["deleted"]) for e in admin] == [("audit purge", 2)]


def test_verify_names_a_tampered_event_and_fails(seeded):
    url, repo, sealed = seeded
    with repo.engine.begin() as conn:
        conn.execute(sa.delete(models.events).where(models.events.c.seq == 2))
    result = guard_cli(url, "verify")
    assert result.returncode == 1
    assert f"deleted: event {sealed[2].id}" in result.stdout


TOKEN = "admin-token-for-tests"  # noqa: S105  # a test value


@pytest.fixture
def admin_guard(guard_at, upstream, monkeypatch, audit_home):
    monkeypatch.setenv("GUARD_ADMIN_TOKEN", TOKEN)
    engine = make_engine(f"sqlite:///{audit_home / 'audit.sqlite3'}")
    _, sealed = seed(engine)
    engine.dispose()
    return guard_at(make_settings(upstream.base_url)), sealed


def admin(server, path, token=TOKEN, **params):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{server.url}/admin/audit{path}", params=params, headers=headers)


def test_admin_api_needs_its_own_token(admin_guard):
    server, _ = admin_guard
    for token in (None, "wrong", "admin-token-for-test"):
        r = admin(server, "/events", token=token)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.post(f"{server.url}/admin/audit/events", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 405  # read-only


def test_admin_api_queries(admin_guard):
    server, sealed = admin_guard
    listed = admin(server, "/events", decision="block").json()["data"]
    assert [e["id"] for e in listed] == [sealed[1].id]
    jsonl = admin(server, "/events", format="jsonl", limit="2")
    assert len(jsonl.text.splitlines()) == 2
    assert admin(server, f"/events/{sealed[2].id}").json()["decision"] == "flag"
    assert admin(server, f"/events/{uuid.uuid4()}").status_code == 404
    stats = admin(server, "/stats").json()
    assert {r["decision"]: r["events"] for r in stats["decision"]}["block"] == 1
    export = [json.loads(line) for line in admin(server, "/export").text.splitlines()]
    # The seeded exchanges in their chain's order; guard's own start (its policy
    # bundle loaded) may be written beside them, in a chain of its own.
    assert [e["seq"] for e in export if e["kind"] == "exchange"] == [1, 2, 3, 4]
    assert {e["kind"] for e in export} <= {"exchange", "policy"}
    verify = admin(server, "/verify").json()
    assert verify["ok"] is True
    bad = admin(server, "/events", min_score="high")
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "min_score"
    unknown = admin(server, "/events", colour="blue")
    assert unknown.status_code == 400
    assert admin(server, "/events", limit="0").status_code == 400
