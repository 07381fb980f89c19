"""Paths the settings explicitly allow to pass uninspected. Nothing else passes."""

from __future__ import annotations

from litestar import route
from litestar.handlers import HTTPRouteHandler
from litestar.types import ASGIApp

from guard.ingress.common import HTTPRequest, read_inbound, services_of, to_asgi
from guard.pipeline.context import Outbound
from guard.settings import PassthroughRoute
from guard.upstream import forward
from guard.upstream.forward import request_headers


def passthrough_routes(allowed: list[PassthroughRoute]) -> list[HTTPRouteHandler]:
    return [_handler(entry) for entry in allowed]


def _handler(entry: PassthroughRoute) -> HTTPRouteHandler:
    async def relay(request: HTTPRequest) -> ASGIApp:
        inbound = await read_inbound(request)
        upstream = services_of(request).upstreams[entry.upstream]
        path = entry.path + (f"?{inbound.query}" if inbound.query else "")
        headers = request_headers(inbound.headers, upstream)
        reply = await forward(upstream, inbound.method, path, headers, inbound.body or None)
        return to_asgi(
            Outbound(reply.status, reply.headers, stream=reply.iter_bytes(), on_close=reply.aclose)
        )

    return route(
        entry.path,
        http_method=list(entry.methods),
        name=f"passthrough:{entry.path}",
        include_in_schema=False,
    )(relay)
