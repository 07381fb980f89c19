"""AuditEvent: one per exchange, built from the finished Exchange off the request path.

An event never holds a detector's raw match: findings are summarised as types,
counts and maximum scores. Texts are kept as the settings say (none, as redacted,
or in full) and cut at ``max_text_bytes``.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
import uuid_utils.compat as uuid_compat

from guard.detectors.base import Direction
from guard.pipeline.context import Exchange
from guard.policy.actions import apply_redactions
from guard.policy.decision import Action, Redaction
from guard.protocols.base import OPAQUE, Adapter, Usage
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


class RuleHit(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    # omit_defaults: events sealed before ``mode`` existed keep their hashes.
    direction: str
    rule_id: str
    action: str
    mode: str = "enforce"  # or "monitor": recorded, not acted on


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The record of one exchange (or one admin action, ``kind="admin"``).

    ``detector_versions`` names what produced the findings (detector name -> model,
    revision, licence, device) for the detectors that scanned the exchange and say
    their version. ``chain_id``, ``seq``, ``prev_hash`` and ``hash`` are empty until
    the recorder seals the event into its chain (guard.audit.chain).
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
    # Empty: left out of the chain's canonical encoding, so events sealed before this
    # field existed keep their hashes (guard.audit.chain).
    detector_versions: dict[str, str] = msgspec.field(default_factory=dict)
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


class Scanned(msgspec.Struct, frozen=True, array_like=True):
    """One direction's scans, as the audit event needs them."""

    findings: list[tuple[str, str, float, int, int, int]]  # detector, label, score, text, span
    failed: list[str]
    detectors: list[str]
    scanned: bool
    blocked: bool
    degraded: bool  # a rule could not be checked and said on_error: allow


class ExchangeRecord(msgspec.Struct, array_like=True):
    """A finished exchange reduced to plain values: cheap to take on the request path,
    cheap to send to the writer process, enough to build the AuditEvent (and the
    exchange's trace) there."""

    started_wall: float
    total: float
    guard_in: float
    ttfb: float | None
    upstream_total: float | None
    guard_out: float | None
    client: str
    method: str
    path: str
    route: str
    card: tuple[str, str, str, str, bool, bool, str | None] | None
    request_body: bytes
    answer: bytes
    answer_tail: list[bytes]
    answer_limit: int
    truncated: bool
    stream: bool
    status: int
    error_code: str | None
    decided: bool
    decision: int
    policy_version: str | None
    rules: list[tuple[str, str, str, str]]  # direction, rule id, action, mode
    input: Scanned
    output: Scanned
    output_guarded: bool
    output_complete: bool
    trace_id: str
    parent_span_id: str | None
    span_id: str
    upstream_span_id: str
    sampled: bool
    steps: list[tuple[str, str, float, float]]  # name, direction, start, end (from arrival)
    enqueue: float = 0.0  # seconds this snapshot took (the audit enqueue span)
    # (value, placeholder) of the exchange's pseudonyms: values restored in the answer
    # become placeholders again in what the audit trail keeps. Never stored.
    pseudonyms: list[tuple[str, str]] = []
    # detector name -> version, for the detectors that scanned the exchange: taken from
    # its bundle on the request path, since the writer never sees the bundle.
    detector_versions: dict[str, str] = {}
    tenant_id: str | None = None
    key_id: str | None = None


