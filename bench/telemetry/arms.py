"""guard's latency with telemetry on vs off under load: wrk against two guard instances
that differ only in their ``telemetry`` section, both recording the audit trail into a
scratch PostgreSQL database of their own, in front of the same nginx mock upstream.

Targets (one uvicorn worker each, started and stopped here):
  direct         wrk -> the nginx mock (the floor every proxy adds to)
  telemetry-off  ``telemetry: {traces: {exporters: []}, metrics: {enabled: false}}``
  telemetry-on   ``telemetry: {traces: {exporters: [database]}, metrics: {enabled: true}}``
  traces-only    (with --split) traces to the database, metrics off
  metrics-only   (with --split) metrics on, no traces

Cells run interleaved, the order rotating each round. In each round every arm with
metrics on has its /metrics scraped once while wrk runs, as Prometheus would. Afterwards
each recorder is drained, and what each arm wrote is counted: audit events and spans in
its database, and what its /metrics says.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psutil
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from bench.audit import latency as lat
from bench.audit.scratch import Scratch
from bench.proxy_overhead import procs as px
from bench.proxy_overhead.load import PATH, Sample, measure, request_body, run_wrk

DIRECT, OFF, ON = "direct", "telemetry-off", "telemetry-on"
TRACES, METRICS = "traces-only", "metrics-only"
GUARDS = (OFF, ON)
SPLIT = (TRACES, METRICS)
# arm -> (traces into the database, metrics served)
ARMS = {OFF: (False, False), ON: (True, True), TRACES: (True, False), METRICS: (False, True)}


def telemetry_section(name: str) -> str:
    traces, metrics = ARMS[name]
    exporters = "[database]" if traces else "[]"
    return f"{{traces: {{exporters: {exporters}}}, metrics: {{enabled: {str(metrics).lower()}}}}}"


_SCRAPE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Scrape:
    """One GET /metrics: what it answered and how long it took."""

    status: int  # 0: no answer
    ms: float
    size: int
    requests_total: float | None  # sum of guard_requests_total, None when absent
    spans_exported: float | None  # guard_spans_exported_total{exporter="database"}
    error: str = ""


@dataclass
class Target(lat.Target):
    """A bench.audit target (so its tally applies), with this bench's extras."""

    scratch: Scratch | None = None
    serving_us: list[float] = field(default_factory=list)  # CPU µs/req, the guard process
    writer_us: list[float] = field(default_factory=list)  # CPU µs/req, its child processes
    postgres_us: list[float] = field(default_factory=list)  # CPU µs/req, the database server
    scrapes: list[Scrape] = field(default_factory=list)


@dataclass(frozen=True)
class Written:
    """What one guard arm left behind, counted after its recorder drained."""

    name: str
    tally: lat.Tally
    exchanges: int  # audit events of kind "exchange" (tally.rows also holds policy loads)
    spans: int
    traces: int  # distinct trace ids in spans
    traced_events: int  # distinct event ids in spans
    metrics: Scrape  # a last GET /metrics, after the load

    @property
    def traces_ok(self) -> bool:
        """Traced: one trace per stored exchange; else no span at all."""
        if not ARMS[self.name][0]:
            return self.spans == 0
        return self.spans > 0 and self.traces == self.traced_events == self.exchanges

    @property
    def metrics_ok(self) -> bool:
        """Metrics on: /metrics counts every stored exchange and span; else it is 404."""
        if not ARMS[self.name][1]:
            return self.metrics.status == 404
        return (
            self.metrics.status == 200
            and self.metrics.requests_total == self.exchanges
            and self.metrics.spans_exported == self.spans
        )

    @property
    def ok(self) -> bool:
        return self.traces_ok and self.metrics_ok


