"""Paths the settings explicitly allow to pass uninspected. Nothing else passes."""

from __future__ import annotations

from litestar import route
from litestar.handlers import HTTPRouteHandler
from litestar.types import ASGIApp

from guard.ingress.common import HTTPRequest, read_inbound, services_of, to_asgi
from guard.pipeline.flow import run_passthrough
from guard.settings import PassthroughRoute


def passthrough_routes(allowed: list[PassthroughRoute]) -> list[HTTPRouteHandler]:
    return [_handler(entry) for entry in allowed]


def _handler(entry: PassthroughRoute) -> HTTPRouteHandler:
    async def relay(request: HTTPRequest) -> ASGIApp:
        inbound = await read_inbound(request)
        return to_asgi(await run_passthrough(inbound, entry.upstream, services_of(request)))

    return route(
        entry.path,
        http_method=list(entry.methods),
        name=f"passthrough:{entry.path}",
        include_in_schema=False,
    )(relay)
