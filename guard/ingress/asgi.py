"""Lean ASGI pieces for the hot path: a streaming response and disconnect handling.

Litestar's own streaming response runs an anyio task group with two tasks per
response; on a proxy that streams most answers, one watcher task is enough.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from litestar.types import Receive, Scope, Send


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
