"""The order of phases for one exchange, top to bottom. Everything else is called from here.

admit (audit can record, the key passed) → parse body → route model → the key's and
tenant's limits → the conversation's pseudonyms →
scan input → decide → (block | rewrite, pseudonyms kept) → upstream → relay upstream
errors | scan output and restore pseudonyms (buffered, or incrementally on streams) →
client → audit event (whatever happened, errors included)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from guard.audit.events import record_of, tokens_used
from guard.detectors.base import Direction
from guard.errors import (
    BadRequest,
    ClientFacingError,
    PolicyBlocked,
    UpstreamError,
    VaultUnavailable,
)
from guard.pipeline.context import Capture, Exchange, Inbound, Outbound
from guard.pipeline.streams import StreamGuard
from guard.policy.actions import apply_redactions
from guard.policy.decision import Decision
from guard.policy.engine import Select
from guard.policy.store import PolicyStore
from guard.policy.vault import Vault
from guard.protocols.base import OPAQUE, Adapter, TextRef, write_texts
from guard.registry.cards import ModelRegistry
from guard.settings import Settings
from guard.tenancy.auth import Authenticator
from guard.tenancy.gate import LimitGate
from guard.upstream import UpstreamPool, UpstreamReply, forward
from guard.upstream.forward import request_headers
from guard.upstream.sse import EventSplitter

log = logging.getLogger(__name__)
_CONVERSATION_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


class AuditSink(Protocol):
    """Where finished exchanges go (guard.audit.recorder)."""

    def admit(self) -> None:
        """Raise a ClientFacingError when events could not be kept (fail closed)."""

    def record(self, ex: Exchange) -> None:
        """Take a finished exchange; never blocks."""


class MetricsSink(Protocol):
    """Where finished exchanges are counted (guard.telemetry.metrics)."""

    def observe(self, ex: Exchange) -> None: ...


@dataclass(frozen=True, slots=True)
class Services:
    """The long-lived parts the pipeline uses; built once in the app's lifespan."""

    settings: Settings
    models: ModelRegistry
    upstreams: UpstreamPool
    policies: PolicyStore
    audit: AuditSink
    metrics: MetricsSink
    vault: Vault
    auth: Authenticator
    limits: LimitGate


async def run_exchange(inbound: Inbound, adapter: Adapter, services: Services) -> Outbound:
    """One guarded exchange, recorded whatever happens to it."""
    ex = Exchange(inbound, adapter, Capture(services.settings.audit.max_text_bytes))
    with _recorded_on_error(ex, services):
        open_exchange(ex, services)
        await take_limits(ex, services)
        await open_conversation(ex, services)
        await guard_input(ex)
        await keep_conversation(ex, services)
        reply = await send_upstream(ex, services)
        if reply.status >= 400 or not _is_stream_reply(ex, reply):
            out = await buffered_reply(ex, reply, services)
        else:
            out = stream_reply(ex, reply, services)
    return audited(ex, out, services)


async def run_passthrough(inbound: Inbound, upstream_name: str, services: Services) -> Outbound:
    """A path the settings let through uninspected: forwarded as is, and recorded."""
    ex = Exchange(inbound, OPAQUE, Capture(services.settings.audit.max_text_bytes))
    with _recorded_on_error(ex, services):
        await take_limits(ex, services)  # one request from the key's and tenant's limits
        upstream = services.upstreams[upstream_name]
        path = inbound.path + (f"?{inbound.query}" if inbound.query else "")
        headers = _traced(request_headers(inbound.headers, upstream), ex)
        ex.upstream_sent = time.perf_counter()
        reply = await forward(upstream, inbound.method, path, headers, inbound.body or None)
        ex.upstream_first_byte = time.perf_counter()
        out = Outbound(
            reply.status, reply.headers, stream=_relay_stream(ex, reply), on_close=reply.aclose
        )
    return audited(ex, out, services)


@contextmanager
def _recorded_on_error(ex: Exchange, services: Services) -> Iterator[None]:
    """Admit the exchange (audit can keep it, the ingress read it), run the body, and
    record the exchange if anything stops it."""
    try:
        _admit(ex, services)
        yield
    except ClientFacingError as exc:
        _finished(ex, services, exc.status, exc.code or exc.type)
        raise
    except asyncio.CancelledError:
        _finished(ex, services, 499, "client_disconnected")
        raise
    except BaseException:
        _finished(ex, services, 500, "internal_error")
        raise


def _finished(ex: Exchange, services: Services, status: int, error_code: str | None) -> None:
    ex.finish(status, error_code)
    services.audit.record(ex)
    services.metrics.observe(ex)
    if ex.held is not None:
        tokens = tokens_used(record_of(ex)) if ex.held.counts_tokens else None
        services.limits.finish(ex.held, tokens)


