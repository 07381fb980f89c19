"""One wrk run against one target, with the target's CPU time over the run."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.proxy_overhead.procs import LOOPBACK, system_bin

LUA = Path(__file__).with_name("post.lua")
PATH = "/v1/chat/completions"
_SUMMARY = re.compile(r"^BENCH_JSON (\{.*\})$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNIT_US = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}
_SLACK_S = 30


def request_body() -> bytes:
    """The POST body the Lua script sends, for readiness checks that use the same request."""
    match = re.search(r"^wrk\.body = '(.*)'$", LUA.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no wrk.body in {LUA}")
    return match.group(1).encode()


@dataclass(frozen=True)
class Sample:
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us_per_req: float


def wrk_threads(connections: int) -> int:
    # Two wrk threads on a 2-core machine: one thread caps nginx near 20k requests/s.
    return min(2, connections)


def run_wrk(port: int, connections: int, duration_s: float) -> tuple[str, dict[str, float]]:
    argv = [
        system_bin("wrk"),
        f"-t{wrk_threads(connections)}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        f"http://{LOOPBACK}:{port}{PATH}",
    ]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=duration_s + _SLACK_S)
        finally:  # also on Ctrl-C: no wrk left behind
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=_SLACK_S)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {stderr or stdout}")
    match = _SUMMARY.search(stdout)
    if match is None:
        raise RuntimeError(f"no summary in wrk output:\n{stdout}")
    summary: dict[str, float] = json.loads(match.group(1))
    return stdout, summary


def percentiles_ms(output: str) -> dict[str, float]:
    """wrk's --latency distribution as printed (a cross-check on the Lua summary)."""
    return {f"p{m[0]}": float(m[1]) * _UNIT_US[m[2]] / 1000 for m in _PERCENTILE.findall(output)}


def measure(
    port: int,
    connections: int,
    duration_s: float,
    warmup_s: float,
    cpu_seconds: Callable[[], float],
) -> Sample:
    if warmup_s > 0:
        run_wrk(port, connections, warmup_s)
    cpu_before = cpu_seconds()
    output, s = run_wrk(port, connections, duration_s)
    cpu = cpu_seconds() - cpu_before
    requests = int(s["requests"])
    printed = percentiles_ms(output)
    rps_match = _RPS.search(output)
    rps = float(rps_match.group(1)) if rps_match else requests / (s["duration_us"] / 1e6)
    errors = int(
        s["err_connect"] + s["err_read"] + s["err_write"] + s["err_status"] + s["err_timeout"]
    )
    return Sample(
        rps=rps,
        requests=requests,
        # The Lua summary has microsecond resolution; wrk's printout rounds to 2 decimals.
        p50_ms=s["p50_us"] / 1000 if s["p50_us"] else printed.get("p50", 0.0),
        p99_ms=s["p99_us"] / 1000 if s["p99_us"] else printed.get("p99", 0.0),
        errors=errors,
        cpu_us_per_req=cpu / requests * 1e6 if requests else float("nan"),
    )


@dataclass(frozen=True)
class Cell:
    """The samples of one target and concurrency, summarised: medians, with spreads."""

    rps: float
    rps_min: float
    rps_max: float
    p50_ms: float
    p50_min: float
    p50_max: float
    p99_ms: float
    cpu_us: float
    errors: int


def cell(samples: Sequence[Sample]) -> Cell:
    med = statistics.median
    return Cell(
        rps=med(s.rps for s in samples),
        rps_min=min(s.rps for s in samples),
        rps_max=max(s.rps for s in samples),
        p50_ms=med(s.p50_ms for s in samples),
        p50_min=min(s.p50_ms for s in samples),
        p50_max=max(s.p50_ms for s in samples),
        p99_ms=med(s.p99_ms for s in samples),
        cpu_us=med(s.cpu_us_per_req for s in samples),
        errors=sum(s.errors for s in samples),
    )
