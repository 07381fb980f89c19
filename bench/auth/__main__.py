"""What API keys and limits add to guard's latency, with the counters in memory and in Redis.

    .venv/bin/python -m bench.auth              # 5 rounds of 1 s warm-up + 3 s cells, ~4 min
    .venv/bin/python -m bench.auth --quick      # a smoke run: 2 rounds of 1 s cells, ~1 min

wrk (bench.proxy_overhead's request, with an Authorization header) at c=16 and c=1 against
guard arms that differ only in their auth, tenants and limits sections (``arms.py``): open
(no keys, no limits), keys (a settings key and tenant, limits counted in memory), redis (the
same, counted in Redis), open-audit and keys-db (the audit trail on in both, since the key
store is the audit database; keys-db with a key made by ``guard keys create``). Rounds are
interleaved; each arm runs next to its baseline, the order reversed every other round.
The figure: the p50 keys adds over open at c=16, the median of the rounds' differences.

Needs nginx and wrk (as bench.proxy_overhead) and a Redis server (--redis-url). The report
goes to stdout, progress to stderr; the exit code is 0 unless the bench could not run
(1 when an arm answered anything but 200: its figures would be wrong).
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

from bench.auth import arms
from bench.auth.arms import KEYS, KEYS_DB, OPEN, OPEN_AUDIT, REDIS, Target
from bench.auth.rounds import Counted, RedisServer, run_rounds
from bench.common import log as _log
from bench.common import on_sigterm as _on_sigterm
from bench.common import version as _v
from bench.proxy_overhead import procs as px
from bench.proxy_overhead.load import cell

FLOOR_MS = 0.2  # p50 added by keys over open at c=16
FLOOR_C = 16


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.auth", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of 1 s cells")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (5; 2 quick)")
    parser.add_argument(
        "--duration", type=float, default=None, help="measured seconds per wrk cell (3; 1 quick)"
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per wrk cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[FLOOR_C, 1])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="for the redis arm")
    args = parser.parse_args(argv)
    args.rounds = max(1, args.rounds or (2 if args.quick else 5))
    args.duration = args.duration or (1.0 if args.quick else 3.0)
    if any(c < 1 for c in args.concurrency):
        parser.error("--concurrency values must be >= 1")
    return args


# -- figures ----------------------------------------------------------------------------------


def diffs(by: dict[str, Target], name: str, base: str, c: int) -> list[float]:
    """``name``'s p50 minus ``base``'s, round by round (ms)."""
    pairs = zip(by[name].samples[c], by[base].samples[c], strict=True)
    return [x.p50_ms - b.p50_ms for x, b in pairs]


def added(by: dict[str, Target], name: str, base: str, c: int) -> float:
    return statistics.median(diffs(by, name, base, c))


# -- report -----------------------------------------------------------------------------------


def header(args: argparse.Namespace, redis_version: str) -> list[str]:
    return [
        "# guard auth and limits cost",
        "",
        f"- machine: {os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}; Redis {redis_version} at {args.redis_url}",
        f"- guard {_v('guard')}, litestar {_v('litestar')}, uvicorn {_v('uvicorn')}, "
        f"uvloop {_v('uvloop')}, redis-py {_v('redis')}",
        f"- load: wrk -t2 (-t1 at c=1), {args.warmup:g} s warm-up + {args.duration:g} s per "
        f"cell, {args.rounds} interleaved round(s), medians over rounds shown; one uvicorn "
        "worker per guard, audit (except open-audit, keys-db) and telemetry off, an empty "
        "policy bundle, all in front of the same nginx mock",
        "",
    ]


def arms_section(targets: list[Target]) -> list[str]:
    lines = [
        "## Arms, checked before the load",
        "",
        "| arm | key | limits counted | audit | baseline | its key | no key | a wrong key |",
        "|---|---|---|---|---|--:|--:|--:|",
    ]
    for t in targets:
        a = t.arm
        counted = "—" if a.key == "none" else ("Redis" if a.redis else "memory")
        statuses = " | ".join(str(c.status) for c in t.checks)
        lines.append(
            f"| {a.name} | {a.key} | {counted} | {'SQLite' if a.audit else 'off'} "
            f"| {a.baseline or '—'} | {statuses} |"
        )
    lines += [
        "",
        f"Limits (key and tenant alike): {arms.LIMITS}, never reached. Every request carries "
        "`Authorization: Bearer <key>`: keys-db's a `gk_` key from `guard keys create`, the "
        "others the settings key (which open and open-audit do not know and let pass). "
        "*A wrong key*: another value; for keys-db its key id with another secret.",
        "",
    ]
    return lines


def load_section(targets: list[Target], concurrencies: Sequence[int]) -> list[str]:
    by = {t.name: t for t in targets}
    lines = [
        "## Load",
        "",
        "| arm | c | req/s | req/s min-max | p50 ms | p99 ms | vs | +p50 ms | +p50 min-max "
        "| guard CPU µs/req | +CPU µs/req | Redis CPU µs/req |",
        "|---|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|",
    ]
    for c in concurrencies:
        for t in targets:
            x, base = cell(t.samples[c]), t.arm.baseline
            redis_us = statistics.median(t.redis_us[c])
            if base is None:
                vs = plus = spread = plus_cpu = "—"
            else:
                d = diffs(by, t.name, base, c)
                vs, plus = base, f"**{statistics.median(d):+.3f}**"
                spread = f"{min(d):+.3f} … {max(d):+.3f}"
                plus_cpu = f"{x.cpu_us - cell(by[base].samples[c]).cpu_us:+,.0f}"
            lines.append(
                f"| {t.name} | {c} | {x.rps:,.0f} | {x.rps_min:,.0f}-{x.rps_max:,.0f} "
                f"| {x.p50_ms:.3f} | {x.p99_ms:.3f} | {vs} | {plus} | {spread} "
                f"| {x.cpu_us:,.0f} | {plus_cpu} | {redis_us:,.1f} |"
            )
    lines += [
        "",
        "+p50: the median over rounds of (arm p50 - baseline p50) in the same round and "
        "concurrency; keys, redis and keys-db ran right before or after their baseline "
        "(open-audit did not: it is there as keys-db's baseline, its figure is the audit "
        "trail's cost). Guard CPU: guard's process and its children (the audit writer) over "
        "the measured run / requests (bench.proxy_overhead's accounting); +CPU: minus the "
        "baseline's. Redis CPU: the Redis server's (INFO cpu) over the same run / requests.",
        "",
    ]
    return lines


def rounds_section(targets: list[Target], orders: list[list[str]], c: int) -> list[str]:
    by = {t.name: t for t in targets}
    names = [t.name for t in targets]
    lines = [
        f"Round by round at c={c} (p50 ms; the order the arms ran in):",
        "",
        "| round | order | " + " | ".join(names) + " | keys - open | redis - keys |",
        "|--:|---|" + "--:|" * (len(names) + 2),
    ]
    keys_open, redis_keys = diffs(by, KEYS, OPEN, c), diffs(by, REDIS, KEYS, c)
    for i, order in enumerate(orders):
        p50s = " | ".join(f"{by[n].samples[c][i].p50_ms:.3f}" for n in names)
        lines.append(
            f"| {i + 1} | {' → '.join(order)} | {p50s} | {keys_open[i]:+.3f} "
            f"| {redis_keys[i]:+.3f} |"
        )
    lines.append("")
    return lines


def summary(targets: list[Target], counted: Counted, concurrencies: Sequence[int]) -> list[str]:
    by = {t.name: t for t in targets}
    out = ["## Summary", "", "```"]
    if FLOOR_C in concurrencies:
        x = added(by, KEYS, OPEN, FLOOR_C)
        result = "PASS" if x < FLOOR_MS else "FAIL"
        out += [
            f"  auth + in-memory limits add {x:.3f} ms p50 at c={FLOOR_C} "
            f"(floor: < {FLOOR_MS:g} ms): {result}",
            f"  [info] Redis counter adds {added(by, REDIS, KEYS, FLOOR_C):.3f} ms p50 at "
            f"c={FLOOR_C} over in-memory",
        ]
    for c in concurrencies:
        out.append(
            f"  [info] c={c}: added p50 keys {added(by, KEYS, OPEN, c):+.3f} ms, redis "
            f"{added(by, REDIS, OPEN, c):+.3f} ms over open; keys-db "
            f"{added(by, KEYS_DB, OPEN_AUDIT, c):+.3f} ms over open-audit (audit itself "
            f"{added(by, OPEN_AUDIT, OPEN, c):+.3f} ms over open)"
        )
    out += _cpu_lines(by, concurrencies)
    requests = sum(t.answered for t in targets)
    out.append(
        f"  [PASS] every arm answered 200 to every request: {requests:,} requests, "
        "no non-2xx answer or socket error counted by wrk"
    )
    tail = "; another client used this Redis meanwhile" if counted.others else ""
    out.append(
        f"  [{'PASS' if counted.ok else 'FAIL'}] the redis arm checked its limits in Redis "
        f"on every request: {counted.scripts:,} scripts run for {counted.answered:,} "
        f"requests answered (+ up to {counted.slack:,} in flight at wrk's stops){tail}"
    )
    out.append("```")
    return out


def _cpu_lines(by: dict[str, Target], concurrencies: Sequence[int]) -> list[str]:
    """Guard's CPU per request over open: the steadier figure behind the added p50."""

    def cpu(name: str, c: int) -> float:
        return cell(by[name].samples[c]).cpu_us

    out = []
    for c in concurrencies:
        keys, redis = cpu(KEYS, c) - cpu(OPEN, c), cpu(REDIS, c) - cpu(OPEN, c)
        in_redis = statistics.median(by[REDIS].redis_us[c])
        out.append(
            f"  [info] c={c}: guard CPU per request over open: keys {keys:+.0f} µs (x{c} "
            f"requests in flight = {keys * c / 1000:+.3f} ms), redis {redis:+.0f} µs "
            f"(+ {in_redis:.0f} µs in the Redis server)"
        )
    return out