def start(procs: px.Procs, names: Sequence[str], scratches: dict[str, Scratch]) -> list[Target]:
    mock_port = px.free_port()
    mock = px.start_nginx(procs, "nginx-mock", px.nginx_mock_block(mock_port))
    targets = [Target(DIRECT, mock_port, mock)]
    for name in names:
        port = px.free_port()
        scratch = scratches[name]
        spool = procs.workdir / f"{name}-spool"
        audit = json.dumps({"enabled": True, "database_url": scratch.url, "spool_dir": str(spool)})
        # The stream upstream is never called here; the mock's port stands in for it.
        config = px.guard_config(
            procs,
            name,
            port,
            mock_port=mock_port,
            sse_port=mock_port,
            audit=audit,
            telemetry=telemetry_section(name),
        )
        proc = px.start_guard(procs, name, "uvicorn", config, port)
        targets.append(Target(name, port, proc, scratch=scratch))
    body, expected = request_body(), px.MOCK_BODY.encode()
    for target in targets:
        px.wait_ready(target.proc, target.port, PATH, body, expect=expected, timeout_s=60.0)
        target.answered += 1  # the one POST that answered 200 (earlier tries found no socket)
    return targets


# -- load -------------------------------------------------------------------------------------


def _postgres_cpu() -> dict[int, float]:
    """CPU seconds of every live PostgreSQL server process, by pid."""
    cpu: dict[int, float] = {}
    for proc in psutil.process_iter(["name"]):
        if not (proc.info["name"] or "").startswith("postgres"):
            continue
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        cpu[proc.pid] = t.user + t.system
    return cpu


def _postgres_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """What the server used in between (processes that ended meanwhile are not counted;
    those that started count whole)."""
    return sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in after.items())


def _cpu_split(proc: px.Proc) -> tuple[float, float]:
    """CPU seconds of the guard process itself, and of its live children (the audit
    writer process, and multiprocessing's helper)."""
    own = rest = 0.0
    try:
        main = psutil.Process(proc.popen.pid)
        t = main.cpu_times()
        own = t.user + t.system
        children = main.children(recursive=True)
    except psutil.Error:
        return own, rest
    for child in children:
        try:
            t = child.cpu_times()
        except psutil.Error:
            continue
        rest += t.user + t.system
    return own, rest


def scrape(port: int) -> Scrape:
    """GET /metrics, as Prometheus does."""
    conn = http.client.HTTPConnection(px.LOOPBACK, port, timeout=_SCRAPE_TIMEOUT_S)
    started = time.perf_counter()
    try:
        conn.request("GET", "/metrics", headers={"accept": "text/plain"})
        reply = conn.getresponse()
        body = reply.read()
    except (OSError, http.client.HTTPException) as exc:
        ms = (time.perf_counter() - started) * 1000
        return Scrape(0, ms, 0, None, None, type(exc).__name__)
    finally:
        conn.close()
    ms = (time.perf_counter() - started) * 1000
    if reply.status != 200:
        return Scrape(reply.status, ms, len(body), None, None)
    requests, spans = _parse(body.decode(errors="replace"))
    return Scrape(reply.status, ms, len(body), requests, spans)


def _parse(text: str) -> tuple[float | None, float | None]:
    requests: float | None = None
    spans: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "guard_requests_total":
                requests = (requests or 0.0) + sample.value
            elif (
                sample.name == "guard_spans_exported_total"
                and sample.labels.get("exporter") == "database"
            ):
                spans = sample.value
    return requests, spans


class _Scraper(threading.Thread):
    """One scrape, ``delay_s`` into a wrk run."""

    def __init__(self, port: int, delay_s: float) -> None:
        super().__init__(name="metrics-scrape", daemon=True)
        self.port, self.delay_s = port, delay_s
        self.result: Scrape | None = None

    def run(self) -> None:
        time.sleep(self.delay_s)
        self.result = scrape(self.port)


