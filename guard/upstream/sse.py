"""Split a byte stream into whole events: SSE events or NDJSON lines, raw bytes kept.

Upstream chunks do not align with events; guard parses an event only once it is
complete and passes every event on byte for byte unless a guard rewrites it.
"""

from __future__ import annotations

import re
from typing import Literal

_SSE_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class EventSplitter:
    def __init__(self, fmt: Literal["sse", "ndjson"]) -> None:
        self._pattern = _SSE_END if fmt == "sse" else re.compile(rb"\n")
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Complete events (with their terminators) that ``chunk`` finished."""
        data = self._buffer + chunk
        events = []
        start = 0
        for match in self._pattern.finditer(data):
            events.append(data[start : match.end()])
            start = match.end()
        self._buffer = data[start:]
        return events

    def flush(self) -> bytes:
        """Whatever is left when the stream ends (an unterminated last event)."""
        rest, self._buffer = self._buffer, b""
        return rest


def sse_data(event: bytes) -> bytes | None:
    """The event's data field (data lines joined by newlines), or None if it has none."""
    lines = [line for line in event.splitlines() if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[6:] if line.startswith(b"data: ") else line[5:] for line in lines)


def sse_event(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


DONE = b"[DONE]"
