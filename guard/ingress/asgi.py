"""Lean ASGI pieces for the hot path: a streaming response, disconnect handling, and
the refusal of ambiguous paths before routing.

Litestar's own streaming response runs an anyio task group with two tasks per
response; on a proxy that streams most answers, one watcher task is enough.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)

from guard.errors import openai_error_body


@dataclass(slots=True)
class Client:
    gone: bool = False


@asynccontextmanager
async def cancelled_on_disconnect(receive: Receive) -> AsyncIterator[Client]:
    """Run the body until it ends or the client disconnects, whichever comes first.

    The request body must have been read: the next ASGI message is then the
    disconnect. On disconnect the body is cancelled (closing the upstream request it
    awaits) and ``client.gone`` is set; any other cancellation propagates.
    """
    client = Client()
    task = asyncio.current_task()
    assert task is not None  # noqa: S101  # ASGI apps always run in a task

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        client.gone = True
        task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        yield client
    except asyncio.CancelledError:
        if not client.gone:
            raise
        task.uncancel()
    finally:
        watcher.cancel()


@dataclass(slots=True)
class StreamingResponse:
    """Sends each chunk as it arrives; a client that leaves stops the iteration."""

    status: int
    headers: list[tuple[str, str]]
    chunks: AsyncGenerator[bytes, None]
    on_close: Callable[[], Awaitable[None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers]
        try:
            await send({"type": "http.response.start", "status": self.status, "headers": headers})
            async with cancelled_on_disconnect(receive):
                async for chunk in self.chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await self.chunks.aclose()
            if self.on_close is not None:
                await self.on_close()


def refuse_ambiguous_paths(app: ASGIApp) -> ASGIApp:
    """Refuse, before routing, a path that two servers could read as different paths:
    encoded slashes or backslashes, dot segments, empty segments, NUL. guard routes
    on the decoded path and forwards its own canonical route, so such a path could not
    reach the model server as another route; it is refused all the same, as gateways
    do, so that no proxy before or after guard reads it otherwise."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and ambiguous_path(scope.get("raw_path") or b""):
            body = openai_error_body(
                "The request path is ambiguous (encoded slashes, dot or empty segments)",
                "invalid_request_error",
                "invalid_path",
                None,
            )
            start: HTTPResponseStartEvent = {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
            end: HTTPResponseBodyEvent = {
                "type": "http.response.body",
                "body": body,
                "more_body": False,
            }
            await send(start)
            await send(end)
            return
        await app(scope, receive, send)

    return middleware


_AMBIGUOUS = (b"%2f", b"%5c", b"%00", b"\\", b"\x00", b"//")


def ambiguous_path(raw: bytes) -> bool:
    lowered = raw.lower()
    if any(mark in lowered for mark in _AMBIGUOUS):
        return True
    return any(seg in {b".", b".."} for seg in unquote_to_bytes(raw).split(b"/"))
