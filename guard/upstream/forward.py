"""Send one request upstream and hand back the open reply; translate transport errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import aiohttp
import httpx

from guard.errors import UpstreamTimeout, UpstreamUnavailable
from guard.upstream.client import Upstream

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# The client's Authorization is for guard, never for the model server; guard asks
# for identity encoding because it must read what it forwards.
_REQUEST_DROP = HOP_BY_HOP | {
    "host",
    "content-length",
    "authorization",
    "accept-encoding",
    "expect",
}
# The ASGI server writes its own date, server and framing headers.
_RESPONSE_DROP = HOP_BY_HOP | {"content-length", "content-encoding", "date", "server"}


def _keep(headers: Iterable[tuple[str, str]], drop: frozenset[str]) -> list[tuple[str, str]]:
    headers = list(headers)
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
    }
    return [(n, v) for n, v in headers if n.lower() not in drop and n.lower() not in named]


def request_headers(client: Iterable[tuple[str, str]], upstream: Upstream) -> list[tuple[str, str]]:
    injected = upstream.credentials
    kept = [(n, v) for n, v in _keep(client, _REQUEST_DROP) if n.lower() not in injected]
    return [*kept, *upstream.credentials.items(), ("accept-encoding", "identity")]


@dataclass(slots=True)
class UpstreamReply:
    """An upstream response whose body has not been read yet."""

    upstream: str
    response: httpx.Response
    first_byte_s: float

    @property
    def status(self) -> int:
        return self.response.status_code

    @property
    def headers(self) -> list[tuple[str, str]]:
        return _keep(self.response.headers.multi_items(), _RESPONSE_DROP)

    @property
    def content_type(self) -> str:
        return str(self.response.headers.get("content-type", ""))

    async def read(self) -> bytes:
        try:
            with map_upstream_errors(self.upstream):
                return await self.response.aread()
        finally:
            await self.response.aclose()

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        with map_upstream_errors(self.upstream):
            async for chunk in self.response.aiter_bytes():
                yield chunk

    async def aclose(self) -> None:
        await self.response.aclose()


async def forward(
    upstream: Upstream,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    content: bytes | None,
) -> UpstreamReply:
    """Send and return as soon as the status line and headers are in."""
    request = upstream.client.build_request(
        method, upstream.root + path, headers=headers, content=content
    )
    started = time.perf_counter()
    with map_upstream_errors(upstream.name):
        response = await upstream.client.send(request, stream=True)
    return UpstreamReply(upstream.name, response, time.perf_counter() - started)


_TIMEOUTS = (httpx.TimeoutException, aiohttp.ServerTimeoutError, asyncio.TimeoutError)
_AIOHTTP_UNAVAILABLE = (
    aiohttp.ClientConnectorError,
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientOSError,
    aiohttp.ClientPayloadError,
)


@contextmanager
def map_upstream_errors(name: str) -> Iterator[None]:
    """httpx (and, under it, aiohttp) errors become UpstreamTimeout or UpstreamUnavailable.

    The aiohttp transport files every connection error under ConnectTimeout, so the
    original aiohttp error, kept as the cause, decides first.
    """
    try:
        yield
    except (TimeoutError, httpx.TransportError, aiohttp.ClientError) as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, _AIOHTTP_UNAVAILABLE) and not isinstance(cause, _TIMEOUTS):
            raise UpstreamUnavailable(_unavailable(name, cause)) from None
        if isinstance(cause, _TIMEOUTS) or isinstance(exc, httpx.TimeoutException):
            raise UpstreamTimeout(f"The upstream '{name}' timed out") from None
        raise UpstreamUnavailable(_unavailable(name, cause)) from None


def _unavailable(name: str, cause: BaseException) -> str:
    if isinstance(cause, aiohttp.ClientConnectorError | httpx.ConnectError):
        return f"The upstream '{name}' refused the connection"
    return f"The upstream '{name}' closed the connection unexpectedly"
