"""guard's proxy overhead: the same load direct, through nginx and through guard, in one run.

    .venv/bin/python -m bench.proxy_overhead            # full: 3 x 5 s per cell, 300 TTFB rounds
    .venv/bin/python -m bench.proxy_overhead --quick    # a smoke run, about a minute

Targets (all on 127.0.0.1, all started and stopped here):
  direct                 wrk -> nginx mock upstream (a fixed chat-completion JSON)
  nginx                  wrk -> nginx proxy_pass (keep-alive pool) -> mock
  guard-uvicorn          wrk -> guard serve (uvicorn, uvloop, httptools; guard's default) -> mock
  guard-granian          guard on granian (asgi, uvloop)
  client-aiohttp         wrk -> minimal Litestar forwarder on uvicorn, aiohttp -> mock
  client-httpx           the same with httpx (its own transport)
  client-httpx-aiohttp   the same with httpx over aiohttp (httpx-aiohttp's transport)

The client-* forwarders (clients.py) differ only in their HTTP client; they keep the
choice of guard's upstream client (aiohttp, directly) measured. They do not stream, so the
streaming TTFB part runs on direct, nginx and the guard targets only.

The report is printed to stdout (progress to stderr); the exit code is 0 unless the bench
itself could not run.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from bench.common import log as _log
from bench.common import on_sigterm as _on_sigterm
from bench.proxy_overhead import procs as px
from bench.proxy_overhead.load import PATH, Sample, cell, measure, request_body, wrk_threads
from bench.proxy_overhead.ttfb import GAPLESS_STREAM_BODY, KeepAliveClient, check_stream

GUARD_DEFAULT = "guard-uvicorn"
GUARDS = {"guard-uvicorn": "uvicorn", "guard-granian": "granian"}
CLIENTS = tuple(px.CLIENT_FACTORIES)  # client-aiohttp, client-httpx, client-httpx-aiohttp
DEFAULT_TARGETS = ("direct", "nginx", *GUARDS, *CLIENTS)
ALL_TARGETS = DEFAULT_TARGETS

FLOOR_RPS_C64 = 1500.0
FLOOR_ADDED_P50_C1_MS = 1.0
FLOOR_TTFB_MS = 1.0
TTFB_WARMUP_ROUNDS = 20
TTFB_BURST = 11
NOISE = 0.05  # run-to-run spread of one cell on the 2-core machine


@dataclass
class Target:
    name: str
    port: int
    stream_port: int | None  # None: does not stream (the client-* forwarders)
    proc: px.Proc  # whose CPU time counts: the proxy (for direct, the mock itself)


@dataclass
class Results:
    cells: dict[tuple[str, int], list[Sample]] = field(default_factory=dict)
    ttfb: dict[str, list[float]] = field(default_factory=dict)  # streaming, seconds
    idle: dict[str, list[float]] = field(default_factory=dict)  # non-streaming, seconds
    warm: dict[str, list[float]] = field(default_factory=dict)  # streaming, back to back


# -- running ---------------------------------------------------------------------------------


def start_all(procs: px.Procs, names: Sequence[str], chunks: int, gap_ms: float) -> list[Target]:
    mock_port, sse_port = px.free_port(), px.free_port()
    mock = px.start_nginx(procs, "nginx-mock", px.nginx_mock_block(mock_port))
    sse = px.start_sse_mock(procs, sse_port, chunks, gap_ms)
    targets = [Target("direct", mock_port, sse_port, mock)]
    if "nginx" in names:
        port, stream_port = px.free_port(), px.free_port()
        proxy = px.start_nginx(
            procs, "nginx-proxy", px.nginx_proxy_block(port, stream_port, mock_port, sse_port)
        )
        targets.append(Target("nginx", port, stream_port, proxy))
    for name in names:
        port = px.free_port()
        if name in GUARDS:
            config = px.guard_config(procs, name, port, mock_port=mock_port, sse_port=sse_port)
            proc = px.start_guard(procs, name, GUARDS[name], config, port)
            targets.append(Target(name, port, port, proc))
        elif name in CLIENTS:
            proc = px.start_client(procs, name, port, mock_port)
            targets.append(Target(name, port, None, proc))

    body, expected = request_body(), px.MOCK_BODY.encode()
    for target in targets:
        px.wait_ready(target.proc, target.port, PATH, body, expect=expected)
    _wait_stream_ready(sse, sse_port)
    for target in targets:
        if target.stream_port is None:
            continue
        client = KeepAliveClient(target.stream_port)
        try:
            check_stream(client.request().body)
        finally:
            client.close()
    _log("ready: " + ", ".join(f"{t.name}@{t.port}" for t in targets))
    return [t for t in targets if t.name in names]


def _wait_stream_ready(proc: px.Proc, port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"sse mock exited:\n{proc.log_tail()}")
        try:
            KeepAliveClient(port).close()
        except OSError:
            time.sleep(0.1)
        else:
            return
    raise RuntimeError(f"sse mock not listening on {port}")


def run_load(
    targets: list[Target],
    concurrencies: Sequence[int],
    results: Results,
    *,
    repeats: int,
    duration_s: float,
    warmup_s: float,
) -> None:
    """Every cell once per repeat, interleaved, the target order rotated each time."""
    total = repeats * len(concurrencies) * len(targets)
    done = 0
    for rep in range(repeats):
        for c in concurrencies:
            shift = (rep + c) % len(targets)
            for target in targets[shift:] + targets[:shift]:
                if not target.proc.alive():
                    raise RuntimeError(f"{target.name} died:\n{target.proc.log_tail()}")
                sample = measure(target.port, c, duration_s, warmup_s, target.proc.cpu_seconds)
                results.cells.setdefault((target.name, c), []).append(sample)
                done += 1
                _log(
                    f"[{done}/{total}] rep {rep + 1} c={c:<3} {target.name:<22} "
                    f"{sample.rps:>9.0f} req/s  p50 {sample.p50_ms:7.3f} ms  "
                    f"p99 {sample.p99_ms:7.3f} ms  {sample.cpu_us_per_req:7.1f} us/req"
                    + (f"  ERRORS {sample.errors}" if sample.errors else "")
                )


def run_ttfb(targets: list[Target], rounds: int, results: Results) -> None:
    """Sequential requests on warm keep-alive connections, one target at a time.

    Each round sends every target one non-streaming request, then one streaming request.
    So each request meets a server that sat idle while the others streamed (tens of ms),
    as a streaming request always does; the non-streaming time separates that idle cost
    from what is specific to streaming.
    """
    targets = [t for t in targets if t.stream_port is not None]
    body = request_body()
    plain = {t.name: KeepAliveClient(t.port, body) for t in targets}
    streams = {t.name: KeepAliveClient(t.stream_port) for t in targets if t.stream_port}
    try:
        for i in range(TTFB_WARMUP_ROUNDS + rounds):
            measured = i >= TTFB_WARMUP_ROUNDS
            for target in targets:
                timing = plain[target.name].request()
                if i == 0 and timing.body != px.MOCK_BODY.encode():
                    raise RuntimeError(f"{target.name}: unexpected body {timing.body[:200]!r}")
                if measured:
                    results.idle.setdefault(target.name, []).append(timing.ttfb_s)
            for target in targets:
                timing = streams[target.name].request()
                if i == 0:
                    check_stream(timing.body)
                if measured:
                    results.ttfb.setdefault(target.name, []).append(timing.ttfb_s)
            if i and i % 100 == 0:
                _log(f"ttfb: {i}/{TTFB_WARMUP_ROUNDS + rounds} rounds")
        gapless = {
            t.name: KeepAliveClient(t.stream_port, GAPLESS_STREAM_BODY)
            for t in targets
            if t.stream_port
        }
        try:
            run_back_to_back(targets, gapless, rounds, results)
        finally:
            for client in gapless.values():
                client.close()
    finally:
        for client in [*plain.values(), *streams.values()]:
            client.close()


def run_back_to_back(
    targets: list[Target], streams: dict[str, KeepAliveClient], rounds: int, results: Results
) -> None:
    """Streaming requests in bursts of TTFB_BURST per target, the way wrk times c=1.

    The mock sends these streams without gaps, so the proxy never sits idle, and the
    first request of each burst (which follows the other targets' bursts) is left out:
    this regime is a proxy with steady traffic, the interleaved one above a proxy at rest
    between tokens.
    """
    for burst in range(max(1, rounds // (TTFB_BURST - 1))):
        order = targets[burst % len(targets) :] + targets[: burst % len(targets)]
        for target in order:
            for i in range(TTFB_BURST):
                timing = streams[target.name].request()
                if i:
                    results.warm.setdefault(target.name, []).append(timing.ttfb_s)


# -- reporting -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def _pct(a: float, b: float) -> str:
    return f"{(a / b - 1) * 100:+.1f}%" if b else "n/a"


def load_table(results: Results, names: Sequence[str], concurrencies: Sequence[int]) -> list[str]:
    lines = [
        "| target | c | req/s | req/s min-max | p50 ms | p99 ms | +p50 ms | +p99 ms | CPU µs/req |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name in names:
        for c in concurrencies:
            x = cell(results.cells[(name, c)])
            d = cell(results.cells[("direct", c)])
            added = (
                ("—", "—")
                if name == "direct"
                else (f"{x.p50_ms - d.p50_ms:+.3f}", f"{x.p99_ms - d.p99_ms:+.3f}")
            )
            err = f" ⚠ {x.errors} errors" if x.errors else ""
            lines.append(
                f"| {name}{err} | {c} | {x.rps:,.0f} | {x.rps_min:,.0f}-{x.rps_max:,.0f} "
                f"| {x.p50_ms:.3f} | {x.p99_ms:.3f} | {added[0]} | {added[1]} "
                f"| {x.cpu_us:,.1f} |"
            )
    return lines


def ttfb_table(results: Results, names: Sequence[str]) -> list[str]:
    def q(values: list[float], pct: float) -> float:
        return percentile(values, pct) * 1e3

    d = {
        "s50": q(results.ttfb["direct"], 50),
        "s99": q(results.ttfb["direct"], 99),
        "i50": q(results.idle["direct"], 50),
        "w50": q(results.warm["direct"], 50),
    }
    lines = [
        "| target | n | TTFB p50 ms | TTFB p99 ms | overhead p50 ms | overhead p99 ms "
        "| non-streaming p50 ms | its overhead p50 ms | back-to-back p50 ms | its overhead ms |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name in names:
        if name not in results.ttfb:  # the client-* forwarders do not stream
            continue
        s50, s99 = q(results.ttfb[name], 50), q(results.ttfb[name], 99)
        i50, w50 = q(results.idle[name], 50), q(results.warm[name], 50)
        if name == "direct":
            over = ("—", "—", "—", "—")
        else:
            over = (
                f"{s50 - d['s50']:+.3f}",
                f"{s99 - d['s99']:+.3f}",
                f"{i50 - d['i50']:+.3f}",
                f"{w50 - d['w50']:+.3f}",
            )
        lines.append(
            f"| {name} | {len(results.ttfb[name])} | {s50:.3f} | {s99:.3f} "
            f"| {over[0]} | {over[1]} | {i50:.3f} | {over[2]} | {w50:.3f} | {over[3]} |"
        )
    return lines


def _versus(results: Results, a: str, b: str, concurrencies: Sequence[int]) -> list[str]:
    """How ``a`` compares with ``b`` (req/s, p50 and CPU) at each concurrency."""
    out = []
    for c in concurrencies:
        if (a, c) not in results.cells or (b, c) not in results.cells:
            continue
        x, y = cell(results.cells[(a, c)]), cell(results.cells[(b, c)])
        out.append(
            f"    c={c:<3} req/s {x.rps:,.0f} vs {y.rps:,.0f} ({_pct(x.rps, y.rps)}), "
            f"p50 {x.p50_ms:.3f} vs {y.p50_ms:.3f} ms, "
            f"CPU {x.cpu_us:,.0f} vs {y.cpu_us:,.0f} µs/req"
        )
    return out


def _winner(results: Results, a: str, b: str, c: int) -> str:
    x, y = cell(results.cells[(a, c)]).rps, cell(results.cells[(b, c)]).rps
    win, lose, rw, rl = (a, b, x, y) if x >= y else (b, a, y, x)
    text = f"{win} won at c={c}: {rw:,.0f} vs {rl:,.0f} req/s ({_pct(rw, rl)} over {lose})"
    if rw / rl - 1 < NOISE:
        text += f" -- within noise (<{NOISE:.0%}): a tie"
    return text


# The client-layer comparison, in the order the verdict names them: guard's client first.
CLIENT_ORDER = ("client-aiohttp", "client-httpx-aiohttp", "client-httpx")


def client_layer(results: Results, names: Sequence[str], concurrencies: Sequence[int]) -> list[str]:
    """aiohttp vs httpx-aiohttp vs httpx in the same minimal forwarder: % over the first."""
    run = [n for n in CLIENT_ORDER if n in names]
    if len(run) < 2:
        return []
    short = [n.removeprefix("client-") for n in run]

    def row(c: int) -> str:
        cells = [cell(results.cells[(n, c)]) for n in run]
        first = cells[0]
        diffs = ", ".join(
            f"{_pct(first.rps, x.rps)} req/s and {first.cpu_us - x.cpu_us:+,.0f} µs CPU/req "
            f"vs {name}{' (within noise)' if abs(first.rps / x.rps - 1) < NOISE else ''}"
            for name, x in zip(short[1:], cells[1:], strict=True)
        )
        return (
            f"req/s {' vs '.join(f'{x.rps:,.0f}' for x in cells)}, "
            f"p50 {' vs '.join(f'{x.p50_ms:.3f}' for x in cells)} ms, "
            f"CPU {' vs '.join(f'{x.cpu_us:,.0f}' for x in cells)} µs/req; {short[0]} {diffs}"
        )

    top = max(concurrencies)
    lines = [
        f"client layer: {' vs '.join(short)} at c={top}: {row(top)}",
        "    (minimal forwarders differing only in the HTTP client; guard uses aiohttp "
        "directly, with no httpx layer)",
    ]
    lines += [f"    c={c:<3} {row(c)}" for c in concurrencies if c != top]
    return lines


def verdict(results: Results, names: Sequence[str], concurrencies: Sequence[int]) -> list[str]:
    lines = ["```"]
    top = max(concurrencies)
    if "guard-granian" in names and GUARD_DEFAULT in names:
        lines.append(f"server: {_winner(results, 'guard-granian', GUARD_DEFAULT, top)}")
        lines += _versus(results, "guard-granian", GUARD_DEFAULT, concurrencies)
    lines += client_layer(results, names, concurrencies)
    if "nginx" in names and GUARD_DEFAULT in names:
        g, n = cell(results.cells[(GUARD_DEFAULT, top)]), cell(results.cells[("nginx", top)])
        lines.append(
            f"reference: nginx proxy_pass at c={top}: {n.rps:,.0f} req/s, "
            f"{n.cpu_us:,.1f} CPU µs/req; {GUARD_DEFAULT} is {g.rps / n.rps:.1%} "
            f"of its throughput at {g.cpu_us / n.cpu_us:.1f}x its CPU per request"
        )
    lines.append("")
    lines += floors(results, names, concurrencies)
    lines.append("```")
    return lines


def floors(results: Results, names: Sequence[str], concurrencies: Sequence[int]) -> list[str]:
    if GUARD_DEFAULT not in names:
        return [f"floors: not checked ({GUARD_DEFAULT} was not run)"]
    out = [f"FLOORS ({GUARD_DEFAULT}, guard's default):"]

    def line(ok: bool, text: str) -> str:
        return f"  [{'PASS' if ok else 'FAIL'}] {text}"

    if 64 in concurrencies:
        rps = cell(results.cells[(GUARD_DEFAULT, 64)]).rps
        out.append(line(rps >= FLOOR_RPS_C64, f"req/s at c=64 >= {FLOOR_RPS_C64:,.0f}: {rps:,.0f}"))
    else:
        out.append("  [SKIP] req/s at c=64 (c=64 not run)")
    if 1 in concurrencies:
        added = (
            cell(results.cells[(GUARD_DEFAULT, 1)]).p50_ms
            - cell(results.cells[("direct", 1)]).p50_ms
        )
        out.append(
            line(
                added < FLOOR_ADDED_P50_C1_MS,
                f"added p50 at c=1 < {FLOOR_ADDED_P50_C1_MS} ms: {added:.3f} ms",
            )
        )
    else:
        out.append("  [SKIP] added p50 at c=1 (c=1 not run)")
    if results.ttfb:

        def added(values: dict[str, list[float]]) -> float:
            return (percentile(values[GUARD_DEFAULT], 50) - percentile(values["direct"], 50)) * 1e3

        warm, cold, idle = added(results.warm), added(results.ttfb), added(results.idle)
        out.append(
            line(
                warm < FLOOR_TTFB_MS,
                f"streaming TTFB overhead (p50, back to back, as wrk times c=1) "
                f"< {FLOOR_TTFB_MS} ms: {warm:.3f} ms",
            )
        )
        out.append(
            line(
                cold < FLOOR_TTFB_MS,
                f"streaming TTFB overhead (p50, at rest: 20 ms between tokens and requests) "
                f"< {FLOOR_TTFB_MS} ms: {cold:.3f} ms",
            )
        )
        out.append(
            f"         of which {idle:.3f} ms is also paid by a plain request at rest; "
            f"streaming itself adds {cold - idle:+.3f} ms"
        )
    else:
        out.append("  [SKIP] streaming TTFB (not run)")
    return out


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except OSError:
        return "?"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "?"


def header(args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    def v(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "-"

    threads = ", ".join(f"c={c}: -t{wrk_threads(c)}" for c in args.concurrency)
    return [
        "# guard proxy overhead",
        "",
        f"- machine: {os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}",
        f"- {_version([px.system_bin('nginx'), '-v'])}; {_version([px.system_bin('wrk'), '-v'])}",
        f"- guard {v('guard')}, litestar {v('litestar')}, uvicorn {v('uvicorn')}, "
        f"granian {v('granian')}, uvloop {v('uvloop')}, httptools {v('httptools')}, "
        f"httpx {v('httpx')}, httpx-aiohttp {v('httpx-aiohttp')}, aiohttp {v('aiohttp')}",
        f"- load: wrk {threads}; {args.warmup:g} s warm-up + {args.duration:g} s per cell, "
        f"{args.repeats} interleaved repeat(s), medians shown; one worker process per server",
        f"- targets: {', '.join(names)}",
        "- CPU µs/req: user+system CPU of the process under test (and its children) over "
        "the measured run / requests; for 'direct' that is the nginx mock itself",
        "",
    ]


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.proxy_overhead", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 2 s cells, 1 repeat, 60 TTFB rounds"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of measured load per cell (default 5; 2 with --quick)",
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per cell")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="interleaved repeats per cell, median reported (default 3)",
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument(
        "--ttfb-requests",
        type=int,
        default=None,
        help="streaming requests per target (default 300; 60 with --quick)",
    )
    parser.add_argument(
        "--stream-chunks",
        type=int,
        default=3,
        help="SSE events the mock sends after the first, 20 ms apart",
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        choices=ALL_TARGETS,
        default=None,
        help=f"default: {' '.join(DEFAULT_TARGETS)} (direct is always run)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.duration = args.duration or (2.0 if quick else 5.0)
    args.repeats = max(1, args.repeats or (1 if quick else 3))
    args.ttfb_requests = max(1, args.ttfb_requests or (60 if quick else 300))
    if any(c < 1 for c in args.concurrency):
        parser.error("--concurrency values must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = ["direct", *[n for n in (args.targets or DEFAULT_TARGETS) if n != "direct"]]
    signal.signal(signal.SIGTERM, _on_sigterm)
    results = Results()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="guard-bench-") as tmp:
        procs = px.Procs(Path(tmp))
        try:
            targets = start_all(procs, names, args.stream_chunks, 20.0)
            run_load(
                targets,
                args.concurrency,
                results,
                repeats=args.repeats,
                duration_s=args.duration,
                warmup_s=args.warmup,
            )
            _log(f"load done in {time.monotonic() - started:.0f} s; streaming TTFB...")
            run_ttfb(targets, args.ttfb_requests, results)
        except KeyboardInterrupt:
            _log("interrupted; stopping everything")
            return 130
        finally:
            procs.stop_all()
    report = [
        *header(args, names),
        "## Load (non-streaming POST /v1/chat/completions)",
        "",
        *load_table(results, names, args.concurrency),
        "",
        "+p50/+p99: added latency over 'direct' at the same concurrency (medians of the repeats).",
        "",
        f"## Streaming time to first byte ({args.ttfb_requests} sequential requests per "
        "target, keep-alive)",
        "",
        *ttfb_table(results, names),
        "",
        "TTFB: request sent -> first byte of the first SSE event. Overhead: minus 'direct'. "
        "Each request meets a server idle for tens of ms (the other targets were streaming); "
        "'non-streaming' is a plain request timed the same way, so TTFB overhead minus its "
        "overhead is what streaming itself adds. 'back-to-back': bursts of "
        f"{TTFB_BURST} streaming requests per target, the first of each burst left out "
        "(a proxy with steady traffic, like wrk's c=1; the mock sends these streams without gaps).",
        "",
        "## Verdict",
        "",
        *verdict(results, names, args.concurrency),
        "",
        f"(bench wall time {time.monotonic() - started:.0f} s)",
    ]
    print("\n".join(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
