"""Three minimal forwarders that differ only in their HTTP client, to keep that choice measured.

Each is a tiny Litestar app with one route, POST /v1/chat/completions: it reads the body,
POSTs it to the mock upstream (content-type application/json) and answers with the
upstream's body and status. The bench runs each on uvicorn exactly as ``guard serve`` runs
guard (uvloop, httptools, one worker):

    BENCH_UPSTREAM_URL=http://127.0.0.1:PORT uvicorn --factory \\
        bench.proxy_overhead.clients:aiohttp_app --loop uvloop --http httptools ...

- ``aiohttp_app`` (client-aiohttp): one aiohttp.ClientSession, what guard uses directly;
- ``httpx_app`` (client-httpx): httpx.AsyncClient with httpx's own transport;
- ``httpx_aiohttp_app`` (client-httpx-aiohttp): httpx.AsyncClient over aiohttp through
  httpx-aiohttp's transport (guard's former upstream path).

httpx and httpx-aiohttp come with the project's bench extra; only this module imports them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import aiohttp
import httpx
import httpx_aiohttp
from litestar import Litestar, Request, post
from litestar.response.base import ASGIResponse

UPSTREAM_ENV = "BENCH_UPSTREAM_URL"
PATH = "/v1/chat/completions"
POOL = 512
_HEADERS = {"content-type": "application/json"}

# POST one body upstream; the upstream's status and body.
Send = Callable[[bytes], Awaitable[tuple[int, bytes]]]
Opener = Callable[[str], AbstractAsyncContextManager[Send]]


@asynccontextmanager
async def _open_aiohttp(url: str) -> AsyncIterator[Send]:
    connector = aiohttp.TCPConnector(limit=POOL)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:

        async def send(body: bytes) -> tuple[int, bytes]:
            async with session.post(url, data=body, headers=_HEADERS) as reply:
                return reply.status, await reply.read()

        yield send


def _httpx_send(client: httpx.AsyncClient, url: str) -> Send:
    async def send(body: bytes) -> tuple[int, bytes]:
        reply = await client.post(url, content=body, headers=_HEADERS)
        return reply.status_code, reply.content

    return send


@asynccontextmanager
async def _open_httpx(url: str) -> AsyncIterator[Send]:
    limits = httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL)
    async with httpx.AsyncClient(limits=limits) as client:
        yield _httpx_send(client, url)


@asynccontextmanager
async def _open_httpx_aiohttp(url: str) -> AsyncIterator[Send]:
    transport = httpx_aiohttp.AiohttpTransport(
        client=lambda: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=POOL))
    )
    async with httpx.AsyncClient(transport=transport) as client:
        yield _httpx_send(client, url)


def _app(opener: Opener) -> Litestar:
    url = os.environ[UPSTREAM_ENV].rstrip("/") + PATH
    clients: dict[str, Send] = {}

    @asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        async with opener(url) as send:
            clients["send"] = send
            yield

    @post(PATH)
    async def chat(request: Request) -> ASGIResponse:
        status, body = await clients["send"](await request.body())
        return ASGIResponse(body=body, status_code=status, media_type="application/json")

    return Litestar([chat], lifespan=[lifespan], logging_config=None)


def aiohttp_app() -> Litestar:
    return _app(_open_aiohttp)


def httpx_app() -> Litestar:
    return _app(_open_httpx)


def httpx_aiohttp_app() -> Litestar:
    return _app(_open_httpx_aiohttp)