def _admit(ex: Exchange, services: Services) -> None:
    if ex.sampled is None:  # no client trace context: guard's own sampling decides
        traces = services.settings.telemetry.traces
        ex.sampled = bool(traces.exporters) and random.random() < traces.sample_ratio  # noqa: S311
    services.audit.admit()
    if ex.inbound.refused:
        raise ex.inbound.refused


def audited(ex: Exchange, out: Outbound, services: Services) -> Outbound:
    """Record a whole answer now; a stream when it closes, however it ends."""
    if out.stream is None:
        _finished(ex, services, out.status, None)
        return out
    close_reply = out.on_close

    async def close() -> None:
        try:
            if close_reply is not None:
                await close_reply()
        finally:
            error = None if ex.output_complete else "stream_incomplete"
            _finished(ex, services, out.status, error)

    out.on_close = close
    return out


def open_exchange(ex: Exchange, services: Services) -> None:
    body = parse_json(ex.inbound.body)
    model = services.models.lookup(body.get("model"))
    route = ex.adapter.route
    if route.startswith("/api/") and services.upstreams[model.upstream].kind != "ollama":
        raise BadRequest(
            f"The model '{model.name}' is served by an OpenAI-compatible server; use the /v1 routes"
        )
    ex.stream = ex.adapter.is_stream(body)
    ex.body, ex.model = body, model
    ex.guardrails = services.policies.current  # kept to the end, whatever reloads meanwhile
    ex.policy_version = ex.guardrails.version


async def take_limits(ex: Exchange, services: Services) -> None:
    """One request (and, for a stream, a stream slot) from the key's and the tenant's
    limits, or 429; given back when the exchange is recorded (``_finished``)."""
    ex.held = await services.limits.admit(ex.inbound.principal, ex.trace_id if ex.stream else None)


async def open_conversation(ex: Exchange, services: Services) -> None:
    """A client that names its conversation gets the same pseudonyms every turn."""
    name = services.settings.pseudonyms.conversation_header
    conversation = ex.inbound.header(name.lower())
    if conversation is None:
        return
    if not _CONVERSATION_ID.match(conversation):
        raise BadRequest(
            f"The {name} header must be 8 to 128 letters, digits or . _ : - "
            "(a random id per conversation)"
        )
    ex.conversation = conversation
    ex.pseudonyms = await services.vault.load(_tenant_id(ex), conversation)


async def keep_conversation(ex: Exchange, services: Services) -> None:
    if ex.conversation is not None and ex.pseudonyms.changed:
        await services.vault.save(_tenant_id(ex), ex.conversation, ex.pseudonyms)
        ex.pseudonyms.changed = False


def _tenant_id(ex: Exchange) -> str | None:
    return ex.tenant.id if ex.tenant is not None else None


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # msgspec up to 0.22 raises UnicodeDecodeError on bytes that are not UTF-8,
        # later versions a DecodeError: the client is told which it is either way.
        if isinstance(exc, UnicodeDecodeError) or not _is_utf8(raw):
            raise BadRequest("The request body is not valid UTF-8") from None
        raise BadRequest(f"The request body is not valid JSON ({_reason(exc)})") from None
    except RecursionError:
        raise BadRequest("The request body nests too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    return body


async def guard_input(ex: Exchange) -> None:
    refs = ex.adapter.request_texts(ex.body)
    ex.rewritten = await enforce(ex, Direction.INPUT, ex.body, refs)


async def enforce(ex: Exchange, direction: Direction, body: Any, refs: list[TextRef]) -> bool:
    """Scan the texts, then block (raise) or write the redactions (and, in an answer,
    the values of the exchange's pseudonyms) into ``body``. Returns whether it changed."""
    texts = [r.text for r in refs]
    decision = await decide(ex, direction, texts)
    if decision.blocks:
        raise PolicyBlocked(decision.message or "Blocked by policy", status=decision.status)
    redactions = list(decision.redactions)
    if direction is Direction.OUTPUT:
        redactions += ex.pseudonyms.restorations(texts)
    if not redactions:
        return False
    write_texts(body, refs, apply_redactions(texts, redactions, ex.pseudonyms))
    return True


async def decide(
    ex: Exchange, direction: Direction, texts: Sequence[str], select: Select | None = None
) -> Decision:
    scan, decision = await ex.rails.check(texts, ex.scan_context(direction), select)
    ex.add_scan(direction, scan)
    ex.add_decision(direction, decision)
    return decision


async def send_upstream(ex: Exchange, services: Services) -> UpstreamReply:
    card = ex.card
    upstream = services.upstreams[card.upstream]
    content = ex.inbound.body
    # What was scanned is what is sent: the body as guard parsed it, never the client's
    # bytes, which another parser could read otherwise (a duplicated key, say).
    scanned = bool(ex.scans[Direction.INPUT].detectors)
    if ex.rewritten or scanned or card.upstream_model != card.name:
        ex.body["model"] = card.upstream_model
        content = msgspec.json.encode(ex.body)
    path = ex.adapter.route + (f"?{ex.inbound.query}" if ex.inbound.query else "")
    headers = _traced(request_headers(ex.inbound.headers, upstream), ex)
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("content-type", "application/json"))
    ex.upstream_sent = time.perf_counter()
    reply = await forward(upstream, "POST", path, headers, content)
    ex.upstream_first_byte = time.perf_counter()
    return reply


