"""Send one request upstream and hand back the open reply; translate transport errors."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import aiohttp

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
# The ASGI server writes its own date, server and framing headers; bodies arrive decoded.
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
    return [*kept, *injected.items(), ("accept-encoding", "identity")]


@dataclass(slots=True)
class UpstreamReply:
    """An upstream response whose body has not been read yet."""

    upstream: str
    response: aiohttp.ClientResponse

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def headers(self) -> list[tuple[str, str]]:
        raw = ((k.decode("latin-1"), v.decode("latin-1")) for k, v in self.response.raw_headers)
        return _keep(raw, _RESPONSE_DROP)

    @property
    def content_type(self) -> str:
        return self.response.headers.get("content-type", "")

    async def read(self) -> bytes:
        try:
            with map_upstream_errors(self.upstream):
                return await self.response.read()
        finally:
            self.response.release()

    async def iter_bytes(self) -> AsyncGenerator[bytes, None]:
        """Chunks as they arrive, never waiting to fill a buffer."""
        with map_upstream_errors(self.upstream):
            async for chunk in self.response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        """Return the connection to the pool if the body was read, else close it (this is
        what cancels the upstream's work when a client leaves mid-stream)."""
        if self.response.content.at_eof():
            self.response.release()
        else:
            self.response.close()


async def forward(
    upstream: Upstream,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    content: bytes | None,
) -> UpstreamReply:
    """Send and return as soon as the status line and headers are in."""
    with map_upstream_errors(upstream.name):
        response = await upstream.session.request(
            method,
            upstream.root + path,
            headers=headers,
            data=content,
            allow_redirects=False,
        )
    return UpstreamReply(upstream.name, response)


@contextmanager
def map_upstream_errors(name: str) -> Iterator[None]:
    """aiohttp's errors become UpstreamTimeout or UpstreamUnavailable, here and only here."""
    try:
        yield
    except TimeoutError:  # aiohttp's timeout errors are TimeoutErrors too
        raise UpstreamTimeout(f"The upstream '{name}' timed out") from None
    except aiohttp.ClientConnectorError:
        raise UpstreamUnavailable(f"The upstream '{name}' refused the connection") from None
    except aiohttp.ClientError:
        raise UpstreamUnavailable(
            f"The upstream '{name}' closed the connection unexpectedly"
        ) from None