def record_of(ex: Exchange) -> ExchangeRecord:
    """Runs on the request path: attribute reads and one join, nothing else."""
    sent, first, done = ex.upstream_sent, ex.upstream_first_byte, ex.upstream_done
    card = ex.model
    lic = card.licence if card else None
    return ExchangeRecord(
        ex.started_wall,
        ex.ended - ex.started,
        (sent if sent is not None else ex.ended) - ex.started,
        first - sent if first is not None and sent is not None else None,
        done - sent if done is not None and sent is not None else None,
        ex.guard_out if first is not None else None,
        ex.inbound.client,
        ex.inbound.method,
        ex.inbound.path,
        ex.adapter.route,
        (card.name, card.upstream, card.upstream_model, lic.id, lic.commercial_use,
         lic.attribution_required, lic.revision) if card and lic else None,
        ex.inbound.body,
        b"".join(ex.capture.chunks),
        ex.capture.tail,
        ex.capture.limit,
        ex.capture.truncated,
        ex.stream,
        ex.status,
        ex.error_code,
        ex.decided,
        max(d.action for d in ex.decisions.values()),
        ex.policy_version,
        [(d.value, rule, action, mode) for d, rule, action, mode in ex.rules],
        _scanned(ex, Direction.INPUT),
        _scanned(ex, Direction.OUTPUT),
        ex.output_guarded,
        ex.output_complete,
        ex.trace_id,
        ex.parent_span_id,
        ex.span_id,
        ex.upstream_span_id,
        bool(ex.sampled),
        ex.steps,
        pseudonyms=list(ex.pseudonyms.pairs()) if len(ex.pseudonyms) else [],
        detector_versions=_versions(ex),
        tenant_id=ex.tenant.id if ex.tenant is not None else None,
        key_id=principal.key_id if (principal := ex.inbound.principal) is not None else None,
    )  # fmt: skip


def _versions(ex: Exchange) -> dict[str, str]:
    """The versions of the detectors that ran in either direction, taken now from the
    bundle the exchange ran with: a reload may replace it before the writer builds the
    event, and the writer gets plain values only."""
    ran = ex.scans[Direction.INPUT].detectors + ex.scans[Direction.OUTPUT].detectors
    if not ran or ex.guardrails is None:  # nothing scanned, or refused before routing
        return {}
    versions = ex.guardrails.detector_versions()
    return {name: versions[name] for name in ran if name in versions}


def _scanned(ex: Exchange, direction: Direction) -> Scanned:
    scan = ex.scans[direction]
    findings = [
        (f.detector, f.label, f.score, f.text_index, *(f.span or (-1, -1))) for f in scan.findings
    ]
    blocked = ex.decisions[direction].blocks
    degraded = direction in ex.degraded
    return Scanned(
        findings, list(scan.failed), list(scan.detectors), scan.scanned, blocked, degraded
    )


def from_record(rec: ExchangeRecord, store_text: StoreText) -> AuditEvent:
    """The event of a finished exchange. Runs in the writer, off the request path."""
    adapter = adapter_for(rec.route)
    body = _json(rec.request_body)
    card = rec.card
    answers = _answer_bodies(rec, adapter)
    request_texts = _request_texts(adapter, body)
    response_texts = _joined_answer(rec, adapter, answers)
    kept_in, kept_out, cut = _kept(rec, request_texts, response_texts, store_text)
    usage, source = _usage(rec, adapter, answers, request_texts, response_texts)
    return AuditEvent(
        id=new_event_id(),
        started_at=utc(rec.started_wall),
        ended_at=utc(rec.started_wall + rec.total),
        tenant_id=rec.tenant_id,
        key_id=rec.key_id,
        client_address=clean(rec.client, 64),
        method=clean(rec.method, 16),
        route=clean(rec.path, 256),
        model=card[0] if card else _requested_model(body),
        upstream=card[1] if card else None,
        upstream_model=card[2] if card else None,
        licence_id=card[3] if card else None,
        licence_commercial_use=card[4] if card else None,
        licence_attribution_required=card[5] if card else None,
        model_revision=card[6] if card else None,
        policy_version=rec.policy_version,
        detector_versions={
            clean(name, 64): clean(version, 256) for name, version in rec.detector_versions.items()
        },
        decision=Action(rec.decision).name.lower() if rec.decided else None,
        status=rec.status,
        error_code=rec.error_code,
        input_scan=_status(rec.input, complete=True),
        output_scan=_output_status(rec),
        stream=rec.stream,
        findings=summarise(rec),
        rules=tuple(
            RuleHit(d, clean(rule, 128), action, mode) for d, rule, action, mode in rec.rules
        ),
        request_texts=kept_in,
        response_texts=kept_out,
        texts_truncated=cut,
        prompt_tokens=usage[0],
        completion_tokens=usage[1],
        usage_source=source,
        guard_in_ms=_ms(rec.guard_in),
        upstream_ttfb_ms=_ms(rec.ttfb),
        upstream_total_ms=_ms(rec.upstream_total),
        guard_out_ms=_ms(rec.guard_out),
        total_ms=_ms(rec.total) or 0.0,
        trace_id=rec.trace_id,
    )


