"""AuditEvent: one per exchange, built from the finished Exchange off the request path.

An event never holds a detector's raw match: findings are summarised as types,
counts and maximum scores. Texts are kept as the settings say (none, as redacted,
or in full) and cut at ``max_text_bytes``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
import uuid_utils.compat as uuid_compat

from guard.detectors.base import Direction
from guard.detectors.runner import ScanResult
from guard.pipeline.context import Exchange
from guard.policy.engine import Action
from guard.protocols.base import Usage
from guard.upstream.sse import DONE, EventSplitter, sse_data

ScanStatus = Literal["scanned", "partially_scanned", "unscanned", "degraded"]
StoreText = Literal["none", "redacted", "full"]
_CHARS_PER_TOKEN = 4  # the usual estimate when a server reports no usage


class FindingCount(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    direction: str
    detector: str
    label: str
    count: int
    max_score: float


class RuleHit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    direction: str
    rule_id: str
    action: str


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The record of one exchange (or one admin action, ``kind="admin"``).

    ``chain_id``, ``seq``, ``prev_hash`` and ``hash`` are empty until the recorder
    seals the event into its chain (guard.audit.chain).
    """

    id: str
    kind: str = "exchange"
    started_at: datetime
    ended_at: datetime
    tenant_id: str | None = None
    key_id: str | None = None
    client_address: str
    method: str
    route: str
    model: str | None = None
    upstream: str | None = None
    upstream_model: str | None = None
    licence_id: str | None = None
    licence_commercial_use: bool | None = None
    licence_attribution_required: bool | None = None
    model_revision: str | None = None
    policy_version: str | None = None
    decision: str | None = None
    status: int
    error_code: str | None = None
    input_scan: str = "unscanned"
    output_scan: str = "unscanned"
    stream: bool = False
    findings: tuple[FindingCount, ...] = ()
    rules: tuple[RuleHit, ...] = ()
    request_texts: list[str] | None = None
    response_texts: list[str] | None = None
    texts_truncated: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usage_source: str | None = None
    guard_in_ms: float | None = None
    upstream_ttfb_ms: float | None = None
    upstream_total_ms: float | None = None
    guard_out_ms: float | None = None
    total_ms: float
    trace_id: str
    detail: dict[str, Any] | None = None
    chain_id: str = ""
    seq: int = 0
    prev_hash: str = ""
    hash: str = ""


def new_event_id() -> str:
    """Time-ordered (UUIDv7): ids sort by creation, across processes."""
    return str(uuid_compat.uuid7())


def utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def from_exchange(ex: Exchange, store_text: StoreText) -> AuditEvent:
    """The event of a finished exchange. Runs on the recorder's thread."""
    total = ex.ended - ex.started
    card = ex.model
    answers = _answer_bodies(ex)
    request_texts, response_texts, cut = _texts(ex, answers, store_text)
    usage, source = _usage(ex, answers)
    return AuditEvent(
        id=new_event_id(),
        started_at=utc(ex.started_wall),
        ended_at=utc(ex.started_wall + total),
        client_address=clean(ex.inbound.client, 64),
        method=clean(ex.inbound.method, 16),
        route=clean(ex.inbound.path, 256),
        model=card.name if card else _requested_model(ex),
        upstream=card.upstream if card else None,
        upstream_model=card.upstream_model if card else None,
        licence_id=card.licence.id if card else None,
        licence_commercial_use=card.licence.commercial_use if card else None,
        licence_attribution_required=card.licence.attribution_required if card else None,
        model_revision=card.licence.revision if card else None,
        policy_version=ex.policy_version,
        decision=_decision(ex),
        status=ex.status,
        error_code=ex.error_code,
        input_scan=_input_status(ex),
        output_scan=_output_status(ex),
        stream=ex.stream,
        findings=summarise(ex.scans.items()),
        rules=tuple(RuleHit(d.value, clean(rule, 128), action) for d, rule, action in ex.rules),
        request_texts=request_texts,
        response_texts=response_texts,
        texts_truncated=cut,
        prompt_tokens=usage[0],
        completion_tokens=usage[1],
        usage_source=source,
        trace_id=ex.trace_id,
        **_latency(ex, total),  # type: ignore[arg-type]  # the five latency fields
    )


def bare_event(ex: Exchange) -> AuditEvent:
    """What is certain about an exchange whose full event could not be built."""
    total = ex.ended - ex.started
    return AuditEvent(
        id=new_event_id(),
        started_at=utc(ex.started_wall),
        ended_at=utc(ex.started_wall + total),
        client_address=clean(ex.inbound.client, 64),
        method=clean(ex.inbound.method, 16),
        route=clean(ex.inbound.path, 256),
        model=ex.model.name if ex.model else None,
        status=ex.status,
        error_code="audit_details_missing",
        total_ms=round(total * 1000, 3),
        trace_id=ex.trace_id,
    )


def summarise(scans: Iterable[tuple[Direction, ScanResult]]) -> tuple[FindingCount, ...]:
    """Types, counts and max scores per direction: never what was found."""
    tally: dict[tuple[str, str, str], tuple[int, float]] = {}
    for direction, scan in scans:
        for f in scan.findings:
            key = (direction.value, clean(f.detector, 64), clean(f.label, 128))
            count, top = tally.get(key, (0, 0.0))
            tally[key] = (count + 1, max(top, f.score))
    return tuple(
        FindingCount(d, det, label, count, round(top, 6))
        for (d, det, label), (count, top) in sorted(tally.items())
    )


