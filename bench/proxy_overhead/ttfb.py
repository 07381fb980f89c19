"""Time to first byte over one kept-alive connection per target, on plain sockets.

TTFB is the time from the request being sent to the first byte of the body arriving
(after the status line, the headers and, when chunked, the chunk-size line): for a
stream, the first SSE event. The rest of each response is read so the connection stays
usable.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass

from bench.proxy_overhead.load import PATH
from bench.proxy_overhead.procs import LOOPBACK

_RECV = 65536
_MAX_RECVS = 10_000
_MAX_CHUNKS = 10_000
_TIMEOUT_S = 10.0

_STREAM = {
    "model": "bench-stream",
    "stream": True,
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say hello in one short sentence, please."},
    ],
    "max_tokens": 32,
}
STREAM_BODY = json.dumps(_STREAM, separators=(",", ":")).encode()
# The same request asking the mock for its chunks without gaps: the proxy never rests.
GAPLESS_STREAM_BODY = json.dumps({**_STREAM, "bench_gap_ms": 0}, separators=(",", ":")).encode()


class ProtocolError(RuntimeError):
    pass


@dataclass(frozen=True)
class Timing:
    ttfb_s: float
    total_s: float
    body: bytes


class KeepAliveClient:
    def __init__(self, port: int, body: bytes = STREAM_BODY) -> None:
        self._port = port
        self._sock = socket.create_connection((LOOPBACK, port), timeout=_TIMEOUT_S)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""
        self._request = (
            f"POST {PATH} HTTP/1.1\r\n"
            f"Host: {LOOPBACK}:{port}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    def close(self) -> None:
        self._sock.close()

    def _recv(self) -> None:
        data = self._sock.recv(_RECV)
        if not data:
            raise ProtocolError(f"port {self._port} closed the connection")
        self._buf += data

    def _until(self, marker: bytes) -> bytes:
        for _ in range(_MAX_RECVS):
            index = self._buf.find(marker)
            if index >= 0:
                head, self._buf = self._buf[:index], self._buf[index + len(marker) :]
                return head
            self._recv()
        raise ProtocolError("response too long")

    def _take(self, size: int) -> bytes:
        for _ in range(_MAX_RECVS):
            if len(self._buf) >= size:
                data, self._buf = self._buf[:size], self._buf[size:]
                return data
            self._recv()
        raise ProtocolError("response too long")

    def _first_data_byte(self) -> float:
        for _ in range(_MAX_RECVS):
            if self._buf:
                return time.perf_counter()
            self._recv()
        raise ProtocolError("no body")

    def request(self) -> Timing:
        started = time.perf_counter()
        self._sock.sendall(self._request)
        head = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = head[0].split(" ", 2)
        if len(status) < 2 or status[1] != "200":
            raise ProtocolError(f"port {self._port} answered {head[0]!r}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        if "chunked" in headers.get("transfer-encoding", ""):
            body, first = self._chunked()
        elif "content-length" in headers:
            first = self._first_data_byte()
            body = self._take(int(headers["content-length"]))
        else:
            raise ProtocolError(f"port {self._port}: neither chunked nor a content-length")
        return Timing(first - started, time.perf_counter() - started, body)

    def _chunked(self) -> tuple[bytes, float]:
        parts: list[bytes] = []
        first = 0.0
        for _ in range(_MAX_CHUNKS):
            size = int(self._until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                self._until(b"\r\n")  # no trailers from any of our servers
                return b"".join(parts), first
            if not first:
                first = self._first_data_byte()
            parts.append(self._take(size))
            self._until(b"\r\n")
        raise ProtocolError("too many chunks")


def check_stream(body: bytes) -> None:
    """A streamed body must be whole SSE events ending in [DONE], as the mock sends them."""
    events = body.split(b"\n\n")
    if not body.endswith(b"data: [DONE]\n\n") or not events[0].startswith(b"data: {"):
        raise ProtocolError(f"unexpected stream body: {body[:200]!r}...{body[-60:]!r}")
