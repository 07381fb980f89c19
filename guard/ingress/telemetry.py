"""GET /metrics: Prometheus text format. Counts and timings only, never content."""

from __future__ import annotations

from litestar import Response, get

from guard.errors import NotFound
from guard.ingress.common import HTTPRequest
from guard.telemetry.metrics import CONTENT_TYPE


@get("/metrics", include_in_schema=False)
async def metrics(request: HTTPRequest) -> Response[bytes]:
    registry = request.app.state.metrics
    if registry is None:
        raise NotFound("Metrics are off (telemetry.metrics.enabled: false)")
    return Response(registry.render(), media_type=CONTENT_TYPE)


ROUTES = [metrics]
