"""Grafana dashboards: valid JSON whose panels read the provisioned data sources;
PromQL that names only the metrics of the telemetry contract, with their labels; SQL
that runs on a real PostgreSQL at head, as Grafana's read-only role, and finds the
seeded audit events and spans."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
import yaml

from guard.audit.chain import Sealer
from guard.audit.events import AuditEvent, FindingCount, RuleHit, policy_event
from guard.db.base import make_engine
from guard.db.migrate import upgrade
from guard.db.repository import AuditRepository, ChainInfo
from tests.fakes.audit import T0, sample_event
from tests.fakes.postgres import ADMIN, scratch_database

ROOT = Path(__file__).resolve().parents[2]
BOARDS = {p.stem: json.loads(p.read_text("utf-8")) for p in sorted(ROOT.glob("dashboards/*.json"))}
PROVISIONING = ROOT / "deploy/grafana/provisioning"
SOURCES = yaml.safe_load((PROVISIONING / "datasources/datasources.yaml").read_text("utf-8"))
PROVISIONED = {s["uid"]: s["type"] for s in SOURCES["datasources"]}
PANEL_SOURCES = {"guard-prometheus", "guard-postgres"}
READER_INIT = ROOT / "deploy/postgres/initdb/10-grafana-reader.sql"

# The telemetry contract (guard issue 7): every metric at /metrics, its type and labels.
CONTRACT: dict[str, tuple[str, frozenset[str]]] = {
    name: (kind, frozenset(labels.split()))
    for name, kind, labels in [
        ("guard_requests_total", "counter", "route model decision status tenant"),
        ("guard_request_duration_seconds", "histogram", "route model decision status"),
        ("guard_stage_duration_seconds", "histogram", "stage"),
        ("guard_detector_duration_seconds", "histogram", "detector direction"),
        ("guard_policy_duration_seconds", "histogram", "direction"),
        ("guard_rule_hits_total", "counter", "rule action direction mode"),
        ("guard_findings_total", "counter", "detector label direction"),
        ("guard_upstream_errors_total", "counter", "upstream kind"),
        ("guard_classifier_batch_size", "histogram", "detector"),
        ("guard_classifier_queue_depth", "gauge", "detector"),
        ("guard_audit_queue_depth", "gauge", ""),
        ("guard_audit_spool_bytes", "gauge", ""),
        ("guard_audit_events_lost_total", "counter", ""),
        ("guard_audit_events_written_total", "counter", ""),
        ("guard_policy_reloads_total", "counter", "outcome"),
        ("guard_policy_info", "gauge", "version"),
        ("guard_spans_exported_total", "counter", "exporter"),
        ("guard_spans_export_failures_total", "counter", "exporter"),
    ]
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Label values the contract (and the audit tables, for mode) enumerate.
VALUES = {
    "decision": {"allow", "flag", "redact", "block", ""},
    "stage": {"guard_in", "upstream_ttfb", "upstream_total", "guard_out", "total"},
    "kind": {"unavailable", "timeout", "status_5xx"},
    "outcome": {"loaded", "rejected", "unchanged"},
    "exporter": {"database", "otlp"},
    "direction": {"input", "output"},
    "action": {"allow", "flag", "redact", "block"},
    "mode": {"enforce", "monitor"},
}
SCRAPE_LABELS = {"instance", "job"}  # Prometheus adds these to every series


def series() -> dict[str, str]:
    """Every series name a query may use -> the contract metric it belongs to. A
    histogram has no series of its bare name."""
    names = {}
    for name, (kind, _) in CONTRACT.items():
        suffixes = HISTOGRAM_SUFFIXES if kind == "histogram" else ("",)
        names.update({name + suffix: name for suffix in suffixes})
    return names


SERIES = series()


# -- the dashboards' panels and queries ---------------------------------------------------


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def queries(source: str, field: str) -> list[Any]:
    """(board, panel, target) for every target of a data source, as test params."""
    return [
        pytest.param(name, panel, target, id=f"{name}:{slug(panel['title'])}:{target['refId']}")
        for name, board in BOARDS.items()
        for panel in panels(board)
        for target in panel.get("targets", [])
        if target["datasource"]["uid"] == source and field in target
    ]


PROMQL = queries("guard-prometheus", "expr")
SQL = queries("guard-postgres", "rawSql")


def by_board() -> list[Any]:
    return [pytest.param(name, id=name) for name in BOARDS]


def test_the_four_dashboards_are_there():
    assert set(BOARDS) == {"traffic", "decisions", "compliance", "batching"}
    assert len({board["uid"] for board in BOARDS.values()}) == len(BOARDS)


@pytest.mark.parametrize("name", by_board())
def test_dashboard_is_well_formed(name):
    board = BOARDS[name]
    assert board["uid"] == f"guard-{name}"
    assert board["schemaVersion"] >= 39
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in panels(board):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        xs, ys = range(pos["x"], pos["x"] + pos["w"]), range(pos["y"], pos["y"] + pos["h"])
        mine = {(x, y) for x in xs for y in ys}
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine


@pytest.mark.parametrize("name", by_board())
def test_panels_read_the_provisioned_data_sources(name):
    for panel in panels(BOARDS[name]):
        if panel["type"] == "row":
            assert "targets" not in panel
            continue
        sources = [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]
        for source in sources:
            assert source["uid"] in PANEL_SOURCES, panel["title"]
            assert source["type"] == PROVISIONED[source["uid"]], panel["title"]
    for variable in BOARDS[name]["templating"]["list"]:
        assert variable["datasource"]["uid"] in PANEL_SOURCES


# -- PromQL: only the contract's metrics and labels ---------------------------------------

METRIC_REF = re.compile(r"\b(guard_\w+)(?=[{\[)\s])")
GUARD_WORD = re.compile(r"\bguard_\w*")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHERS = re.compile(r"\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def labels_of(expr: str) -> set[str]:
    """The labels the expression's metrics carry (plus le on buckets, and the scrape's)."""
    names = set(GUARD_WORD.findall(expr))
    labels = set(SCRAPE_LABELS)
    for name in names & set(SERIES):
        labels |= CONTRACT[SERIES[name]][1]
        if name.endswith("_bucket"):
            labels.add("le")
    return labels


@pytest.mark.parametrize(("board", "panel", "target"), PROMQL)
def test_promql_names_only_contract_metrics(board, panel, target):
    expr = target["expr"]
    assert METRIC_REF.findall(expr), "the query names no guard metric"
    unknown = set(GUARD_WORD.findall(expr)) - set(SERIES)
    assert not unknown, f"not in the telemetry contract: {sorted(unknown)}"


@pytest.mark.parametrize(("board", "panel", "target"), PROMQL)
def test_promql_uses_the_metrics_labels_and_values(board, panel, target):
    expr, known = target["expr"], labels_of(target["expr"])
    grouped = {label.strip() for group in GROUPING.findall(expr) for label in group.split(",")}
    assert grouped - {""} <= known
    for matchers in MATCHERS.findall(expr):
        for label, op, value in MATCHER.findall(matchers):
            assert label in known
            if label in VALUES and op in ("=", "=~"):
                assert set(value.split("|")) <= VALUES[label], f"{label}{op}{value!r}"
    assert set(LEGEND.findall(target.get("legendFormat", ""))) <= known


def test_contract_metrics_are_the_registered_ones():
    """Every metric the dashboards may name is one guard registers. prometheus_client
    reports a counter's name without its _total suffix."""
    from guard.settings import MetricsSettings
    from guard.telemetry.metrics import Metrics

    registry = Metrics(MetricsSettings(), dict, dict).registry
    registered = {}
    for metric in registry.collect():
        name = f"{metric.name}_total" if metric.type == "counter" else metric.name
        if name.startswith("guard_"):
            registered[name] = metric.type
    assert registered == {name: kind for name, (kind, _) in CONTRACT.items()}


