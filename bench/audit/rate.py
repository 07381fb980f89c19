"""Sustained audit events per second into PostgreSQL through guard's recorder.

Each round empties the scratch database, starts a fresh ``AuditRecorder`` (a fresh
hash chain) on guard's repository, enqueues every item up front (far faster than the
writer takes them, so the writer never waits for work) and times first enqueue ->
everything committed. Two feeds:

- ``event``: ready ``AuditEvent`` objects (the writer seals and writes them);
- ``exchange``: finished ``guard.pipeline.context.Exchange`` objects, reduced to the
  ``ExchangeRecord`` the proxy hands its writer process (the writer also builds each
  event: texts, usage, findings summary).
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from bench.audit.scratch import Scratch
from guard.audit.events import (
    AuditEvent,
    ExchangeRecord,
    FindingCount,
    RuleHit,
    new_event_id,
    record_of,
)
from guard.audit.recorder import AuditRecorder
from guard.db.repository import AuditRepository
from guard.detectors.base import Direction, Finding
from guard.detectors.runner import ScanResult
from guard.pipeline.context import Capture, Exchange, Inbound
from guard.policy.decision import Action, Decision
from guard.protocols.openai import ChatCompletions
from guard.registry.cards import LicenceCard, ModelCard
from guard.settings import AuditSettings

Item = AuditEvent | ExchangeRecord
_FILLER = (
    "please summarise the quarterly report for the board and list the open risks with "
    "owners dates budget figures customer churn revenue forecast hiring plan security "
    "review incident postmortem contract renewal invoice support ticket escalation "
    "migration roadmap latency dashboard"
)
_WORDS = tuple(_FILLER.split())
_MODEL = ModelCard(
    name="qwen2.5-0.5b-instruct",
    upstream="local",
    upstream_model="Qwen/Qwen2.5-0.5B-Instruct",
    licence=LicenceCard(
        id="apache-2.0",
        name="Apache License 2.0",
        commercial_use=True,
        attribution_required=False,
        share_alike=False,
        restrictions=(),
        user_threshold=None,
        catalogued=True,
        source_url=None,
        revision="7ae557604adf67be50417f59c2c2f167def9a775",
    ),
)
_ADAPTER = ChatCompletions()
_SYSTEM = "You are a helpful assistant for the finance team. Answer briefly."


@dataclass(frozen=True)
class Round:
    feed: str
    events: int
    seconds: float  # first enqueue -> every event committed
    enqueue_s: float  # time the request side spent in record()
    flush_ok: bool
    written_at_flush: int  # recorder.stats.written when flush() returned
    written: int
    rows: int
    lost: int
    spooled: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else float("nan")

    @property
    def ok(self) -> bool:
        return self.written == self.events == self.rows and not self.lost and not self.spooled


def _text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:chars]


def make_event(rng: random.Random, now: datetime) -> AuditEvent:
    """One exchange's event as guard records it: a flagged chat completion with PII found."""
    total = rng.uniform(30.0, 900.0)
    ttfb = total * 0.6
    started = now - timedelta(milliseconds=total)
    return AuditEvent(
        id=new_event_id(),
        started_at=started,
        ended_at=now,
        tenant_id="acme",
        key_id="key-finance-01",
        client_address=f"10.0.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        method="POST",
        route="/v1/chat/completions",
        model=_MODEL.name,
        upstream=_MODEL.upstream,
        upstream_model=_MODEL.upstream_model,
        licence_id=_MODEL.licence.id,
        licence_commercial_use=_MODEL.licence.commercial_use,
        licence_attribution_required=_MODEL.licence.attribution_required,
        model_revision=_MODEL.licence.revision,
        policy_version="2026-11-28.1",
        decision="flag",
        status=200,
        input_scan="scanned",
        output_scan="scanned",
        findings=(
            FindingCount("input", "presidio", "EMAIL_ADDRESS", rng.randint(1, 3), 0.99),
            FindingCount("input", "presidio", "PHONE_NUMBER", 1, round(rng.uniform(0.6, 1), 6)),
            FindingCount("output", "secrets", "api_key", 1, 0.85),
        ),
        rules=(RuleHit("input", "pii-flag", "flag"),),
        request_texts=[_SYSTEM, _text(rng, 200)],
        response_texts=[_text(rng, 200)],
        prompt_tokens=rng.randint(40, 80),
        completion_tokens=rng.randint(30, 60),
        usage_source="upstream",
        guard_in_ms=round(rng.uniform(0.3, 2.0), 3),
        upstream_ttfb_ms=round(ttfb, 3),
        upstream_total_ms=round(total - 1.5, 3),
        guard_out_ms=round(rng.uniform(0.2, 1.0), 3),
        total_ms=round(total, 3),
        trace_id=f"{rng.getrandbits(128):032x}",
    )