def tokens_used(rec: ExchangeRecord) -> int | None:
    """Prompt and completion tokens of a finished exchange, counted as its audit event
    counts them (the upstream's usage, else an estimate); None without an answer.
    Runs on the request path only for a key or tenant with a token limit."""
    if rec.card is None or rec.status >= 400:
        return None
    adapter = adapter_for(rec.route)
    answers = _answer_bodies(rec, adapter)
    request_texts = _request_texts(adapter, _json(rec.request_body))
    usage, _ = _usage(rec, adapter, answers, request_texts, _joined_answer(rec, adapter, answers))
    return sum(n for n in usage if n) or None


def policy_event(
    version: str, outcome: str, reason: str, detail: dict[str, Any], started: float
) -> AuditEvent:
    """A policy bundle put in force (``loaded``) or turned away (``rejected``). A loaded
    bundle's event holds its files, so the exact policy behind any decision can be shown."""
    now = time.time()
    return AuditEvent(
        id=new_event_id(),
        kind="policy",
        started_at=utc(started),
        ended_at=utc(now),
        client_address="local",
        method="LOAD",
        route=clean(reason, 256),
        policy_version=version,
        decision=outcome,
        status=0,
        total_ms=round((now - started) * 1000, 3),
        trace_id=new_event_id().replace("-", ""),
        detail=detail,
    )


def bare_event(rec: ExchangeRecord) -> AuditEvent:
    """What is certain about an exchange whose full event could not be built."""
    return AuditEvent(
        id=new_event_id(),
        started_at=utc(rec.started_wall),
        ended_at=utc(rec.started_wall + rec.total),
        client_address=clean(rec.client, 64),
        method=clean(rec.method, 16),
        route=clean(rec.path, 256),
        model=rec.card[0] if rec.card else None,
        status=rec.status,
        error_code="audit_details_missing",
        total_ms=_ms(rec.total) or 0.0,
        trace_id=rec.trace_id,
    )


def adapter_for(route: str) -> Adapter:
    from guard.protocols import ADAPTERS  # noqa: PLC0415  # protocols import nothing of audit

    return ADAPTERS.get(route, OPAQUE)


def summarise(rec: ExchangeRecord) -> tuple[FindingCount, ...]:
    """Types, counts and max scores per direction: never what was found."""
    tally: dict[tuple[str, str, str], tuple[int, float]] = {}
    for direction, scan in (("input", rec.input), ("output", rec.output)):
        for detector, label, score, *_ in scan.findings:
            key = (direction, clean(detector, 64), clean(label, 128))
            count, top = tally.get(key, (0, 0.0))
            tally[key] = (count + 1, max(top, score))
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


def _requested_model(body: Any) -> str | None:
    name = body.get("model") if isinstance(body, dict) else None
    return clean(name, 256) if isinstance(name, str) else None


def _output_status(rec: ExchangeRecord) -> ScanStatus:
    if rec.status >= 400 or not rec.output_guarded:
        return "unscanned"
    return _status(rec.output, complete=rec.output_complete)


