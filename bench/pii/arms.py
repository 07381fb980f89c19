"""guard with the pii policy vs guard with an empty bundle, in front of the same fast fake
upstreams, in one process lifetime: wrk load with a 1 KB prompt, and streamed answers
timed to their first token.

The wrk load runs in three scenarios, every arm with the same Lua request builder:
  unique    a different 1 KB user text on every request (``texts.Template`` filled with a
            sequence number no other request of the run gets): every scan is a scan
  typical   the same, but the text is ``texts.prompt_template``'s ordinary prose with one
            email address: what most prompts hold, where unique's ticket is PII-dense
  repeated  the same text on every request: what a chat client resending its history
            looks like, where guard's detector answers from its cache

Targets (one uvicorn worker per guard, all started and stopped here):
  direct       wrk -> the nginx mock; streams straight from the SSE mock
  guard-pii    guard whose policy dir holds only a copy of policies/pii.yaml
  guard-empty  guard with an empty policy bundle (nothing is scanned)

Both guards come from ``bench.proxy_overhead``'s config (audit and telemetry off), so
they differ only in their policy dir.
"""

from __future__ import annotations

import http.server
import json
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

from bench.pii import texts
from bench.pii.detector import POLICY
from bench.proxy_overhead import load
from bench.proxy_overhead import procs as px
from bench.proxy_overhead.__main__ import _wait_stream_ready
from bench.proxy_overhead.load import PATH, Sample
from bench.proxy_overhead.ttfb import (
    GAPLESS_STREAM_BODY,
    STREAM_BODY,
    KeepAliveClient,
    ProtocolError,
    check_stream,
)

DIRECT, PII, EMPTY = "direct", "guard-pii", "guard-empty"
GUARDS = (PII, EMPTY)
UNIQUE, TYPICAL, REPEATED = "unique", "typical", "repeated"
_MAX_CHUNKS = 10_000
_WRK_BODY = "wrk.body = "
# Sequence numbers below FIRST_WRK_SEQ are the bench's own (the repeated text, readiness
# checks); wrk's start there, so no wrk request meets a text guard has seen.
REPEATED_SEQ = 0
READY_SEQ = 1
FIRST_WRK_SEQ = 1000
# Thread k of a wrk run sends sequence numbers first + k, first + k + MAX_WRK_THREADS, ...:
# a thread's first request goes out before the next thread is set up, so the stride cannot
# be the run's thread count. proxy_overhead's runner starts at most two.
MAX_WRK_THREADS = 2


@dataclass
class Target:
    name: str
    port: int  # non-streaming chat completions (the nginx mock behind guard)
    stream_port: int  # streamed ones (the SSE mock behind guard)
    proc: px.Proc  # whose CPU time counts: guard (for direct, the nginx mock)
    # by scenario, then concurrency
    samples: dict[str, dict[int, list[Sample]]] = field(default_factory=dict)
    ttft_s: dict[str, list[float]] = field(default_factory=dict)  # by stream regime

    def cell(self, scenario: str, c: int) -> list[Sample]:
        return self.samples[scenario][c]


# -- starting ---------------------------------------------------------------------------------


def _pii_bundle(workdir: Path) -> Path:
    bundle = workdir / "pii-policies"
    bundle.mkdir(exist_ok=True)
    shutil.copy(POLICY, bundle / POLICY.name)
    return bundle


def _use_bundle(config: Path, workdir: Path, bundle: Path) -> None:
    """Point a ``px.guard_config`` file at ``bundle`` instead of its empty one.

    guard_config always writes its empty bundle; editing that one line keeps every other
    setting the same as the empty arm's.
    """
    empty = f"dir: {workdir / 'no-policies'},"
    text = config.read_text()
    if text.count(empty) != 1:
        raise RuntimeError(f"{config}: expected one '{empty}' line to replace")
    config.write_text(text.replace(empty, f"dir: {bundle},"))


def start(procs: px.Procs, *, chunks: int, gap_ms: float) -> list[Target]:
    mock_port, sse_port = px.free_port(), px.free_port()
    nginx = px.start_nginx(procs, "nginx-mock", px.nginx_mock_block(mock_port))
    sse = px.start_sse_mock(procs, sse_port, chunks, gap_ms)
    targets = [Target(DIRECT, mock_port, sse_port, nginx)]
    bundle = _pii_bundle(procs.workdir)
    for name in GUARDS:
        port = px.free_port()
        config = px.guard_config(procs, name, port, mock_port=mock_port, sse_port=sse_port)
        if name == PII:
            _use_bundle(config, procs.workdir, bundle)
        proc = px.start_guard(procs, name, "uvicorn", config, port)
        targets.append(Target(name, port, port, proc))
    _wait_stream_ready(sse, sse_port)
    return targets


