"""Output guarding on a stream: scan the answer's text in windows as it arrives.

Events carrying answer text are held until the window they belong to has been
scanned (at a sentence end, every ``window_chars`` characters, and at the end of
the stream), then released unchanged, rewritten with the decision's redactions,
or dropped when the decision blocks: the stream then ends with a final chunk whose
finish reason is ``content_filter``. When no rule in scope could change or stop
the text (``hold=False``: flag rules only), events go on as they arrive and the
windows are still scanned, for the audit trail. Events without answer text (role, usage,
finish) keep their place in the order. Every other field passes unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from guard.policy.actions import apply_redactions
from guard.policy.decision import Action, Decision, Redaction
from guard.protocols.base import Adapter, TextRef, write_texts
from guard.upstream.sse import DONE, sse_data, sse_event

Scan = Callable[[list[str]], Awaitable[Decision]]
_SENTENCE_END = re.compile("[.!?;:\n\u3002\uff01\uff1f]")  # with CJK full stops


@dataclass(slots=True)
class _Held:
    raw: bytes
    obj: Any = None
    refs: list[TextRef] = field(default_factory=list)
    redactions: list[Redaction] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Segment:
    event: int
    ref: int
    start: int
    end: int


class StreamGuard:
    def __init__(self, adapter: Adapter, scan: Scan, window_chars: int, hold: bool = True) -> None:
        self._adapter = adapter
        self._hold = hold
        self._sse = adapter.stream_format == "sse"
        self._scan = scan
        self._window = window_chars
        self._held: list[_Held] = []
        self._pending: dict[Hashable, str] = {}
        self._segments: dict[Hashable, list[_Segment]] = {}
        self._last: Any = None
        self._choices: set[int] = set()
        self.stopped = False

    async def feed(self, raw: bytes) -> list[bytes]:
        """Events to send now (possibly none) after ``raw`` arrived."""
        obj = self._parse(raw)
        refs = self._adapter.chunk_texts(obj) if obj is not None else []
        held = _Held(raw, obj, refs)
        self._held.append(held)
        boundary = False
        for index, ref in enumerate(refs):
            key = ref.stream_key
            start = len(self._pending.get(key, ""))
            self._pending[key] = self._pending.get(key, "") + ref.text
            self._segments.setdefault(key, []).append(
                _Segment(len(self._held) - 1, index, start, start + len(ref.text))
            )
            boundary = boundary or bool(_SENTENCE_END.search(ref.text))
            if isinstance(key, tuple) and isinstance(key[0], int):
                self._choices.add(key[0])
        if not self._pending:
            return self._release()
        if boundary or sum(map(len, self._pending.values())) >= self._window:
            return await self._check()
        return [] if self._hold else self._release()

    async def finish(self, rest: bytes = b"") -> list[bytes]:
        """The stream ended: scan and release everything still held."""
        out = await self.feed(rest) if rest.strip() and not self.stopped else []
        if self.stopped:
            return out
        return out + (await self._check() if self._pending else self._release())

    def _parse(self, raw: bytes) -> Any:
        data = sse_data(raw) if self._sse else raw.strip()
        if not data or data == DONE:
            return None
        try:
            obj = msgspec.json.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return None
        self._last = obj
        return obj

    async def _check(self) -> list[bytes]:
        keys = list(self._pending)
        decision = await self._scan([self._pending[key] for key in keys])
        if decision.action is Action.BLOCK:
            return self._stop()
        if decision.redactions and self._hold:
            self._place(keys, decision.redactions)
        self._pending.clear()
        self._segments.clear()
        return self._release()

    def _place(self, keys: list[Hashable], redactions: tuple[Redaction, ...]) -> None:
        """Map redactions over the window back onto the held events they touch."""
        for red in redactions:
            for seg in self._segments[keys[red.text_index]]:
                lo, hi = max(red.start, seg.start), min(red.end, seg.end)
                if lo >= hi and not (seg.start <= red.start < seg.end):
                    continue
                replacement = red.replacement if seg.start <= red.start < seg.end else ""
                held = self._held[seg.event]
                held.redactions.append(
                    Redaction(seg.ref, lo - seg.start, hi - seg.start, replacement)
                )

    def _release(self) -> list[bytes]:
        out = [self._encode(held) for held in self._held]
        self._held.clear()
        return out

    def _encode(self, held: _Held) -> bytes:
        if not held.redactions:
            return held.raw
        texts = apply_redactions([ref.text for ref in held.refs], held.redactions)
        write_texts(held.obj, held.refs, texts)
        return self._frame(held.obj)

    def _stop(self) -> list[bytes]:
        self.stopped = True
        self._held.clear()
        final = self._adapter.filtered_final_chunk(self._last, sorted(self._choices) or [0])
        if self._sse:
            return [self._frame(final), sse_event(DONE)]
        return [self._frame(final)]

    def _frame(self, obj: Any) -> bytes:
        data = msgspec.json.encode(obj)
        return sse_event(data) if self._sse else data + b"\n"
