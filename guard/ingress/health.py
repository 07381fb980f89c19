"""/healthz: the process is up. /readyz: every upstream answers, with details."""

from __future__ import annotations

import asyncio
import time

from litestar import get
from litestar.response import Response

from guard.audit.writer import AuditWriter
from guard.errors import GuardError
from guard.ingress.common import HTTPRequest, services_of
from guard.upstream import Upstream, forward

_PROBE_PATH = {"openai": "/v1/models", "ollama": "/api/version"}
_PROBE_TIMEOUT_S = 2.0


@get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz")
async def readyz(request: HTTPRequest) -> Response[dict[str, object]]:
    services = services_of(request)
    upstreams = list(services.upstreams)
    probes = await asyncio.gather(*(_probe(u) for u in upstreams))
    audit = _audit_state(request.app.state.recorder)
    ready = all(p["reachable"] for p in probes) and bool(audit["accepting"])
    body: dict[str, object] = {
        "status": "ready" if ready else "unavailable",
        "upstreams": dict(zip((u.name for u in upstreams), probes, strict=True)),
        "detectors": services.policies.current.detector_names(),
        "detector_details": services.policies.current.detector_info(),
        "pseudonyms": {"store": services.settings.pseudonyms.store},
        "policy": services.policies.summary(),
        "audit": audit,
    }
    return Response(body, status_code=200 if ready else 503)


def _audit_state(recorder: AuditWriter | None) -> dict[str, object]:
    if recorder is None:
        return {"enabled": False, "accepting": True}
    stats = recorder.stats
    fail_open = recorder.settings.on_spool_failure == "fail_open"
    return {
        "enabled": True,
        "accepting": not recorder.broken or fail_open,
        "database": "up" if recorder.db_up else "unreachable",
        "spool_writable": not recorder.broken,
        "queued": recorder.queued,
        "spooled_bytes": recorder.spooled_bytes,
        "written": stats.written,
        "spooled": stats.spooled,
        "replayed": stats.replayed,
        "lost": stats.lost,
        "dead_letters": stats.dead_letters,
    }


async def _probe(upstream: Upstream) -> dict[str, object]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            reply = await forward(
                upstream,
                "GET",
                _PROBE_PATH[upstream.kind],
                list(upstream.credentials.items()),
                None,
            )
            await reply.read()
    except (GuardError, TimeoutError) as exc:
        error = getattr(exc, "message", None) or f"no answer within {_PROBE_TIMEOUT_S} s"
        return {"reachable": False, "error": error}
    return {
        "reachable": reply.status < 500,
        "status": reply.status,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }


ROUTES = [healthz, readyz]
