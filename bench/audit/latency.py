"""guard's latency with audit on vs off under load: wrk against guard instances that
differ only in their ``audit`` section, all in front of the same nginx mock upstream.

Targets (one uvicorn worker each, started and stopped here):
  direct        wrk -> the nginx mock (the floor every proxy adds to)
  audit-off     guard with ``audit: {enabled: false}``
  audit-pg      guard recording into the scratch PostgreSQL database
  audit-sqlite  guard recording into SQLite (guard's embedded default) in the temp dir

Cells run interleaved, the order rotating each round. Every request a guard with audit
on answers must end up as one row: after the load, each instance's recorder is drained
(its /readyz says nothing is queued), its counters read, and its rows counted.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.audit.scratch import Scratch
from bench.proxy_overhead import procs as px
from bench.proxy_overhead.load import PATH, Sample, measure, request_body, run_wrk

OFF, PG, SQLITE = "audit-off", "audit-pg", "audit-sqlite"
GUARDS = (OFF, PG, SQLITE)
_DRAIN_TIMEOUT_S = 60.0


@dataclass
class Target:
    name: str
    port: int
    proc: px.Proc
    sqlite_path: Path | None = None
    answered: int = 0  # requests wrk saw answered (warm-ups included) and readiness checks
    wrk_runs: int = 0
    samples: list[Sample] = field(default_factory=list)


@dataclass(frozen=True)
class Tally:
    """What one audit-on instance recorded, against what it answered."""

    name: str
    answered: int  # completed requests counted by wrk, plus the readiness check
    slack: int  # requests in flight when a wrk run stopped: answered, not counted by wrk
    rows: int
    rows_200: int
    written: int
    lost: int
    spooled: int
    queued: int

    @property
    def ok(self) -> bool:
        extra = self.rows - self.answered
        return (
            0 <= extra <= self.slack
            and self.written == self.rows
            and not self.lost
            and not self.queued
        )


def _audit_section(name: str, workdir: Path, scratch: Scratch) -> tuple[str, Path | None]:
    spool = workdir / f"{name}-spool"
    if name == OFF:
        return px.AUDIT_OFF, None
    if name == PG:
        return (
            json.dumps({"enabled": True, "database_url": scratch.url, "spool_dir": str(spool)}),
            None,
        )
    path = workdir / f"{name}.sqlite3"
    audit = {
        "enabled": True,
        "database_url": f"sqlite:///{path}",
        "spool_dir": str(spool),
        "auto_migrate": True,
    }
    return json.dumps(audit), path


def start(procs: px.Procs, names: Sequence[str], scratch: Scratch) -> list[Target]:
    mock_port = px.free_port()
    mock = px.start_nginx(procs, "nginx-mock", px.nginx_mock_block(mock_port))
    targets = [Target("direct", mock_port, mock)]
    for name in names:
        port = px.free_port()
        audit, sqlite_path = _audit_section(name, procs.workdir, scratch)
        # The stream upstream is never called here; the mock's port stands in for it.
        config = px.guard_config(
            procs, name, port, mock_port=mock_port, sse_port=mock_port, audit=audit
        )
        proc = px.start_guard(procs, name, "uvicorn", config, port)
        targets.append(Target(name, port, proc, sqlite_path))
    body, expected = request_body(), px.MOCK_BODY.encode()
    for target in targets:
        px.wait_ready(target.proc, target.port, PATH, body, expect=expected, timeout_s=60.0)
        target.answered += 1  # the one POST that answered 200 (earlier tries found no socket)
    return targets


def run_load(
    targets: list[Target],
    *,
    connections: int,
    rounds: int,
    duration_s: float,
    warmup_s: float,
    log: Callable[[str], None],
) -> None:
    """Every target once per round, interleaved, the order rotated each round."""
    total, done = rounds * len(targets), 0
    for rnd in range(rounds):
        shift = rnd % len(targets)
        for target in targets[shift:] + targets[:shift]:
            if not target.proc.alive():
                raise RuntimeError(f"{target.name} died:\n{target.proc.log_tail()}")
            if warmup_s > 0:
                _, summary = run_wrk(target.port, connections, warmup_s)
                target.answered += int(summary["requests"])
                target.wrk_runs += 1
            sample = measure(target.port, connections, duration_s, 0.0, target.proc.cpu_seconds)
            target.answered += sample.requests
            target.wrk_runs += 1
            target.samples.append(sample)
            done += 1
            log(
                f"[{done}/{total}] round {rnd + 1} c={connections} {target.name:<13}"
                f"{sample.rps:>8.0f} req/s  p50 {sample.p50_ms:7.3f} ms  "
                f"p99 {sample.p99_ms:7.3f} ms  {sample.cpu_us_per_req:6.0f} us/req"
                + (f"  ERRORS {sample.errors}" if sample.errors else "")
            )


def readyz_audit(port: int) -> dict[str, object]:
    conn = http.client.HTTPConnection(px.LOOPBACK, port, timeout=10.0)
    try:
        conn.request("GET", "/readyz")
        reply = conn.getresponse()
        body = json.loads(reply.read())
    finally:
        conn.close()
    audit: dict[str, object] = body.get("audit", {})
    return audit


def _drained(port: int) -> dict[str, object]:
    """The recorder's counters once it has nothing queued (or the timeout passed)."""
    deadline = time.monotonic() + _DRAIN_TIMEOUT_S
    audit = readyz_audit(port)
    while (audit.get("queued") or audit.get("spooled_bytes")) and time.monotonic() < deadline:
        time.sleep(0.1)
        audit = readyz_audit(port)
    return audit


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float | str) else 0


def tally(target: Target, connections: int, scratch: Scratch) -> Tally:
    audit = _drained(target.port)
    if target.sqlite_path is not None:
        with sqlite3.connect(target.sqlite_path) as db:
            rows = int(db.execute("SELECT count(*) FROM audit_events").fetchone()[0])
            rows_200 = int(
                db.execute("SELECT count(*) FROM audit_events WHERE status = 200").fetchone()[0]
            )
    else:
        rows, rows_200 = scratch.count(), scratch.count(status=200)
    return Tally(
        name=target.name,
        answered=target.answered,
        slack=target.wrk_runs * connections,
        rows=rows,
        rows_200=rows_200,
        written=_int(audit.get("written")),
        lost=_int(audit.get("lost")),
        spooled=_int(audit.get("spooled")),
        queued=_int(audit.get("queued")),
    )