def _status(scan: Scanned, *, complete: bool) -> ScanStatus:
    """What the detectors covered. A stream that ended early (the client left, the
    upstream failed) was scanned as far as it got: nothing unscanned was sent. A
    detector that failed makes it ``degraded`` if the text went on anyway (failed
    open), ``unscanned`` if the policy blocked it for that (failed closed)."""
    if not complete:
        return "partially_scanned"
    if scan.degraded and not scan.blocked:
        return "degraded"
    if not scan.scanned or not scan.detectors:
        return "unscanned"
    if scan.failed:
        return "unscanned" if scan.blocked else "degraded"
    return "scanned"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _answer_bodies(rec: ExchangeRecord, adapter: Adapter) -> list[Any]:
    """The answer as parsed JSON objects: one body, or the stream's chunks in order."""
    if rec.status >= 400 or not rec.answer or adapter is OPAQUE:
        return []
    if not rec.stream:
        return [_json(rec.answer)]
    splitter = EventSplitter(adapter.stream_format)
    events = [*splitter.feed(rec.answer), splitter.flush()]
    tail = EventSplitter(adapter.stream_format)
    events.extend(e for chunk in rec.answer_tail for e in tail.feed(chunk))
    sse = adapter.stream_format == "sse"
    return [_json(sse_data(e) if sse else e.strip()) for e in events if e.strip()]


def _json(raw: bytes | None) -> Any:
    if not raw or raw == DONE:
        return None
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None


def _request_texts(adapter: Adapter, body: Any) -> list[str]:
    if not isinstance(body, dict):
        return []
    try:
        return [r.text for r in adapter.request_texts(body)]
    except Exception:  # noqa: BLE001  # a body the adapter refused has no texts to keep
        return []


def _joined_answer(rec: ExchangeRecord, adapter: Adapter, answers: list[Any]) -> list[str]:
    if not rec.stream:
        return [r.text for body in answers for r in adapter.response_texts(body)]
    joined: dict[Any, list[str]] = {}
    for chunk in answers:
        for ref in adapter.chunk_texts(chunk):
            joined.setdefault(ref.stream_key, []).append(ref.text)
    return ["".join(parts) for parts in joined.values()]


def _kept(
    rec: ExchangeRecord, request: list[str], response: list[str], store_text: StoreText
) -> tuple[list[str] | None, list[str] | None, bool]:
    """The texts the settings keep. ``redacted``: the request with every span a detector
    found replaced by its type, the answer as the client received it but with the
    exchange's pseudonyms not restored."""
    if store_text == "none" or rec.card is None:
        return None, None, False
    if store_text == "redacted":
        request = _masked(request, rec.input)
        response = _pseudonymized(response, rec.pseudonyms)
    kept_in, cut_in = _cut(request, rec.answer_limit)
    kept_out, cut_out = _cut(response, rec.answer_limit)
    return kept_in, kept_out, cut_in or cut_out or rec.truncated


def _masked(texts: list[str], scan: Scanned) -> list[str]:
    spans = [
        Redaction(index, start, end, f"<{label}>")
        for _, label, _, index, start, end in scan.findings
        if 0 <= index < len(texts) and 0 <= start < end <= len(texts[index])
    ]
    return apply_redactions(texts, spans) if spans else texts


def _pseudonymized(texts: list[str], pairs: list[tuple[str, str]]) -> list[str]:
    """The answer as the model wrote it: each restored value back to its placeholder."""
    for value, placeholder in pairs:
        texts = [text.replace(value, placeholder) for text in texts]
    return texts


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


def _usage(
    rec: ExchangeRecord,
    adapter: Adapter,
    answers: list[Any],
    request: list[str],
    response: list[str],
) -> tuple[Usage, str | None]:
    reported = [u for body in answers if (u := adapter.usage(body)) is not None]
    if reported:
        return reported[-1], "upstream"
    if rec.card is None or rec.status >= 400:
        return (None, None), None
    prompt = _estimate(sum(map(len, request)))
    return (prompt, _estimate(sum(map(len, response))) if answers else None), "estimated"


def _estimate(chars: int) -> int:
    return math.ceil(chars / _CHARS_PER_TOKEN)
