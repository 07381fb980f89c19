"""The order of phases for one exchange, top to bottom. Everything else is called from here.

parse body → route model → scan input → decide → (block | rewrite) → upstream
→ relay upstream errors | scan output (buffered, or windowed on streams) → client
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from guard.detectors.base import Direction
from guard.detectors.runner import DetectorRunner
from guard.errors import BadRequest, PolicyBlocked, UpstreamError
from guard.pipeline.context import Exchange, Inbound, Outbound
from guard.pipeline.streams import StreamGuard
from guard.policy.actions import apply_redactions
from guard.policy.engine import Decision, PolicyEngine
from guard.protocols.base import Adapter, TextRef, write_texts
from guard.registry.cards import ModelRegistry
from guard.settings import Settings
from guard.upstream import UpstreamPool, UpstreamReply, forward
from guard.upstream.forward import request_headers
from guard.upstream.sse import EventSplitter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Services:
    """The long-lived parts the pipeline uses; built once in the app's lifespan."""

    settings: Settings
    models: ModelRegistry
    upstreams: UpstreamPool
    detectors: DetectorRunner
    policy: PolicyEngine


async def run_exchange(inbound: Inbound, adapter: Adapter, services: Services) -> Outbound:
    ex = open_exchange(inbound, adapter, services)
    await guard_input(ex, services)
    reply = await send_upstream(ex, services)
    if reply.status >= 400 or not _is_stream_reply(ex, reply):
        return await buffered_reply(ex, reply, services)
    return stream_reply(ex, reply, services)


def open_exchange(inbound: Inbound, adapter: Adapter, services: Services) -> Exchange:
    body = parse_json(inbound.body)
    model = services.models.lookup(body.get("model"))
    if adapter.route.startswith("/api/") and services.upstreams[model.upstream].kind != "ollama":
        raise BadRequest(
            f"The model '{model.name}' is served by an OpenAI-compatible server; use the /v1 routes"
        )
    stream = adapter.is_stream(body)
    return Exchange(inbound, adapter, model, body, stream)


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON ({_reason(exc)})") from None
    except RecursionError:
        raise BadRequest("The request body nests too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    return body


async def guard_input(ex: Exchange, services: Services) -> None:
    started = time.perf_counter()
    refs = ex.adapter.request_texts(ex.body)
    ex.rewritten = await enforce(ex, Direction.INPUT, ex.body, refs, services)
    ex.mark("guard_in", started)


async def enforce(
    ex: Exchange, direction: Direction, body: Any, refs: list[TextRef], services: Services
) -> bool:
    """Scan the texts, then block (raise) or write the redactions into ``body``.
    Returns whether the body changed."""
    decision = await decide(ex, direction, [r.text for r in refs], services)
    if decision.blocks:
        raise PolicyBlocked(decision.message or "Blocked by policy", status=decision.status)
    if not decision.redactions:
        return False
    write_texts(body, refs, apply_redactions([r.text for r in refs], decision.redactions))
    return True


async def decide(
    ex: Exchange, direction: Direction, texts: Sequence[str], services: Services
) -> Decision:
    ctx = ex.scan_context(direction)
    scan = await services.detectors.scan(texts, ctx)
    decision = services.policy.decide(scan, ctx)
    ex.scans[direction] = scan
    if decision.action > ex.decisions[direction].action:
        ex.decisions[direction] = decision
    return decision


async def send_upstream(ex: Exchange, services: Services) -> UpstreamReply:
    upstream = services.upstreams[ex.model.upstream]
    content = ex.inbound.body
    if ex.rewritten or ex.model.upstream_model != ex.model.name:
        ex.body["model"] = ex.model.upstream_model
        content = msgspec.json.encode(ex.body)
    path = ex.adapter.route + (f"?{ex.inbound.query}" if ex.inbound.query else "")
    headers = request_headers(ex.inbound.headers, upstream)
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("content-type", "application/json"))
    reply = await forward(upstream, "POST", path, headers, content)
    ex.timings["upstream_first_byte"] = reply.first_byte_s
    return reply


def _is_stream_reply(ex: Exchange, reply: UpstreamReply) -> bool:
    if not ex.stream:
        return False
    wanted = "text/event-stream" if ex.adapter.stream_format == "sse" else "ndjson"
    return wanted in reply.content_type


async def buffered_reply(ex: Exchange, reply: UpstreamReply, services: Services) -> Outbound:
    raw = await reply.read()
    ex.timings["upstream_total"] = time.perf_counter() - ex.started
    if reply.status < 400 and services.detectors.active(Direction.OUTPUT):
        raw = await guard_output(ex, raw, services)
    return Outbound(reply.status, reply.headers, raw)


async def guard_output(ex: Exchange, raw: bytes, services: Services) -> bytes:
    try:
        body = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        # An answer guard cannot read is not passed on as if it had been checked.
        raise UpstreamError("The upstream's answer was not valid JSON") from None
    refs = ex.adapter.response_texts(body)
    if await enforce(ex, Direction.OUTPUT, body, refs, services):
        return msgspec.json.encode(body)
    return raw


def stream_reply(ex: Exchange, reply: UpstreamReply, services: Services) -> Outbound:
    if services.detectors.active(Direction.OUTPUT):
        chunks = _guarded_stream(ex, reply, services)
    else:
        chunks = _relay_stream(ex, reply)
    return Outbound(reply.status, reply.headers, stream=chunks, on_close=reply.aclose)


async def _relay_stream(ex: Exchange, reply: UpstreamReply) -> AsyncGenerator[bytes, None]:
    """No output detectors: bytes go on as they arrive."""
    try:
        async for chunk in reply.iter_bytes():
            yield chunk
    except UpstreamError as exc:
        log.warning("stream %s ended early: %s", ex.id, exc.message)
    finally:
        await reply.aclose()


async def _guarded_stream(
    ex: Exchange, reply: UpstreamReply, services: Services
) -> AsyncGenerator[bytes, None]:
    async def scan(texts: list[str]) -> Decision:
        return await decide(ex, Direction.OUTPUT, texts, services)

    guard = StreamGuard(ex.adapter, scan, services.settings.scan.stream_window_chars)
    splitter = EventSplitter(ex.adapter.stream_format)
    try:
        async for chunk in reply.iter_bytes():
            for event in splitter.feed(chunk):
                for out in await guard.feed(event):
                    yield out
                if guard.stopped:
                    return
        for out in await guard.finish(splitter.flush()):
            yield out
    except UpstreamError as exc:
        log.warning("stream %s ended early: %s", ex.id, exc.message)
    finally:
        await reply.aclose()


def _reason(exc: msgspec.DecodeError) -> str:
    # msgspec names the position, never the content.
    return str(exc).rstrip(".").lower()
