"""What tracing and metrics add to guard's latency at concurrency 16, the audit trail on.

    .venv/bin/python -m bench.telemetry            # 7 rounds x (1 s warm-up + 5 s), ~2.5 min
    .venv/bin/python -m bench.telemetry --quick    # a smoke run, under a minute
    .venv/bin/python -m bench.telemetry --split    # + traces-only and metrics-only, ~4 min

wrk against guard instances that differ only in their telemetry section, each recording
the audit trail into a scratch PostgreSQL database of its own (the same writer, settings
and schema), plus direct to the nginx mock as the reference:

  telemetry-off  traces: {exporters: []}, metrics: {enabled: false}
  telemetry-on   traces: {exporters: [database]}, metrics: {enabled: true}
  traces-only    traces: {exporters: [database]}, metrics: {enabled: false}   (--split)
  metrics-only   traces: {exporters: []}, metrics: {enabled: true}           (--split)

Cells run interleaved, the order rotating each round; every arm with metrics on has its
/metrics scraped once per round during load. Afterwards each arm's recorder is drained and
what it wrote is counted (audit events and spans in its database, /metrics), so that the
figure cannot come from an arm that traced nothing or one that traced too.

Needs PostgreSQL (trust auth; --pg-host/--pg-port/--pg-user), nginx and wrk (as
bench.proxy_overhead). The scratch databases and every process are gone when it ends.
The report goes to stdout, progress to stderr; the exit code is 0 unless the bench
itself could not run.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from bench.audit.scratch import Server, scratch_database
from bench.common import log as _log
from bench.common import on_sigterm as _on_sigterm
from bench.common import version as _v
from bench.proxy_overhead import procs as px
from bench.proxy_overhead.load import Cell, cell
from bench.telemetry import arms
from bench.telemetry.arms import ARMS, DIRECT, OFF, ON

FLOOR_P50_RATIO = 1.10  # telemetry-on p50 / telemetry-off p50, at c=16


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.telemetry", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 rounds of 2 s")
    parser.add_argument(
        "--rounds", type=int, default=None, help="interleaved wrk rounds per target (7; 3 quick)"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="measured seconds per wrk cell (5; 2 quick)"
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per wrk cell")
    parser.add_argument("--concurrency", type=int, default=16, help="wrk connections (16)")
    parser.add_argument(
        "--split",
        action="store_true",
        help="also run traces-only and metrics-only, to tell their costs apart",
    )
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--pg-admin-db", default="postgres", help="where CREATE/DROP DATABASE run")
    args = parser.parse_args(argv)
    args.rounds = max(1, args.rounds or (3 if args.quick else 7))
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    if args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    args.guards = [*arms.GUARDS, *(arms.SPLIT if args.split else ())]
    return args


# -- figures ----------------------------------------------------------------------------------


def _by(targets: list[arms.Target]) -> dict[str, arms.Target]:
    return {t.name: t for t in targets}


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f}%"


def paired_p50(targets: list[arms.Target], name: str) -> list[float]:
    """``name`` / telemetry-off p50, round by round."""
    by = _by(targets)
    return [
        _ratio(x.p50_ms, off.p50_ms)
        for x, off in zip(by[name].samples, by[OFF].samples, strict=True)
    ]


def paired_added(targets: list[arms.Target], name: str) -> list[float]:
    """(``name`` - direct) / (telemetry-off - direct) p50, round by round."""
    by = _by(targets)
    rounds = zip(by[name].samples, by[OFF].samples, by[DIRECT].samples, strict=True)
    return [_ratio(x.p50_ms - d.p50_ms, off.p50_ms - d.p50_ms) for x, off, d in rounds]


# -- report -----------------------------------------------------------------------------------


def header(args: argparse.Namespace, pg_version: str) -> list[str]:
    return [
        "# guard telemetry cost",
        "",
        f"- machine: {os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}; PostgreSQL {pg_version} on {args.pg_host}:{args.pg_port}",
        f"- guard {_v('guard')}, prometheus-client {_v('prometheus-client')}, "
        f"opentelemetry-sdk {_v('opentelemetry-sdk')}, sqlalchemy {_v('sqlalchemy')}, "
        f"psycopg {_v('psycopg')}, uvicorn {_v('uvicorn')}",
        "",
    ]


def latency_section(
    targets: list[arms.Target], orders: list[list[str]], args: argparse.Namespace
) -> list[str]:
    cells = {t.name: cell(t.samples) for t in targets}
    direct, off = cells[DIRECT], cells[OFF]
    med = statistics.median
    lines = [
        f"## Latency at c={args.concurrency}, telemetry on vs off (audit into PostgreSQL in all)",
        "",
        f"wrk -t2 -c{args.concurrency}, {args.warmup:g} s warm-up + {args.duration:g} s per "
        f"cell, {args.rounds} interleaved round(s), the order rotating; medians shown. One "
        "uvicorn worker per guard, all in front of the same nginx mock, each recording into "
        "a scratch PostgreSQL database of its own.",
        "",
        "| target | req/s | req/s min-max | p50 ms | p50 min-max | +p50 over direct | p99 ms "
        "| p50 / off | CPU µs/req guard | writer | PostgreSQL |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for t in targets:
        x = cells[t.name]
        err = f" ⚠ {x.errors} errors" if x.errors else ""
        if t.name == DIRECT:
            added = ratio = writer = postgres = "—"
            serving = f"{x.cpu_us:,.0f} (nginx)"
        else:
            added = f"{x.p50_ms - direct.p50_ms:+.3f}"
            ratio = f"{_ratio(x.p50_ms, off.p50_ms):.3f}"
            serving = f"{med(t.serving_us):,.0f}"
            writer = f"{med(t.writer_us):,.0f}"
            postgres = f"{med(t.postgres_us):,.0f}"
        lines.append(
            f"| {t.name}{err} | {x.rps:,.0f} | {x.rps_min:,.0f}-{x.rps_max:,.0f} "
            f"| {x.p50_ms:.3f} | {x.p50_min:.3f}-{x.p50_max:.3f} | {added} | {x.p99_ms:.3f} "
            f"| {ratio} | {serving} | {writer} | {postgres} |"
        )
    lines += [
        "",
        "CPU µs/req (medians over rounds): *guard* is the serving process (metrics are "
        "observed there), *writer* its child processes (the audit writer, where traces are "
        "built and written), *PostgreSQL* every server process while that cell ran (only "
        "that arm was writing).",
        "",
        *_ratios(cells, targets),
        "",
        "Round by round (p50 ms; the order each round ran in):",
        "",
    ]
    guards = [t.name for t in targets if t.name != DIRECT]
    short = {n: n.removeprefix("telemetry-") for n in (DIRECT, *guards)}
    lines += [
        "| round | order | " + " | ".join(short[n] for n in (DIRECT, *guards)) + " | on / off "
        "| added on / added off |",
        "|--:|---|" + "--:|" * (len(guards) + 3),
    ]
    by = _by(targets)
    ratios, added_ratios = paired_p50(targets, ON), paired_added(targets, ON)
    for i, order in enumerate(orders):
        p50s = " | ".join(f"{by[n].samples[i].p50_ms:.3f}" for n in (DIRECT, *guards))
        lines.append(
            f"| {i + 1} | {' → '.join(short[n] for n in order)} | {p50s} | {ratios[i]:.3f} "
            f"| {added_ratios[i]:.3f} |"
        )
    lines.append("")
    return lines


def _ratios(cells: dict[str, Cell], targets: list[arms.Target]) -> list[str]:
    direct, off = cells[DIRECT], cells[OFF]
    add_off = off.p50_ms - direct.p50_ms
    lines = []
    for name in (t.name for t in targets if t.name not in (DIRECT, OFF)):
        x = cells[name]
        add = x.p50_ms - direct.p50_ms
        lines += [
            f"- {name}: guard's p50 / off: {x.p50_ms:.3f} / {off.p50_ms:.3f} ms = "
            f"**{_ratio(x.p50_ms, off.p50_ms):.3f}x** (median of per-round ratios "
            f"{statistics.median(paired_p50(targets, name)):.3f}x), "
            f"{x.p50_ms - off.p50_ms:+.3f} ms; added p50 over direct / off's: {add:.3f} / "
            f"{add_off:.3f} ms = **{_ratio(add, add_off):.3f}x** (per-round median "
            f"{statistics.median(paired_added(targets, name)):.3f}x); req/s {x.rps:,.0f} vs "
            f"{off.rps:,.0f} ({_pct(_ratio(x.rps, off.rps))})",
        ]
    return lines


def scrape_section(targets: list[arms.Target]) -> list[str]:
    lines = [
        "## /metrics scrapes (one per round per arm with metrics, halfway through the "
        "measured run)",
        "",
        "| arm | round | status | ms | bytes | guard_requests_total | spans exported (database) |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for t in targets:
        for i, s in enumerate(t.scrapes):
            status = str(s.status) if s.status else f"no answer ({s.error})"
            lines.append(
                f"| {t.name} | {i + 1} | {status} | {s.ms:.1f} | {s.size:,} "
                f"| {_num(s.requests_total)} | {_num(s.spans_exported)} |"
            )
    lines.append("")
    return lines


def _num(value: float | None) -> str:
    return "absent" if value is None else f"{value:,.0f}"


def written_section(written: list[arms.Written], args: argparse.Namespace) -> list[str]:
    lines = [
        "## What each arm wrote (after the load; recorders drained)",
        "",
        "| arm | requests answered | audit events | of them exchanges | spans | traces "
        "| exchanges traced | spans / exchange | GET /metrics | guard_requests_total "
        "| spans exported (metric) | recorder lost | ok |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|",
    ]
    for w in written:
        per = f"{w.spans / w.exchanges:.2f}" if w.exchanges else "—"
        lines.append(
            f"| {w.name} | {w.tally.answered:,} | {w.tally.rows:,} | {w.exchanges:,} "
            f"| {w.spans:,} | {w.traces:,} | {w.traced_events:,} | {per} "
            f"| {w.metrics.status or 'no answer'} | {_num(w.metrics.requests_total)} "
            f"| {_num(w.metrics.spans_exported)} | {w.tally.lost} | {'yes' if w.ok else 'NO'} |"
        )
    lines += [
        "",
        "Requests answered: completed requests wrk counted (warm-ups included) plus the "
        f"readiness check; up to {args.concurrency} more per wrk run were in flight when wrk "
        "stopped and are stored too. Audit events also hold the policy bundle's load "
        "(kind policy), which is neither traced nor counted by /metrics. ok: with traces, "
        "one trace per stored exchange, without, no span at all; with metrics, /metrics "
        "counting exactly the stored exchanges and spans, without, /metrics 404.",
        "",
    ]
    return lines


def _written_text(w: arms.Written) -> str:
    traced, metered = ARMS[w.name]
    if traced:
        spans = f"{w.spans:,} spans, {w.traces:,} traces for {w.exchanges:,} exchanges stored"
    else:
        spans = f"no spans: {w.spans:,} for {w.exchanges:,} exchanges stored"
    if metered:
        metrics = (
            f"/metrics {w.metrics.status}, guard_requests_total "
            f"{_num(w.metrics.requests_total)}, spans exported {_num(w.metrics.spans_exported)}"
        )
    else:
        metrics = f"/metrics {w.metrics.status or 'no answer'} (off)"
    return f"{w.name} wrote {spans}; {metrics}"


def summary(
    targets: list[arms.Target], written: list[arms.Written], args: argparse.Namespace
) -> list[str]:
    def line(ok: bool, text: str) -> str:
        return f"  [{'PASS' if ok else 'FAIL'}] {text}"

    cells = {t.name: cell(t.samples) for t in targets}
    direct, off, on = cells[DIRECT], cells[OFF], cells[ON]
    ratio = _ratio(on.p50_ms, off.p50_ms)
    add_off, add_on = off.p50_ms - direct.p50_ms, on.p50_ms - direct.p50_ms
    out = [
        "## Summary",
        "",
        "```",
        line(
            ratio < FLOOR_P50_RATIO,
            f"tracing+metrics add < {(FLOOR_P50_RATIO - 1) * 100:.0f}% to guard's p50 at "
            f"c={args.concurrency}: {_pct(ratio)} ({on.p50_ms:.3f} vs {off.p50_ms:.3f} ms; "
            f"median of per-round ratios {_pct(statistics.median(paired_p50(targets, ON)))})",
        ),
        f"  [info] added p50 over direct: on {add_on:.3f} ms vs off {add_off:.3f} ms = "
        f"{_ratio(add_on, add_off):.3f}x (per-round median "
        f"{statistics.median(paired_added(targets, ON)):.3f}x); req/s on {on.rps:,.0f} vs off "
        f"{off.rps:,.0f} ({_pct(_ratio(on.rps, off.rps))}); direct p50 {direct.p50_ms:.3f} ms",
    ]
    for name in (n for n in arms.SPLIT if n in cells):
        x = cells[name]
        out.append(
            f"  [info] {name} p50 vs off: {_pct(_ratio(x.p50_ms, off.p50_ms))} "
            f"({x.p50_ms:.3f} vs {off.p50_ms:.3f} ms; per-round median "
            f"{_pct(statistics.median(paired_p50(targets, name)))})"
        )
    for t in targets:
        if t.name == DIRECT or not ARMS[t.name][1]:
            continue
        good = [s for s in t.scrapes if s.status == 200 and s.requests_total]
        out.append(
            line(
                len(good) == len(t.scrapes) > 0,
                f"{t.name}: /metrics served guard_requests_total during load in "
                f"{len(good)}/{len(t.scrapes)} scrape(s) "
                f"(median {statistics.median(s.ms for s in t.scrapes):.1f} ms)",
            )
        )
    out.extend(line(w.ok, _written_text(w)) for w in written)
    out.extend(
        line(
            w.tally.ok,
            f"{w.name}: every answered request stored once: {w.tally.rows:,} events for "
            f"{w.tally.answered:,} requests answered (+{w.tally.rows - w.tally.answered} in "
            f"flight at wrk's stops, at most {w.tally.slack}), lost {w.tally.lost}",
        )
        for w in written
    )
    errors = sum(c.errors for c in cells.values())
    if errors:
        out.append(line(False, f"wrk saw {errors} error(s)"))
    out.append("```")
    return out


# -- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    px.system_bin("nginx")
    px.system_bin("wrk")
    server = Server(args.pg_host, args.pg_port, args.pg_user, args.pg_admin_db)
    started = time.monotonic()
    targets: list[arms.Target] = []
    written: list[arms.Written] = []
    orders: list[list[str]] = []
    try:
        with ExitStack() as stack:
            scratches = {n: stack.enter_context(scratch_database(server)) for n in args.guards}
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="guard-bench-telemetry-"))
            _log("scratch databases " + ", ".join(f"{n}: {s.name}" for n, s in scratches.items()))
            pg_version = scratches[OFF].server_version()
            procs = px.Procs(Path(tmp))
            try:
                targets = arms.start(procs, args.guards, scratches)
                _log("ready: " + ", ".join(f"{t.name}@{t.port}" for t in targets))
                orders = arms.run_load(
                    targets,
                    connections=args.concurrency,
                    rounds=args.rounds,
                    duration_s=args.duration,
                    warmup_s=args.warmup,
                    log=_log,
                )
                written = [arms.written(t, args.concurrency) for t in targets if t.name in ARMS]
            finally:
                procs.stop_all()
    except KeyboardInterrupt:
        _log("interrupted; stopping everything")
        return 130
    report = [*header(args, pg_version)]
    report += latency_section(targets, orders, args)
    report += scrape_section(targets)
    report += written_section(written, args)
    report += summary(targets, written, args)
    report += ["", f"(bench wall time {time.monotonic() - started:.0f} s)"]
    print("\n".join(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