def clean(text: str, limit: int | None = None) -> str:
    """Storable in any database: no NUL, no lone surrogates, at most ``limit`` chars."""
    if limit is not None:
        text = text[:limit]
    if text.isascii():
        return text.replace("\x00", "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def _requested_model(ex: Exchange) -> str | None:
    name = ex.body.get("model") if ex.body else None
    return clean(name, 256) if isinstance(name, str) else None


def _decision(ex: Exchange) -> str | None:
    if not ex.decided:
        return None
    action = max(d.action for d in ex.decisions.values())
    return Action(action).name.lower()


def _input_status(ex: Exchange) -> ScanStatus:
    return _status(ex, Direction.INPUT, complete=True)


def _output_status(ex: Exchange) -> ScanStatus:
    if ex.status >= 400 or not ex.output_guarded:
        return "unscanned"
    return _status(ex, Direction.OUTPUT, complete=ex.output_complete)


def _status(ex: Exchange, direction: Direction, *, complete: bool) -> ScanStatus:
    """What the detectors covered. A stream that ended early (the client left, the
    upstream failed) was scanned as far as it got: nothing unscanned was sent. A
    detector that failed makes it ``degraded`` if the text went on anyway (failed
    open), ``unscanned`` if the policy blocked it for that (failed closed)."""
    scan = ex.scans[direction]
    if not complete:
        return "partially_scanned"
    if not scan.scanned or not scan.detectors:
        return "unscanned"
    if scan.failed:
        return "unscanned" if ex.decisions[direction].blocks else "degraded"
    return "scanned"


def _latency(ex: Exchange, total: float) -> dict[str, float | None]:
    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds * 1000, 3)

    sent, first, done = ex.upstream_sent, ex.upstream_first_byte, ex.upstream_done
    return {
        "guard_in_ms": ms((sent if sent is not None else ex.ended) - ex.started),
        "upstream_ttfb_ms": ms(first - sent) if first is not None and sent is not None else None,
        "upstream_total_ms": ms(done - sent) if done is not None and sent is not None else None,
        "guard_out_ms": ms(ex.guard_out) if first is not None else None,
        "total_ms": ms(total) or 0.0,
    }


def _answer_bodies(ex: Exchange) -> list[Any]:
    """The answer as parsed JSON objects: one body, or the stream's chunks in order."""
    if ex.status >= 400 or not ex.capture.chunks:
        return []
    if not ex.stream:
        return [_json(b"".join(ex.capture.chunks))]
    splitter = EventSplitter(ex.adapter.stream_format)
    events = [e for chunk in ex.capture.chunks for e in splitter.feed(chunk)]
    events.append(splitter.flush())
    tail = EventSplitter(ex.adapter.stream_format)
    events.extend(e for chunk in ex.capture.tail for e in tail.feed(chunk))
    sse = ex.adapter.stream_format == "sse"
    return [_json(sse_data(e) if sse else e.strip()) for e in events if e.strip()]


def _json(raw: bytes | None) -> Any:
    if not raw or raw == DONE:
        return None
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None


def _texts(
    ex: Exchange, answers: list[Any], store_text: StoreText
) -> tuple[list[str] | None, list[str] | None, bool]:
    if store_text == "none" or ex.model is None:
        return None, None, False
    body = ex.body if store_text == "redacted" else _json(ex.inbound.body)
    try:
        request = [r.text for r in ex.adapter.request_texts(body)] if body else []
    except Exception:  # noqa: BLE001  # a body the adapter refused has no texts to keep
        request = []
    budget = ex.capture.limit
    kept_in, cut_in = _cut(request, budget)
    kept_out, cut_out = _cut(_joined_answer(ex, answers), budget)
    return kept_in, kept_out, cut_in or cut_out or ex.capture.truncated


def _joined_answer(ex: Exchange, answers: list[Any]) -> list[str]:
    if not ex.stream:
        return [r.text for body in answers for r in ex.adapter.response_texts(body)]
    joined: dict[Any, list[str]] = {}
    for chunk in answers:
        for ref in ex.adapter.chunk_texts(chunk):
            joined.setdefault(ref.stream_key, []).append(ref.text)
    return ["".join(parts) for parts in joined.values()]


def _cut(texts: list[str], budget: int) -> tuple[list[str], bool]:
    kept: list[str] = []
    for text in texts:
        encoded = text.encode("utf-8", "replace")
        if len(encoded) > budget:
            kept.append(clean(encoded[:budget].decode("utf-8", "ignore")))
            return kept, True
        kept.append(clean(text))
        budget -= len(encoded)
    return kept, False


def _usage(ex: Exchange, answers: list[Any]) -> tuple[Usage, str | None]:
    reported = [u for body in answers if (u := ex.adapter.usage(body)) is not None]
    if reported:
        return reported[-1], "upstream"
    if ex.model is None or ex.status >= 400:
        return (None, None), None
    prompt = sum(len(r.text) for r in _safe_texts(ex))
    answer = sum(len(t) for t in _joined_answer(ex, answers))
    return (_estimate(prompt), _estimate(answer) if answers else None), "estimated"


def _safe_texts(ex: Exchange) -> list[Any]:
    try:
        return ex.adapter.request_texts(ex.body)
    except Exception:  # noqa: BLE001  # refused bodies were never sent
        return []


def _estimate(chars: int) -> int:
    return math.ceil(chars / _CHARS_PER_TOKEN)