def _measure(target: Target, connections: int, duration_s: float) -> Sample:
    guard = target.name != DIRECT
    scrapes = guard and ARMS[target.name][1]
    scraper = _Scraper(target.port, duration_s / 2) if scrapes else None
    before = _cpu_split(target.proc) if guard else (0.0, 0.0)
    pg_before = _postgres_cpu() if guard else {}
    if scraper is not None:
        scraper.start()
    sample = measure(target.port, connections, duration_s, 0.0, target.proc.cpu_seconds)
    if guard:
        after = _cpu_split(target.proc)
        pg = _postgres_delta(pg_before, _postgres_cpu())
        per_req = 1e6 / sample.requests if sample.requests else float("nan")
        target.serving_us.append((after[0] - before[0]) * per_req)
        target.writer_us.append((after[1] - before[1]) * per_req)
        target.postgres_us.append(pg * per_req)
    if scraper is not None:
        scraper.join(timeout=_SCRAPE_TIMEOUT_S + duration_s)
        target.scrapes.append(scraper.result or Scrape(0, 0.0, 0, None, None, "no result"))
    return sample


def run_load(
    targets: list[Target],
    *,
    connections: int,
    rounds: int,
    duration_s: float,
    warmup_s: float,
    log: Callable[[str], None],
) -> list[list[str]]:
    """Every target once per round, interleaved, the order rotated each round; returns
    each round's order."""
    total, done = rounds * len(targets), 0
    orders: list[list[str]] = []
    for rnd in range(rounds):
        shift = rnd % len(targets)
        order = targets[shift:] + targets[:shift]
        orders.append([t.name for t in order])
        for target in order:
            if not target.proc.alive():
                raise RuntimeError(f"{target.name} died:\n{target.proc.log_tail()}")
            if warmup_s > 0:
                _, summary = run_wrk(target.port, connections, warmup_s)
                target.answered += int(summary["requests"])
                target.wrk_runs += 1
            sample = _measure(target, connections, duration_s)
            target.answered += sample.requests
            target.wrk_runs += 1
            target.samples.append(sample)
            done += 1
            scraped = ""
            if target.name in ARMS and ARMS[target.name][1]:
                s = target.scrapes[-1]
                scraped = f"  /metrics {s.status} in {s.ms:.1f} ms" + (
                    f" ({s.error})" if s.error else ""
                )
            log(
                f"[{done}/{total}] round {rnd + 1} c={connections} {target.name:<14}"
                f"{sample.rps:>8.0f} req/s  p50 {sample.p50_ms:7.3f} ms  "
                f"p99 {sample.p99_ms:7.3f} ms  {sample.cpu_us_per_req:6.0f} us/req"
                + (
                    f" (guard {target.serving_us[-1]:.0f}, writer {target.writer_us[-1]:.0f}, "
                    f"PostgreSQL {target.postgres_us[-1]:.0f})"
                    if target.postgres_us
                    else ""
                )
                + (f"  ERRORS {sample.errors}" if sample.errors else "")
                + scraped
            )
    return orders


# -- what each arm wrote ----------------------------------------------------------------------


def count_spans(scratch: Scratch) -> tuple[int, int, int]:
    """Rows in spans, distinct trace ids, distinct event ids."""
    query = sa.text(
        "SELECT count(*), count(DISTINCT trace_id), count(DISTINCT event_id) FROM spans"
    )
    with scratch.engine.connect() as conn:
        rows, traces, events = conn.execute(query).one()
    return int(rows), int(traces), int(events)


def count_exchanges(scratch: Scratch) -> int:
    """Audit events that are exchanges (not policy loads or admin actions)."""
    query = sa.text("SELECT count(*) FROM audit_events WHERE kind = 'exchange'")
    with scratch.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def written(target: Target, connections: int) -> Written:
    if target.scratch is None:
        raise ValueError(f"{target.name} has no database")
    tally = lat.tally(target, connections, target.scratch)  # drains the recorder first
    exchanges = count_exchanges(target.scratch)
    spans, traces, traced = count_spans(target.scratch)
    return Written(target.name, tally, exchanges, spans, traces, traced, scrape(target.port))
