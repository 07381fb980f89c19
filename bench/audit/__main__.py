"""What guard's audit trail costs: recorder throughput into PostgreSQL, and the latency
guard adds with audit on vs off.

    .venv/bin/python -m bench.audit            # full: 3 x 20,000 events per feed, 5 rounds x 5 s
    .venv/bin/python -m bench.audit --quick    # a smoke run, about a minute

1. Recorder throughput: guard's AuditRecorder on guard's AuditRepository, writing into a
   scratch PostgreSQL database; every event enqueued up front, timed from the first
   enqueue until all are committed. Feeds: ready AuditEvents (required) and finished
   Exchanges (the writer also builds the events, as in the proxy).
2. Latency at concurrency 16: wrk against guard with audit off, audit into PostgreSQL and
   audit into SQLite, interleaved, in front of the same nginx mock; then every answered
   request is checked to be one stored event.

Needs PostgreSQL (trust auth; --pg-host/--pg-port/--pg-user), nginx and wrk (as
bench.proxy_overhead). The scratch database and every process are gone when it ends.
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
from pathlib import Path

from bench.audit import latency as lat
from bench.audit import rate
from bench.audit.scratch import Server, scratch_database
from bench.common import log as _log
from bench.common import on_sigterm as _on_sigterm
from bench.common import version as _v
from bench.proxy_overhead import procs as px
from bench.proxy_overhead.load import cell

FLOOR_EVENTS_PER_S = 5_000.0
FLOOR_P50_RATIO = 1.10  # audit on p50 / audit off p50, at c=16
FEEDS = ("event", "exchange")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.audit", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 x 5,000 events per feed; 3 latency rounds of 2 s",
    )
    parser.add_argument("--events", type=int, default=None, help="events per round (20,000)")
    parser.add_argument("--rounds", type=int, default=None, help="recorder rounds per feed (3)")
    parser.add_argument(
        "--feeds", nargs="+", choices=FEEDS, default=list(FEEDS), help="recorder feeds to run"
    )
    parser.add_argument(
        "--latency-rounds", type=int, default=None, help="interleaved wrk rounds per target (5)"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="measured seconds per wrk cell (5; 2 quick)"
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per wrk cell")
    parser.add_argument("--concurrency", type=int, default=16, help="wrk connections (16)")
    parser.add_argument(
        "--targets",
        nargs="+",
        choices=lat.GUARDS,
        default=list(lat.GUARDS),
        help="guard instances for the latency part (direct always runs)",
    )
    parser.add_argument(
        "--skip", choices=("rate", "latency"), default=None, help="leave one part out"
    )
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--pg-admin-db", default="postgres", help="where CREATE/DROP DATABASE run")
    args = parser.parse_args(argv)
    quick = args.quick
    args.events = max(1, args.events or (5_000 if quick else 20_000))
    args.rounds = max(1, args.rounds or (2 if quick else 3))
    args.latency_rounds = max(1, args.latency_rounds or (3 if quick else 5))
    args.duration = args.duration or (2.0 if quick else 5.0)
    args.warmup_events = min(2_000, args.events)
    if args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    if lat.OFF not in args.targets:
        args.targets.insert(0, lat.OFF)  # the baseline every ratio is taken against
    return args


# -- report -----------------------------------------------------------------------------------


def header(args: argparse.Namespace, pg_version: str) -> list[str]:
    return [
        "# guard audit trail cost",
        "",
        f"- machine: {os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}; PostgreSQL {pg_version} on {args.pg_host}:{args.pg_port}",
        f"- guard {_v('guard')}, sqlalchemy {_v('sqlalchemy')}, psycopg {_v('psycopg')}, "
        f"uvicorn {_v('uvicorn')}",
        "",
    ]


def rate_section(results: dict[str, list[rate.Round]], args: argparse.Namespace) -> list[str]:
    lines = [
        "## Recorder throughput into PostgreSQL",
        "",
        f"{args.rounds} round(s) of {args.events:,} events per feed (after a "
        f"{args.warmup_events:,}-event warm-up), all enqueued up front; timed from the first "
        "enqueue until every event is committed. Each event: 3 finding types, 1 rule hit, "
        "2 request texts and 1 answer of ~200 chars, latencies, usage.",
        "",
        "| feed | events/s (median) | rounds events/s | written = rows = events | lost |",
        "|---|--:|--:|:-:|--:|",
    ]
    for feed, rounds in results.items():
        each = ", ".join(f"{r.rate:,.0f}" for r in rounds)
        ok = all(r.ok for r in rounds)
        lines.append(
            f"| {feed} | {rate.median_rate(rounds):,.0f} | {each} | {'yes' if ok else 'NO'} "
            f"| {sum(r.lost for r in rounds)} |"
        )
    early = [r for rs in results.values() for r in rs if r.written_at_flush < r.written]
    if early:
        lines += [
            "",
            f"⚠ recorder.flush() returned before every event was committed in {len(early)} "
            "round(s) (written at its return: "
            + ", ".join(f"{r.written_at_flush:,}/{r.events:,}" for r in early)
            + "); the figures above wait for the commit.",
        ]
    lines += [
        "",
        "feed 'event': ready AuditEvents; 'exchange': the ExchangeRecords the proxy hands "
        "its writer process, from which the recorder also builds each event.",
        "",
    ]
    return lines


def latency_section(
    targets: list[lat.Target], tallies: list[lat.Tally], args: argparse.Namespace
) -> list[str]:
    cells = {t.name: cell(t.samples) for t in targets}
    direct = cells["direct"]
    lines = [
        f"## Latency at c={args.concurrency}, audit on vs off",
        "",
        f"wrk -t2 -c{args.concurrency}, {args.warmup:g} s warm-up + {args.duration:g} s per "
        f"cell, {args.latency_rounds} interleaved round(s), medians shown; one uvicorn worker "
        "per guard, all in front of the same nginx mock.",
        "",
        "| target | req/s | req/s min-max | p50 ms | p50 min-max | +p50 over direct | p99 ms "
        "| p50 / audit-off | CPU µs/req |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    off = cells[lat.OFF]
    for t in targets:
        x = cells[t.name]
        err = f" ⚠ {x.errors} errors" if x.errors else ""
        added = "—" if t.name == "direct" else f"{x.p50_ms - direct.p50_ms:+.3f}"
        ratio = "—" if t.name == "direct" else f"{x.p50_ms / off.p50_ms:.3f}"
        lines.append(
            f"| {t.name}{err} | {x.rps:,.0f} | {x.rps_min:,.0f}-{x.rps_max:,.0f} "
            f"| {x.p50_ms:.3f} | {x.p50_min:.3f}-{x.p50_max:.3f} | {added} | {x.p99_ms:.3f} "
            f"| {ratio} | {x.cpu_us:,.0f} |"
        )
    lines += [
        "",
        "CPU µs/req: the guard process and its audit writer process (not the database server).",
        "",
        "Every answered request stored as one event (after the load; recorder drained):",
        "",
        "| instance | requests answered | events in the database | of them status 200 "
        "| recorder written | lost | ok |",
        "|---|--:|--:|--:|--:|--:|:-:|",
    ]
    for tl in tallies:
        lines.append(
            f"| {tl.name} | {tl.answered:,} | {tl.rows:,} | {tl.rows_200:,} | {tl.written:,} "
            f"| {tl.lost} | {'yes' if tl.ok else 'NO'} |"
        )
    lines += [
        "",
        "Requests answered: completed requests wrk counted (warm-ups included) plus the "
        f"readiness check. Up to {args.concurrency} more per wrk run may be stored: requests "
        "still in flight when wrk stopped, which guard answered and recorded but wrk no "
        "longer counted.",
        "",
    ]
    return lines


def _paired_ratios(targets: list[lat.Target], name: str) -> list[float]:
    by = {t.name: t for t in targets}
    return [
        on.p50_ms / off.p50_ms
        for on, off in zip(by[name].samples, by[lat.OFF].samples, strict=True)
        if off.p50_ms
    ]


def summary(
    rates: dict[str, list[rate.Round]],
    targets: list[lat.Target],
    tallies: list[lat.Tally],
    args: argparse.Namespace,
) -> list[str]:
    def line(ok: bool, text: str) -> str:
        return f"  [{'PASS' if ok else 'FAIL'}] {text}"

    out = ["## Summary", "", "```"]
    if rates:
        for feed, rounds in rates.items():
            med = rate.median_rate(rounds)
            each = ", ".join(f"{r.rate:,.0f}" for r in rounds)
            text = (
                f"recorder [{feed}] events/s into PostgreSQL >= {FLOOR_EVENTS_PER_S:,.0f}: "
                f"{med:,.0f} (median; rounds {each})"
            )
            if feed == "event":
                out.append(line(med >= FLOOR_EVENTS_PER_S, text))
            else:
                out.append(f"  [info] {text}")
            if not all(r.ok for r in rounds):
                out.append(line(False, f"recorder [{feed}]: written = rows = events, none lost"))
    else:
        out.append("  [SKIP] recorder throughput (--skip rate)")
    if targets:
        cells = {t.name: cell(t.samples) for t in targets}
        off = cells[lat.OFF]
        for name in (n for n in (lat.PG, lat.SQLITE) if n in cells):
            on = cells[name]
            ratio = on.p50_ms / off.p50_ms
            paired = statistics.median(_paired_ratios(targets, name))
            text = (
                f"{name} p50 at c={args.concurrency} < {FLOOR_P50_RATIO:.2f}x audit-off: "
                f"{on.p50_ms:.3f} vs {off.p50_ms:.3f} ms = {ratio:.3f}x "
                f"(median of per-round ratios {paired:.3f}x); "
                f"req/s {on.rps:,.0f} vs {off.rps:,.0f} ({(on.rps / off.rps - 1) * 100:+.1f}%)"
            )
            if name == lat.PG:
                out.append(line(ratio < FLOOR_P50_RATIO, text))
            else:
                out.append(f"  [info] {text}")
        out.extend(
            line(
                tl.ok,
                f"{tl.name}: every answered request stored once: {tl.rows:,} events for "
                f"{tl.answered:,} requests answered (+{tl.rows - tl.answered} in flight at "
                f"wrk's stops, at most {tl.slack}), lost {tl.lost}",
            )
            for tl in tallies
        )
    else:
        out.append("  [SKIP] latency (--skip latency)")
    out.append("```")
    return out


# -- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if args.skip != "latency":  # fail now, not after the recorder part
        px.system_bin("nginx")
        px.system_bin("wrk")
    server = Server(args.pg_host, args.pg_port, args.pg_user, args.pg_admin_db)
    started = time.monotonic()
    rates: dict[str, list[rate.Round]] = {}
    targets: list[lat.Target] = []
    tallies: list[lat.Tally] = []
    try:
        with (
            scratch_database(server) as scratch,
            tempfile.TemporaryDirectory(prefix="guard-bench-audit-") as tmp,
        ):
            _log(f"scratch database {scratch.name}")
            pg_version = scratch.server_version()
            if args.skip != "rate":
                for feed in args.feeds:
                    rates[feed] = rate.run_feed(
                        scratch,
                        feed,
                        rounds=args.rounds,
                        events=args.events,
                        warmup=args.warmup_events,
                        timeout_s=max(60.0, args.events / 500),
                        log=_log,
                    )
            if args.skip != "latency":
                scratch.empty()
                procs = px.Procs(Path(tmp))
                try:
                    targets = lat.start(procs, args.targets, scratch)
                    _log("ready: " + ", ".join(f"{t.name}@{t.port}" for t in targets))
                    lat.run_load(
                        targets,
                        connections=args.concurrency,
                        rounds=args.latency_rounds,
                        duration_s=args.duration,
                        warmup_s=args.warmup,
                        log=_log,
                    )
                    tallies = [
                        lat.tally(t, args.concurrency, scratch)
                        for t in targets
                        if t.name in (lat.PG, lat.SQLITE)
                    ]
                finally:
                    procs.stop_all()
    except KeyboardInterrupt:
        _log("interrupted; stopping everything")
        return 130
    report = [*header(args, pg_version)]
    if rates:
        report += rate_section(rates, args)
    if targets:
        report += latency_section(targets, tallies, args)
    report += summary(rates, targets, tallies, args)
    report += ["", f"(bench wall time {time.monotonic() - started:.0f} s)"]
    print("\n".join(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