# -- SQL: run on PostgreSQL, as Grafana's role ---------------------------------------------

FROM, TO = "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"
MACROS = [  # as Grafana's PostgreSQL data source expands them, for FROM..TO, 1m interval
    (r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN '{FROM}' AND '{TO}'"),
    (r"\$__timeGroupAlias\(([^,]+),[^)]+\)", r'floor(extract(epoch from \1)/60)*60 AS "time"'),
    (r"\$__timeGroup\(([^,]+),[^)]+\)", r"floor(extract(epoch from \1)/60)*60"),
    (r"\$__timeFrom\(\)", f"'{FROM}'"),
    (r"\$__timeTo\(\)", f"'{TO}'"),
    (r"\$__interval\b", "'1m'"),
]
VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"  # the slowest exchange's, with a full tree
BLOCKED_TRACE = "00f067aa0ba902b700f067aa0ba902b7"
CLIENT_SPAN = "b7ad6b7169203331"  # the client's span: guard's root span's parent, not stored


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def expand(sql: str, variables: dict[str, str]) -> str:
    for pattern, replacement in MACROS:
        sql = re.sub(pattern, replacement, sql)

    def value(match: re.Match[str]) -> str:
        name, form = match[1] or match[3], match[2]
        return sql_string(variables[name]) if form == "sqlstring" else variables[name]

    sql = VARIABLE.sub(value, sql)
    assert "$" not in sql, f"a macro or variable was left: {sql}"
    return sql


class Grafana:
    """Runs a dashboard's SQL the way Grafana would: macros and variables expanded, as
    the read-only role deploy/postgres/initdb creates, in a read-only transaction."""

    def __init__(self, engine: sa.Engine, role: str) -> None:
        self.engine, self.role = engine, role

    def run(self, sql: str, variables: dict[str, str] | None = None) -> list[sa.Row[Any]]:
        with self.engine.connect() as conn, conn.begin():
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            conn.exec_driver_sql(f'SET LOCAL ROLE "{self.role}"')
            return list(conn.exec_driver_sql(expand(sql, variables or {})))

    def variables(self, board: str) -> dict[str, str]:
        """Each query variable set to the first value its query finds."""
        found = {}
        for variable in BOARDS[board]["templating"]["list"]:
            rows = self.run(variable["query"], found)
            assert rows, f"variable {variable['name']} finds nothing"
            found[variable["name"]] = str(rows[0][0])
        return found

    def panel(self, board: str, title: str) -> list[sa.Row[Any]]:
        [panel] = [p for p in panels(BOARDS[board]) if p["title"] == title]
        return self.run(panel["targets"][0]["rawSql"], self.variables(board))


def exchanges() -> list[AuditEvent]:
    no_upstream = {"upstream_ttfb_ms": None, "upstream_total_ms": None, "guard_out_ms": None}
    return [
        sample_event(0, total_ms=900.0, upstream_total_ms=880.0, trace_id=TRACE),
        sample_event(
            1,
            decision="block",
            status=403,
            model="qwen",
            tenant_id="team-a",
            licence_id="apache-2.0",
            licence_attribution_required=False,
            findings=(FindingCount("input", "pii", "US_SSN", 1, 0.85),),
            rules=(RuleHit("input", "pii.block-ssn", "block"),),
            output_scan="unscanned",
            total_ms=3.5,
            trace_id=BLOCKED_TRACE,
            **no_upstream,
        ),
        sample_event(
            2,
            decision="flag",
            model="bloom",
            tenant_id="team-b",
            licence_id="bigscience-openrail-m",
            licence_commercial_use=False,
            licence_attribution_required=False,
            findings=(FindingCount("output", "toxicity", "toxic", 1, 0.62),),
            rules=(RuleHit("output", "tox.flag", "flag"),),
            output_scan="degraded",
            trace_id=uuid.uuid4().hex,
        ),
        sample_event(
            3,
            decision="allow",
            tenant_id="team-a",
            findings=(FindingCount("input", "pii", "US_SSN", 1, 0.55),),
            rules=(RuleHit("input", "pii.ssn-shadow", "block", mode="monitor"),),
            trace_id=uuid.uuid4().hex,
        ),
        sample_event(
            4,
            decision=None,
            status=502,
            error_code="upstream_unavailable",
            findings=(),
            rules=(),
            output_scan="unscanned",
            trace_id=uuid.uuid4().hex,
            **no_upstream,
        ),
    ]


def policy_events() -> list[AuditEvent]:
    start = (T0 - timedelta(minutes=5)).timestamp()
    files = {"files": {"secrets.yaml": "name: secrets\n"}, "policies": [], "previous": None}
    problems = {"problems": ["pii.yaml:4:13: rules.0.action: Input should be 'allow', ..."]}
    return [
        policy_event("v1", "loaded", "start", files, start),
        policy_event("v1", "rejected", "watch: pii.yaml changed", problems, start + 60),
        policy_event("v2", "loaded", "watch: pii.yaml changed", files, start + 120),
    ]


def span(
    span_id: str, parent: str | None, name: str, start_ms: float, ms: float, **attributes: str
) -> dict[str, Any]:
    kind = "server" if parent == CLIENT_SPAN else "client" if name == "guard.upstream" else ""
    start = T0 + timedelta(milliseconds=start_ms)
    return {
        "span_id": span_id,
        "parent_span_id": parent,
        "name": name,
        "kind": kind or "internal",
        "start_time": start,
        "end_time": start + timedelta(milliseconds=ms),
        "duration_ms": ms,
        "status": "ok",
        "attributes": attributes,
    }


TREE = [  # TRACE's spans, in the timing tree's order, indented by depth
    span("a000000000000001", CLIENT_SPAN, "guard /v1/chat/completions", 0, 900),
    span("a000000000000002", "a000000000000001", "guard.ingress", 0.1, 0.2),
    span("a000000000000003", "a000000000000001", "guard.detector pii", 0.3, 0.1,
         **{"guard.direction": "input"}),
    span("a000000000000004", "a000000000000001", "guard.policy input", 0.4, 0.05),
    span("a000000000000005", "a000000000000001", "guard.upstream", 1, 880),
    span("a000000000000006", "a000000000000005", "guard.stream", 100, 780),
    span("a000000000000007", "a000000000000001", "guard.audit.enqueue", 899, 0.1),
]  # fmt: skip
TREE_ORDER = [
    "guard /v1/chat/completions",
    "    guard.ingress",
    "    guard.detector pii",
    "    guard.policy input",
    "    guard.upstream",
    "        guard.stream",
    "    guard.audit.enqueue",
]


def write_chain(repo: AuditRepository, instance: str, events: list[AuditEvent]) -> ChainInfo:
    chain = ChainInfo(str(uuid.uuid4()), instance, T0, keyed=False)
    sealer = Sealer(chain.id, None)
    repo.write([sealer.seal(e) for e in events], {chain.id: chain})
    return chain


def seed(engine: sa.Engine) -> None:
    repo = AuditRepository(engine)
    events = exchanges()
    write_chain(repo, "guard-1", policy_events() + events)
    # A second instance's chain whose last event was deleted: its head is missing.
    cut = write_chain(repo, "guard-2", [sample_event(9, decision="allow", rules=(), findings=())])
    spans = sa.Table("spans", sa.MetaData(), autoload_with=engine)
    blocked = TREE[:4]  # refused after the policy: no upstream call
    with engine.begin() as conn:
        conn.execute(
            spans.insert(),
            [{**s, "trace_id": TRACE, "event_id": uuid.UUID(events[0].id)} for s in TREE]
            + [
                {**s, "trace_id": BLOCKED_TRACE, "event_id": uuid.UUID(events[1].id)}
                for s in blocked
            ],
        )
        conn.execute(sa.text("DELETE FROM audit_events WHERE chain_id = :c"), {"c": cut.id})


def create_reader(database: str, role: str) -> None:
    """deploy/postgres/initdb's script, as the postgres image runs it on a new volume:
    psql, as the database's owner, before any migration."""
    env = {
        **os.environ,
        "PGHOST": "127.0.0.1",
        "PGPORT": "5432",
        "POSTGRES_USER": "postgres",
        "GRAFANA_DB_USER": role,
        "GRAFANA_DB_PASSWORD": secrets.token_hex(8),
    }
    command = ["psql", "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "-q", "-U", "postgres"]
    done = subprocess.run(
        [*command, "-d", database, "-f", str(READER_INIT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def grafana() -> Iterator[Grafana]:
    """One database for the module: created, given Grafana's role, migrated to head and
    seeded once (the pg_url fixture's steps, at module scope)."""
    role = f"grafana_test_{secrets.token_hex(4)}"
    try:
        with scratch_database() as url:
            create_reader(url.rsplit("/", 1)[1], role)
            engine = make_engine(url)
            upgrade(engine)
            seed(engine)
            yield Grafana(engine, role)
            engine.dispose()
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.mark.parametrize(("board", "panel", "target"), SQL)
def test_sql_panel_finds_the_seeded_rows(grafana, board, panel, target):
    rows = grafana.run(target["rawSql"], grafana.variables(board))
    assert rows, "no rows"
    if target["format"] == "time_series":
        assert rows[0]._fields[0] == "time"


@pytest.mark.parametrize(
    "name", [pytest.param(n, id=n) for n, b in BOARDS.items() if b["templating"]["list"]]
)
def test_variables_find_values(grafana, name):
    assert grafana.variables(name)


def test_the_timing_tree_nests_each_span_under_its_parent(grafana):
    assert grafana.variables("traffic") == {"trace_id": TRACE}
    rows = grafana.panel("traffic", "Timing tree: trace $trace_id")
    assert [r.span for r in rows] == TREE_ORDER
    assert [float(r.offset_ms) for r in rows][:2] == [0.0, 0.1]
    assert [r.direction for r in rows][2] == "input"


def test_slowest_exchanges_count_their_spans(grafana):
    rows = grafana.panel("traffic", "Slowest exchanges")
    spans = {r.trace_id: r.spans for r in rows}
    assert (spans[TRACE], spans[BLOCKED_TRACE]) == (len(TREE), 4)
    assert rows[0].trace_id == TRACE


def test_tenants_without_an_id_are_none(grafana):
    rows = grafana.panel("decisions", "Decisions by tenant")
    tenants = {r.tenant: (r.exchanges, r.blocked) for r in rows}
    assert tenants == {"(none)": (2, 0), "team-a": (2, 1), "team-b": (1, 0)}


def test_shadow_rules_are_apart_from_enforced_ones(grafana):
    enforced = {r.rule for r in grafana.panel("decisions", "Decisions by rule")}
    shadow = grafana.panel("decisions", "Monitor-mode (shadow) rule hits")
    assert "pii.ssn-shadow" not in enforced
    assert [(r.rule, r.would_have, r.decided_otherwise) for r in shadow] == [
        ("pii.ssn-shadow", "block", 1)
    ]


def test_chain_status_shows_a_missing_head(grafana):
    rows = grafana.panel("compliance", "Audit chains")
    assert {r.instance: r.status for r in rows} == {"guard-1": "ok", "guard-2": "head missing"}


def test_policy_panels_show_the_bundle_in_force_and_the_rejection(grafana):
    [in_force] = grafana.panel("compliance", "Policy versions in force")
    assert (in_force.instance, in_force.version) == ("guard-1", "v2")
    [rejected] = grafana.panel("compliance", "Rejected policy reloads")
    assert (rejected.kept_version, rejected.reason) == ("v1", "watch: pii.yaml changed")
    assert rejected.problems.startswith("pii.yaml:4:13")


def test_scans_leave_out_a_refused_exchanges_unscanned_output(grafana):
    rows = grafana.panel("compliance", "Exchanges with degraded or unscanned scans")
    assert {(r.output_scan, r.status) for r in rows} == {("degraded", 200)}


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("DELETE FROM audit_events", id="delete-events"),
        pytest.param("UPDATE audit_chains SET head_seq = 0", id="move-a-head"),
        pytest.param("DELETE FROM spans", id="delete-spans"),
        pytest.param("CREATE TABLE notes (x int)", id="create"),
    ],
)
def test_grafanas_role_reads_and_changes_nothing(grafana, statement):
    with grafana.engine.connect() as conn, conn.begin():
        conn.exec_driver_sql(f'SET LOCAL ROLE "{grafana.role}"')
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            conn.exec_driver_sql(statement)