def _traced(headers: list[tuple[str, str]], ex: Exchange) -> list[tuple[str, str]]:
    """The trace goes on to the model server, with guard's upstream call as the parent."""
    kept = [(name, value) for name, value in headers if name.lower() != "traceparent"]
    return [*kept, ("traceparent", ex.traceparent())]


def _is_stream_reply(ex: Exchange, reply: UpstreamReply) -> bool:
    if not ex.stream:
        return False
    wanted = "text/event-stream" if ex.adapter.stream_format == "sse" else "ndjson"
    return wanted in reply.content_type


async def buffered_reply(ex: Exchange, reply: UpstreamReply, services: Services) -> Outbound:
    raw = await reply.read()
    ex.upstream_done = time.perf_counter()
    sent = raw
    if reply.status < 400 and _guards_output(ex):
        ex.output_guarded = True
        sent = await guard_output(ex, raw)
        ex.guard_out = time.perf_counter() - ex.upstream_done
        await keep_conversation(ex, services)
    ex.capture.whole(raw if services.settings.audit.store_text == "full" else sent)
    ex.output_complete = True
    return Outbound(reply.status, reply.headers, sent)


async def guard_output(ex: Exchange, raw: bytes) -> bytes:
    try:
        body = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        # An answer guard cannot read is not passed on as if it had been checked.
        raise UpstreamError("The upstream's answer was not valid JSON") from None
    refs = ex.adapter.response_texts(body)
    if await enforce(ex, Direction.OUTPUT, body, refs):
        return msgspec.json.encode(body)
    return raw


def _guards_output(ex: Exchange) -> bool:
    """Output rules are in scope, or there are pseudonyms to restore."""
    return ex.rails.active(ex.scan_context(Direction.OUTPUT)) or len(ex.pseudonyms) > 0


def stream_reply(ex: Exchange, reply: UpstreamReply, services: Services) -> Outbound:
    if _guards_output(ex):
        ex.output_guarded = True
        chunks = _guarded_stream(ex, reply, services)
    else:
        chunks = _relay_stream(ex, reply)
    return Outbound(reply.status, reply.headers, stream=chunks, on_close=reply.aclose)


async def _relay_stream(ex: Exchange, reply: UpstreamReply) -> AsyncGenerator[bytes, None]:
    """No output detectors: bytes go on as they arrive."""
    try:
        async for chunk in reply.iter_bytes():
            ex.capture.add(chunk)
            yield chunk
        ex.upstream_done = time.perf_counter()
        ex.output_complete = True
    except UpstreamError as exc:
        log.warning("stream %s ended early: %s", ex.trace_id, exc.message)
    finally:
        await reply.aclose()


async def _guarded_stream(
    ex: Exchange, reply: UpstreamReply, services: Services
) -> AsyncGenerator[bytes, None]:
    async def scan(texts: list[str], select: Select | None) -> Decision:
        started = time.perf_counter()
        try:
            return await decide(ex, Direction.OUTPUT, texts, select)
        finally:
            ex.guard_out += time.perf_counter() - started

    ctx = ex.scan_context(Direction.OUTPUT)
    window = services.settings.scan.stream_window_chars
    hold = ex.rails.holds(ctx) or len(ex.pseudonyms) > 0
    guard = StreamGuard(
        ex.adapter,
        scan,
        window,
        hold,
        holdback=lambda text: ex.rails.holdback(text, ctx),
        pseudonyms=ex.pseudonyms,
    )
    splitter = EventSplitter(ex.adapter.stream_format)
    keep_full = services.settings.audit.store_text == "full"
    try:
        async for chunk in reply.iter_bytes():
            if keep_full:
                ex.capture.add(chunk)
            for event in splitter.feed(chunk):
                for out in await guard.feed(event):
                    if not keep_full:
                        ex.capture.add(out)
                    yield out
                if guard.stopped:
                    ex.output_complete = True  # the policy ended it: all that was sent was scanned
                    return
        ex.upstream_done = time.perf_counter()
        for out in await guard.finish(splitter.flush()):
            if not keep_full:
                ex.capture.add(out)
            yield out
        ex.output_complete = True
        with contextlib.suppress(VaultUnavailable):  # the answer is sent; the store logged it
            await keep_conversation(ex, services)
    except UpstreamError as exc:
        log.warning("stream %s ended early: %s", ex.trace_id, exc.message)
    finally:
        await reply.aclose()


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _reason(exc: msgspec.DecodeError) -> str:
    # msgspec names the position, never the content.
    return str(exc).rstrip(".").lower()