def wait_ready(targets: Sequence[Target], bodies: Sequence[bytes]) -> None:
    """Every target answers each of ``bodies`` with 200 and the mock's reply (guard-pii
    loads Presidio first, several seconds on this machine): guard-pii redacts these
    prompts and forwards them, it does not refuse them."""
    expected = px.MOCK_BODY.encode()
    for t in targets:
        for body in bodies:
            px.wait_ready(t.proc, t.port, PATH, body, expect=expected, timeout_s=90.0)


# -- load -------------------------------------------------------------------------------------


_GENERATOR = """\
-- bench.pii: each request's body is texts.Template's JSON pieces around its slots, the
-- slots filled from a sequence number as texts.fill does. Both scenarios build every
-- body here, so the Lua cost is the same for every arm and scenario.
local PIECES = {{ {pieces} }}
local KINDS = {{ {kinds} }}
local VARY = {vary}  -- false: every request gets sequence number FIXED_SEQ
local FIXED_SEQ = {fixed_seq}
local STATE = [==[{state}]==]  -- the next unused sequence number, across wrk runs
local MAX_THREADS = {max_threads}
local LETTERS, PHONES = {letters}, {phones}

local function letters(n)
  local out = {{}}
  for i = 1, LETTERS do
    out[i] = string.char(97 + n % 26)
    n = math.floor(n / 26)
  end
  return table.concat(out)
end

local function body(n)
  local word, line = letters(n), n % PHONES
  local fills = {{
    word = word,
    ref = string.upper(word),
    phone = string.format("%03d-%04d", 200 + math.floor(line / 10000), line % 10000),
  }}
  local out = {{ PIECES[1] }}
  for i, kind in ipairs(KINDS) do
    out[2 * i] = fills[kind]
    out[2 * i + 1] = PIECES[i + 1]
  end
  return table.concat(out)
end

-- setup and done run in wrk's main Lua state; request in each thread's own.
local threads, first = {{}}, nil

function setup(thread)
  if first == nil then
    local f = assert(io.open(STATE, "r"))
    first = assert(tonumber(f:read("*a")))
    f:close()
  end
  if #threads == MAX_THREADS then
    error("bench.pii: more than " .. MAX_THREADS .. " wrk threads")
  end
  thread:set("seq", first + #threads)
  table.insert(threads, thread)
end

function request()
  local n = seq
  seq = seq + MAX_THREADS
  return wrk.format(nil, nil, nil, body(VARY and n or FIXED_SEQ))
end

local summary_done = done
done = function(summary, latency, requests)
  local next_seq = first
  for _, thread in ipairs(threads) do
    next_seq = math.max(next_seq, thread:get("seq"))
  end
  local f = assert(io.open(STATE, "w"))
  f:write(string.format("%d", next_seq))
  f:close()
  summary_done(summary, latency, requests)
end
"""


def _lua_string(text: str) -> str:
    """A Lua long string: takes the JSON as it is, with no escaping."""
    if "]==]" in text or text.startswith("\n"):
        raise ValueError("the text cannot be a [==[ ]==] Lua string")
    return f"[==[{text}]==]"


def sequence_state(workdir: Path) -> Path:
    """The file wrk's scripts keep the next unused sequence number in."""
    state = workdir / "pii-seq"
    if not state.exists():
        state.write_text(str(FIRST_WRK_SEQ))
    return state


def next_seq(state: Path) -> int:
    return int(state.read_text())


def wrk_script(workdir: Path, template: texts.Template, scenario: str) -> Path:
    """``proxy_overhead``'s post.lua (its headers, its summary) with a request builder
    instead of its fixed short prompt: ``template`` filled with a new sequence number per
    request (``unique``, ``typical``) or always ``REPEATED_SEQ`` (``repeated``)."""
    lines = load.LUA.read_text().splitlines()
    at = [i for i, line in enumerate(lines) if line.startswith(_WRK_BODY)]
    if len(at) != 1:
        raise RuntimeError(f"{load.LUA}: expected one '{_WRK_BODY}' line")
    del lines[at[0]]
    generator = _GENERATOR.format(
        pieces=", ".join(_lua_string(p) for p in template.body_parts()),
        kinds=", ".join(f'"{k}"' for k in template.kinds),
        vary="false" if scenario == REPEATED else "true",
        fixed_seq=REPEATED_SEQ,
        state=sequence_state(workdir),
        max_threads=MAX_WRK_THREADS,
        letters=texts.LETTERS,
        phones=texts.PHONES,
    )
    script = workdir / f"pii-{scenario}.lua"
    script.write_text("\n".join(lines) + "\n" + generator)
    return script