# -- main -------------------------------------------------------------------------------------


def run(
    args: argparse.Namespace, server: RedisServer
) -> tuple[list[Target], list[list[str]], Counted]:
    scripts_before = server.scripts_run()
    with tempfile.TemporaryDirectory(prefix="guard-bench-auth-") as tmp:
        procs = px.Procs(Path(tmp))
        try:
            targets = arms.start(procs, args.redis_url)
            _log("ready: " + ", ".join(f"{t.name}@{t.port}" for t in targets))
            orders = run_rounds(
                targets,
                args.concurrency,
                rounds=args.rounds,
                duration_s=args.duration,
                warmup_s=args.warmup,
                server=server,
                log=_log,
            )
        finally:
            procs.stop_all()
    redis_arm = next(t for t in targets if t.name == REDIS)
    counted = Counted(server.scripts_run() - scripts_before, redis_arm.answered, redis_arm.slack)
    return targets, orders, counted


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    px.system_bin("nginx")
    px.system_bin("wrk")
    server = RedisServer(args.redis_url)
    redis_version = server.version()
    started = time.monotonic()
    try:
        targets, orders, counted = run(args, server)
    except KeyboardInterrupt:
        _log("interrupted; stopping everything")
        return 130
    except RuntimeError as exc:
        _log(f"bench.auth: FAILED: {exc}")
        return 1
    finally:
        server.close()
    report = [*header(args, redis_version), *arms_section(targets)]
    report += load_section(targets, args.concurrency)
    if FLOOR_C in args.concurrency:
        report += rounds_section(targets, orders, FLOOR_C)
    report += summary(targets, counted, args.concurrency)
    report += ["", f"(bench wall time {time.monotonic() - started:.0f} s)"]
    print("\n".join(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
