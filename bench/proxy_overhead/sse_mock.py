"""A minimal streaming (SSE) chat-completion upstream on raw asyncio, for the TTFB test.

Every POST gets the SSE headers and the first ``data:`` event in one write, then
``--chunks`` more events ``--gap-ms`` apart (or ``bench_gap_ms`` apart when the request
body names it), then ``data: [DONE]``. Keep-alive,
HTTP/1.1, Content-Length request bodies only (what guard, nginx and the bench send).

Run: ``python -m bench.proxy_overhead.sse_mock --port 18091``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from typing import cast

_HEAD_END = b"\r\n\r\n"
_MAX_HEAD = 64 * 1024
_HEADERS = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream\r\n"
    b"cache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n"
    b"\r\n"
)


def _event(index: int, content: str, finish: str | None = None) -> bytes:
    delta: dict[str, str] = {"content": content} if content else {}
    if index == 0:
        delta = {"role": "assistant", "content": content}
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench-stream",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class SSEProtocol(asyncio.Protocol):
    def __init__(self, chunks: int, gap_s: float) -> None:
        self._chunks = chunks
        self._gap_s = gap_s
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._busy = False
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._task is not None:
            self._task.cancel()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._maybe_start()

    def _maybe_start(self) -> None:
        if self._busy or self._transport is None:
            return
        end = self._buffer.find(_HEAD_END)
        if end < 0:
            if len(self._buffer) > _MAX_HEAD:
                self._transport.close()
            return
        length = 0
        for line in self._buffer[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        total = end + len(_HEAD_END) + length
        if len(self._buffer) < total:
            return
        body, self._buffer = self._buffer[end + len(_HEAD_END) : total], self._buffer[total:]
        gap_s = self._gap_s
        if b"bench_gap_ms" in body:
            gap_s = float(json.loads(body)["bench_gap_ms"]) / 1000
        self._busy = True
        self._task = asyncio.get_running_loop().create_task(self._respond(gap_s))

    async def _respond(self, gap_s: float) -> None:
        transport = self._transport
        if transport is None:
            return
        transport.write(_HEADERS + _chunk(_event(0, "Hello")))
        for i in range(1, self._chunks + 1):
            await asyncio.sleep(gap_s)
            if transport.is_closing():
                return
            last = i == self._chunks
            event = _event(i, "", "stop") if last else _event(i, f" word{i}")
            transport.write(_chunk(event))
        transport.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        self._busy = False
        self._task = None
        self._maybe_start()


async def serve(host: str, port: int, chunks: int, gap_s: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SSEProtocol(chunks, gap_s), host, port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=3, help="events after the first")
    parser.add_argument("--gap-ms", type=float, default=20.0)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # plain asyncio is fine, just a little slower
        runner = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.host, args.port, args.chunks, args.gap_ms / 1000))


if __name__ == "__main__":
    main()
