"""What every route shares: reading an Inbound, writing an Outbound, the services."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import ASGIApp

from guard.errors import BodyTooLarge
from guard.pipeline.context import Inbound, Outbound
from guard.pipeline.flow import Services, run_exchange
from guard.protocols import ADAPTERS

HTTPRequest = Request[Any, Any, State]


def services_of(request: HTTPRequest) -> Services:
    services: Services = request.app.state.services
    return services


async def read_inbound(request: HTTPRequest) -> Inbound:
    limit = services_of(request).settings.server.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"The request body is over the limit of {limit} bytes")
    return Inbound(
        method=request.method,
        path=request.url.path,
        query=request.scope["query_string"].decode("latin-1"),
        headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]],
        body=await request.body(),
        client=request.client.host if request.client else "",
    )


def to_asgi(out: Outbound) -> ASGIResponse:
    if out.stream is None:
        return ASGIResponse(body=out.body, status_code=out.status, headers=out.headers)
    return ASGIStreamingResponse(
        iterator=out.stream,
        status_code=out.status,
        headers=out.headers,  # type: ignore[arg-type]  # a list keeps repeated headers
        background=BackgroundTask(out.on_close) if out.on_close else None,
    )


async def guarded(request: HTTPRequest, route: str) -> ASGIApp:
    """Every guarded route. A client that leaves before the answer starts cancels the
    exchange, and with it the upstream request (a long generation stops at once)."""
    inbound = await read_inbound(request)
    task = asyncio.current_task()
    assert task is not None  # noqa: S101  # route handlers always run in a task
    watcher = asyncio.get_running_loop().create_task(_cancel_when_gone(request, task))
    try:
        return to_asgi(await run_exchange(inbound, ADAPTERS[route], services_of(request)))
    except asyncio.CancelledError:
        if not watcher.done() or watcher.cancelled():
            raise  # cancelled by something else: the server is shutting down
        task.uncancel()
        return ASGIResponse(body=b"", status_code=499)  # nobody is listening any more
    finally:
        watcher.cancel()


async def _cancel_when_gone(request: HTTPRequest, task: asyncio.Task[object]) -> None:
    # With the body read, the next ASGI message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
    task.cancel()