def make_exchange(rng: random.Random, max_text_bytes: int) -> Exchange:
    """A finished exchange as the pipeline hands it to the recorder: the same story as
    ``make_event``, but the writer thread builds the event from it."""
    body = {
        "model": _MODEL.name,
        "messages": [
            {"role": "system", "content": _SYSTEM},
            {"role": "user", "content": _text(rng, 200)},
        ],
        "max_tokens": 128,
        "temperature": 0.2,
    }
    raw = msgspec.json.encode(body)
    answer = msgspec.json.encode(
        {
            "id": f"chatcmpl-{rng.getrandbits(64):016x}",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": _MODEL.upstream_model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": _text(rng, 200)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 61, "completion_tokens": 47, "total_tokens": 108},
        }
    )
    inbound = Inbound(
        method="POST",
        path="/v1/chat/completions",
        query="",
        headers=[("content-type", "application/json"), ("user-agent", "OpenAI/Python 1.54.0")],
        body=raw,
        client=f"10.0.{rng.randrange(256)}.{rng.randrange(1, 255)}",
    )
    ex = Exchange(inbound, _ADAPTER, Capture(max_text_bytes))
    ex.model = _MODEL
    ex.body = msgspec.json.decode(raw)
    ex.policy_version = "2026-11-28.1"
    emails = [Finding("presidio", "EMAIL_ADDRESS", 0.99, 1) for _ in range(rng.randint(1, 3))]
    phone = Finding("presidio", "PHONE_NUMBER", round(rng.uniform(0.6, 1), 6), 1)
    ex.add_scan(
        Direction.INPUT,
        ScanResult(
            findings=(*emails, phone),
            scanned=True,
            detectors=("presidio",),
        ),
    )
    ex.add_scan(
        Direction.OUTPUT,
        ScanResult(
            findings=(Finding("secrets", "api_key", 0.85, 0),),
            scanned=True,
            detectors=("secrets",),
        ),
    )
    ex.add_decision(Direction.INPUT, Decision(Action.FLAG, ("pii-flag",)))
    ex.add_decision(Direction.OUTPUT, Decision())
    total = rng.uniform(0.03, 0.9)
    ex.started -= total  # as if it had arrived ``total`` seconds ago
    ex.started_wall -= total
    ex.upstream_sent = ex.started + rng.uniform(0.0003, 0.002)
    ex.upstream_first_byte = ex.upstream_sent + total * 0.6
    ex.upstream_done = ex.started + total - 0.0015
    ex.guard_out = rng.uniform(0.0002, 0.001)
    ex.output_complete = True
    ex.capture.whole(answer)
    ex.finish(200)
    return ex


def build(feed: str, count: int, seed: int, max_text_bytes: int) -> list[Item]:
    rng = random.Random(seed)  # noqa: S311  # reproducible filler, not secrets
    if feed == "event":
        now = datetime.now(UTC)
        return [make_event(rng, now) for _ in range(count)]
    return [record_of(make_exchange(rng, max_text_bytes)) for _ in range(count)]


def _settings(url: str, spool: Path, events: int) -> AuditSettings:
    # Room in the queue for the whole round: record() drops beyond queue_max.
    return AuditSettings(database_url=url, spool_dir=spool, queue_max=max(events + 1, 100_000))


def run_round(scratch: Scratch, items: Sequence[Item], feed: str, timeout_s: float) -> Round:
    scratch.empty()
    with tempfile.TemporaryDirectory(prefix="guard-bench-spool-") as spool:
        settings = _settings(scratch.url, Path(spool), len(items))
        recorder = AuditRecorder(settings, AuditRepository(scratch.engine))
        recorder.start()
        try:
            record = recorder.record
            started = time.perf_counter()
            for item in items:
                record(item)
            enqueued = time.perf_counter()
            flush_ok = recorder.flush(timeout=timeout_s)
            written_at_flush = recorder.stats.written
            # flush() promises nothing queued, held or spooled; wait for the commit too,
            # so the figure never counts events still in flight.
            deadline = time.monotonic() + timeout_s
            while recorder.stats.written < len(items) and time.monotonic() < deadline:
                if recorder.stats.lost or recorder.stats.spooled:
                    break
                time.sleep(0.001)
            done = time.perf_counter()
        finally:
            recorder.close()
        stats = recorder.stats
        return Round(
            feed=feed,
            events=len(items),
            seconds=done - started,
            enqueue_s=enqueued - started,
            flush_ok=flush_ok,
            written_at_flush=written_at_flush,
            written=stats.written,
            rows=scratch.count(),
            lost=stats.lost,
            spooled=stats.spooled,
        )


def run_feed(
    scratch: Scratch,
    feed: str,
    *,
    rounds: int,
    events: int,
    warmup: int,
    timeout_s: float,
    log: Callable[[str], None],
) -> list[Round]:
    max_text_bytes = AuditSettings().max_text_bytes
    if warmup:
        run_round(scratch, build(feed, warmup, 0, max_text_bytes), feed, timeout_s)
    results = []
    for i in range(rounds):
        items = build(feed, events, i + 1, max_text_bytes)  # built before the clock starts
        result = run_round(scratch, items, feed, timeout_s)
        del items
        results.append(result)
        log(
            f"recorder [{feed}] round {i + 1}/{rounds}: {result.events:,} events in "
            f"{result.seconds:.3f} s = {result.rate:,.0f}/s (enqueue {result.enqueue_s * 1e3:.0f}"
            f" ms; written {result.written:,}, rows {result.rows:,}, lost {result.lost}, "
            f"spooled {result.spooled}; at flush() return: written {result.written_at_flush:,}"
            f"{'' if result.flush_ok else ', flush TIMED OUT'})"
        )
    return results


def median_rate(results: Sequence[Round]) -> float:
    return statistics.median(r.rate for r in results)