@contextmanager
def posting(script: Path) -> Iterator[None]:
    """Make ``proxy_overhead``'s wrk runner send ``script``'s request.

    Its runner reads the script from a module constant (post.lua: a short prompt); this
    bench keeps the runner, its summary parsing and its CPU accounting, and only swaps
    the request.
    """
    with mock.patch.object(load, "LUA", script):
        yield


@dataclass(frozen=True)
class Scenario:
    name: str  # UNIQUE, TYPICAL or REPEATED
    script: Path
    template: texts.Template  # what its script renders


def run_load(
    targets: list[Target],
    scenarios: Sequence[Scenario],
    concurrencies: Sequence[int],
    *,
    rounds: int,
    duration_s: float,
    warmup_s: float,
    log: Callable[[str], None],
) -> list[list[str]]:
    """Every target in every scenario at every concurrency once per round, interleaved;
    the order of the targets (and of the scenarios) rotates each round so drift and noise
    hit every arm alike; returns each round's order of the targets."""
    total = rounds * len(scenarios) * len(concurrencies) * len(targets)
    done = 0
    orders: list[list[str]] = []
    if max(load.wrk_threads(c) for c in concurrencies) > MAX_WRK_THREADS:
        raise RuntimeError(f"the wrk scripts take at most {MAX_WRK_THREADS} threads")
    for rnd in range(rounds):
        order = targets[rnd % len(targets) :] + targets[: rnd % len(targets)]
        orders.append([t.name for t in order])
        turn = rnd % len(scenarios)
        for scenario in [*scenarios[turn:], *scenarios[:turn]]:
            with posting(scenario.script):
                for c in concurrencies:
                    for target in order:
                        sample = _measure(target, c, duration_s, warmup_s)
                        cells = target.samples.setdefault(scenario.name, {})
                        cells.setdefault(c, []).append(sample)
                        done += 1
                        log(
                            f"[{done}/{total}] round {rnd + 1} {scenario.name:<8} c={c:<3} "
                            f"{target.name:<12}{sample.rps:>8.0f} req/s  "
                            f"p50 {sample.p50_ms:7.3f} ms  p99 {sample.p99_ms:7.3f} ms  "
                            f"{sample.cpu_us_per_req:6.0f} us/req"
                            + (f"  ERRORS {sample.errors}" if sample.errors else "")
                        )
    return orders


def _measure(target: Target, c: int, duration_s: float, warmup_s: float) -> Sample:
    if not target.proc.alive():
        raise RuntimeError(f"{target.name} died:\n{target.proc.log_tail()}")
    return load.measure(target.port, c, duration_s, warmup_s, target.proc.cpu_seconds)


# -- the request builder, checked ---------------------------------------------------------


@dataclass(frozen=True)
class GeneratorCheck:
    scenario: str
    bodies: int  # received by the capturing server
    distinct: int  # different user texts among them
    size: int  # bytes of every body


class _CaptureServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__((px.LOOPBACK, 0), _Capture)
        self.bodies: list[bytes] = []

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # wrk drops its connections when it stops
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Capture(http.server.BaseHTTPRequestHandler):
    """Keeps every body POSTed and answers 200 with the mock's reply (HTTP/1.1 keep-alive,
    as wrk uses)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else the reply's second write waits for a delayed ACK

    def do_POST(self) -> None:
        server = self.server
        assert isinstance(server, _CaptureServer)
        server.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        reply = px.MOCK_BODY.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        pass  # a line per request on stderr would drown the bench's progress


def check_generator(scenario: Scenario, state: Path) -> GeneratorCheck:
    """Run ``scenario``'s wrk script for a second, two threads, against a server that keeps
    what it receives, and check it sends what its ``texts.Template`` renders: in ``unique``
    and ``typical`` every body a rendering of its own sequence number, no user text twice;
    in ``repeated`` the one text. This is the Lua that then loads guard, so what it sends
    is known, not assumed."""
    template = scenario.template
    varies = scenario.name != REPEATED
    server = _CaptureServer()
    bodies = server.bodies
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        first = next_seq(state)
        with posting(scenario.script):
            load.run_wrk(server.server_address[1], MAX_WRK_THREADS, 1.0)
        last = next_seq(state)
    finally:
        server.shutdown()
        server.server_close()
    if varies:
        expected = {template.body(seq) for seq in range(first, last)}
    else:
        expected = {template.body(REPEATED_SEQ)}
    prompts = [json.loads(b)["messages"][1]["content"] for b in bodies]
    sizes = {len(b) for b in bodies}
    if not bodies or not set(bodies) <= expected or len(sizes) != 1:
        raise RuntimeError(
            f"bench.pii: the {scenario.name} wrk script sent {len(bodies)} bodies, "
            f"{len(set(bodies) - expected)} not rendered by texts.Template, sizes {sizes}"
        )
    distinct = len(set(prompts))
    if distinct != (len(bodies) if varies else 1):
        raise RuntimeError(f"bench.pii: {scenario.name}: {distinct} texts in {len(bodies)}")
    return GeneratorCheck(scenario.name, len(bodies), distinct, sizes.pop())


# -- time to first token ----------------------------------------------------------------------


def _content(event: bytes) -> str:
    """The answer text one SSE event carries ('' for role, finish and [DONE] events)."""
    if not event.startswith(b"data: {"):
        return ""
    chunk = json.loads(event[len(b"data: ") :])
    return "".join((c.get("delta") or {}).get("content") or "" for c in chunk.get("choices", []))


class TtftClient(KeepAliveClient):
    """``proxy_overhead``'s keep-alive socket client, timing the first SSE event that
    carries answer text instead of the first body byte: guard may send an event with its
    text held back, and a client shows nothing until text comes."""

    def _chunked(self) -> tuple[bytes, float]:
        parts: list[bytes] = []
        first = 0.0
        pending = b""  # bytes of events not yet whole, until the first text is seen
        for _ in range(_MAX_CHUNKS):
            size = int(self._until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                self._until(b"\r\n")  # no trailers from guard or the mock
                return b"".join(parts), first
            data = self._take(size)
            arrived = time.perf_counter()
            self._until(b"\r\n")
            parts.append(data)
            if not first:
                *events, pending = (pending + data).split(b"\n\n")
                if any(_content(e) for e in events):
                    first = arrived
        raise ProtocolError("too many chunks")


def answer_text(body: bytes) -> str:
    return "".join(_content(e) for e in body.split(b"\n\n"))


# Stream regimes: the mock's tokens --gap-ms apart, as a model sends them, or all at once
# (the mock's bench_gap_ms: 0), which leaves guard no token to wait for: what guard's own
# work adds to the first token.
PACED, GAPLESS = "paced", "gapless"
STREAM_BODIES = {PACED: STREAM_BODY, GAPLESS: GAPLESS_STREAM_BODY}


def run_ttft(
    targets: list[Target],
    regime: str,
    *,
    requests: int,
    warmup: int,
    log: Callable[[str], None],
) -> None:
    """Streamed requests one at a time (c=1), each target in turn, the order rotated each
    round; every stream is read to its end on a kept-alive connection. The first round
    checks every arm streams the same answer as the mock."""
    clients = {t.name: TtftClient(t.stream_port, STREAM_BODIES[regime]) for t in targets}
    try:
        for i in range(warmup + requests):
            order = targets[i % len(targets) :] + targets[: i % len(targets)]
            for target in order:
                timing = clients[target.name].request()
                if i == 0:
                    _check(target, timing.body, clients[DIRECT].request().body)
                if not timing.ttfb_s:
                    raise ProtocolError(f"{target.name}: a stream without answer text")
                if i >= warmup:
                    target.ttft_s.setdefault(regime, []).append(timing.ttfb_s)
            if i and i % 100 == 0:
                log(f"ttft {regime}: {i}/{warmup + requests} rounds")
    finally:
        for client in clients.values():
            client.close()


def _check(target: Target, body: bytes, reference: bytes) -> None:
    check_stream(body)
    if answer_text(body) != answer_text(reference):
        raise ProtocolError(
            f"{target.name} streamed {answer_text(body)!r}, the mock {answer_text(reference)!r}"
        )
