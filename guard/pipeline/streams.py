"""Output guarding on a stream: scan the answer as it arrives, hold back only what
a rule could still change.

Each parsed event's text deltas join one running text per choice (its stream
key). What guard may release depends on the rules in scope:

* No rule could change or stop the text (``hold=False``, flag rules only):
  events go on as they arrive; the text is scanned in windows (sentence ends,
  every ``window_chars`` characters, the end) for the audit trail.
* The detectors in play can say how much of a text's tail may still become a
  value (``holdback``: a half-written email, card number or name; the pii
  detector can): at every event the unreleased text is scanned and everything
  but that tail is released at once, redacted as decided. An event whose text
  is cut is sent with the part that may go, and its remainder follows later as
  a copy of it (an event that finishes its choice is never cut).
* Otherwise (a classifier must see the whole window): events are held until
  their window is scanned, then released.

In every mode, placeholders of the exchange's pseudonyms are restored to their
values, and a tail that may still grow into one is held until it is whole. The
last released characters are kept as context for the next scan (context words
before a value), and only findings in the text being released count, so none is
reported twice. A block ends the stream with a final chunk whose finish reason
is ``content_filter``. Events without answer text (role, usage, finish) keep
their place in the order; every other field passes unchanged.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from guard.detectors.base import Finding
from guard.detectors.runner import ScanResult
from guard.policy.decision import Action, Decision, Redaction
from guard.policy.pseudonyms import Pseudonyms
from guard.protocols.base import Adapter, TextRef, write_texts
from guard.upstream.sse import DONE, sse_data, sse_event

Select = Callable[[ScanResult], ScanResult]
Scan = Callable[[list[str], Select | None], Awaitable[Decision]]
Holdback = Callable[[str], int | None]  # None: the tail cannot be bounded; use windows
_SENTENCE_END = re.compile("[.!?;:\n\u3002\uff01\uff1f]")  # with CJK full stops
CONTEXT_CHARS = 100


@dataclass(slots=True)
class _Event:
    raw: bytes
    obj: Any
    refs: list[TextRef]
    final: bool
    spans: list[tuple[Hashable, int, int]] = field(default_factory=list)  # per ref, in its text
    rewritten: bool = False  # its texts are no longer the raw event's


@dataclass(slots=True)
class _Text:
    pending: str = ""  # not yet released
    context: str = ""  # the last characters released, raw
    unscanned: str = ""  # without hold: released, not yet scanned


class StreamGuard:
    def __init__(
        self,
        adapter: Adapter,
        scan: Scan,
        window_chars: int,
        hold: bool = True,
        *,
        holdback: Holdback | None = None,
        pseudonyms: Pseudonyms | None = None,
    ) -> None:
        self._adapter = adapter
        self._scan = scan
        self._window = window_chars
        self._hold = hold
        self._holdback = holdback
        self._pseudonyms = pseudonyms
        self._sse = adapter.stream_format == "sse"
        self._queue: list[_Event] = []
        self._texts: dict[Hashable, _Text] = {}
        self._last: Any = None
        self._choices: set[int] = set()
        self.stopped = False

    async def feed(self, raw: bytes) -> list[bytes]:
        """Events to send now (possibly none) after ``raw`` arrived."""
        obj = self._parse(raw)
        refs = self._adapter.chunk_texts(obj) if obj is not None else []
        event = _Event(raw, obj, refs, final=self._adapter.ends_choice(obj))
        boundary = False
        for ref in refs:
            text = self._texts.setdefault(ref.stream_key, _Text())
            start = len(text.pending)
            text.pending += ref.text
            event.spans.append((ref.stream_key, start, len(text.pending)))
            boundary = boundary or bool(_SENTENCE_END.search(ref.text))
            key = ref.stream_key
            if isinstance(key, tuple) and isinstance(key[0], int):
                self._choices.add(key[0])
        self._queue.append(event)
        if not self._hold:
            return await self._flow(boundary)
        window = boundary or sum(len(t.pending) for t in self._texts.values()) >= self._window
        return await self._check(final=False, window=window)

    async def finish(self, rest: bytes = b"") -> list[bytes]:
        """The stream ended: scan and release everything still held."""
        out = await self.feed(rest) if rest.strip() and not self.stopped else []
        if self.stopped:
            return out
        if not self._hold:
            return out + await self._flow(boundary=True)
        return out + await self._check(final=True, window=True)

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

    # Without hold: text flows on; windows are scanned for the record.

    async def _flow(self, boundary: bool) -> list[bytes]:
        """Release at once; the event that completes a window waits for its scan, so
        that a block still keeps it from the client."""
        for text in self._texts.values():
            text.unscanned += text.pending
            text.pending = ""
        waiting = [key for key, text in self._texts.items() if text.unscanned]
        size = sum(len(self._texts[key].unscanned) for key in waiting)
        if waiting and (boundary or size >= self._window):
            decision = await self._scan([self._texts[key].unscanned for key in waiting], None)
            for key in waiting:
                self._texts[key].unscanned = ""
            if decision.action is Action.BLOCK:
                return self._stop()
        out = [event.raw for event in self._queue]
        self._queue.clear()
        return out

    # With hold: scan what is pending, release all but the tail that may still change.

    async def _check(self, final: bool, window: bool) -> list[bytes]:
        keys = [key for key, text in self._texts.items() if text.pending]
        cuts = {key: self._cut(self._texts[key].pending, final, window) for key in keys}
        if not any(cuts.values()):
            return self._emit({}, {})
        texts = [self._texts[key].context + self._texts[key].pending for key in keys]
        offsets = [len(self._texts[key].context) for key in keys]
        limits = [cuts[key] for key in keys]

        def select(scan: ScanResult) -> ScanResult:
            kept = _settle(scan.findings, offsets, limits)
            return dataclasses.replace(scan, findings=kept)

        decision = await self._scan(texts, select)
        if decision.action is Action.BLOCK:
            return self._stop()
        cuts = dict(zip(keys, limits, strict=True))
        return self._emit(cuts, self._redactions(keys, offsets, cuts, decision))

    def _cut(self, pending: str, final: bool, window: bool) -> int:
        """How much of a pending text may be released now."""
        if final:
            return len(pending)
        tail = self._pseudonyms.holdback(pending) if self._pseudonyms is not None else 0
        rules = self._holdback(pending) if self._holdback is not None else None
        if rules is None:  # the detectors cannot bound the tail: whole windows only
            return len(pending) - tail if window else 0
        return max(0, len(pending) - max(tail, rules))

    def _redactions(
        self,
        keys: list[Hashable],
        offsets: list[int],
        cuts: dict[Hashable, int],
        decision: Decision,
    ) -> dict[Hashable, list[Redaction]]:
        """Per text: the decision's redactions (placeholders resolved) and the restored
        pseudonyms, in the pending text's coordinates, up to its cut."""
        out: dict[Hashable, list[Redaction]] = {key: [] for key in keys}
        for red in decision.redactions:
            key, offset = keys[red.text_index], offsets[red.text_index]
            start, end = max(red.start - offset, 0), red.end - offset
            if end <= 0 or start >= cuts[key]:
                continue
            replacement = red.replacement
            if red.pseudonym and self._pseudonyms is not None:
                value = self._texts[key].pending[start:end]
                replacement = self._pseudonyms.token(red.pseudonym, value)
            out[key].append(Redaction(0, start, end, replacement))
        if self._pseudonyms is not None and len(self._pseudonyms):
            for key in keys:
                released = self._texts[key].pending[: cuts[key]]
                out[key].extend(self._pseudonyms.restorations([released]))
        return {key: _disjoint(reds) for key, reds in out.items()}

    def _emit(
        self, cuts: dict[Hashable, int], reds: dict[Hashable, list[Redaction]]
    ) -> list[bytes]:
        """Send every event whose text is released, in order; cut the first one that is
        only partly released (unless it finishes its choice); keep the rest."""
        out: list[bytes] = []
        cut_event = False
        while self._queue:
            event = self._queue[0]
            if all(end <= cuts.get(key, 0) for key, _, end in event.spans):
                out.append(self._encode(event, event.obj, cuts, reds))
                self._queue.pop(0)
                continue
            partly = any(start < cuts.get(key, 0) for key, start, _ in event.spans)
            if partly and not event.final:
                out.append(self._encode(event, copy.deepcopy(event.obj), cuts, reds))
                event.rewritten = cut_event = True
            break
        self._advance(self._sent(cuts, cut_event))
        return out

    def _sent(self, cuts: dict[Hashable, int], cut_event: bool) -> dict[Hashable, int]:
        """The cuts, moved back to the text of the events still queued whole."""
        sent = dict(cuts)
        for event in self._queue[1:] if cut_event else self._queue:
            for key, start, _ in event.spans:
                sent[key] = min(sent.get(key, 0), start)
        return sent

    def _encode(
        self,
        event: _Event,
        obj: Any,
        cuts: dict[Hashable, int],
        reds: dict[Hashable, list[Redaction]],
    ) -> bytes:
        texts = []
        for key, start, end in event.spans:
            stop = min(end, cuts.get(key, 0))
            texts.append(_render(self._texts[key].pending, start, stop, reds.get(key, [])))
        if not event.rewritten and texts == [ref.text for ref in event.refs]:
            return event.raw
        write_texts(obj, event.refs, texts)
        return self._frame(obj)

    def _advance(self, cuts: dict[Hashable, int]) -> None:
        """Drop the released text from each pending text; the queue follows."""
        for key, cut in cuts.items():
            if not cut:
                continue
            text = self._texts[key]
            text.context = (text.context + text.pending[:cut])[-CONTEXT_CHARS:]
            text.pending = text.pending[cut:]
        for event in self._queue:
            event.spans = [
                (key, max(start - cuts.get(key, 0), 0), max(end - cuts.get(key, 0), 0))
                for key, start, end in event.spans
            ]

    def _stop(self) -> list[bytes]:
        self.stopped = True
        self._queue.clear()
        final = self._adapter.filtered_final_chunk(self._last, sorted(self._choices) or [0])
        if self._sse:
            return [self._frame(final), sse_event(DONE)]
        return [self._frame(final)]

    def _frame(self, obj: Any) -> bytes:
        data = msgspec.json.encode(obj)
        return sse_event(data) if self._sse else data + b"\n"


def _settle(
    findings: tuple[Finding, ...], offsets: list[int], cuts: list[int]
) -> tuple[Finding, ...]:
    """The findings in the text about to be released, after moving each cut back to
    the start of a finding it would split (so no value is released in part)."""
    moved = True
    while moved:
        moved = False
        for f in findings:
            if f.span is None:
                continue
            i, (start, end) = f.text_index, f.span
            cut = offsets[i] + cuts[i]
            if offsets[i] <= start < cut < end:
                cuts[i] = start - offsets[i]
                moved = True
    return tuple(
        f
        for f in findings
        if f.span is None
        or (
            f.span[1] > offsets[f.text_index]
            and f.span[0] < offsets[f.text_index] + cuts[f.text_index]
        )
    )


def _disjoint(reds: list[Redaction]) -> list[Redaction]:
    """Sorted, with any redaction that starts inside an earlier one dropped."""
    out: list[Redaction] = []
    for red in sorted(reds, key=lambda r: (r.start, -r.end)):
        if not out or red.start >= out[-1].end:
            out.append(red)
    return out


def _render(text: str, start: int, stop: int, reds: list[Redaction]) -> str:
    """``text[start:stop]`` with the redactions applied: a replacement goes where its
    span starts; text a span covers from an earlier piece is left out."""
    if stop <= start:
        return ""
    parts: list[str] = []
    cursor = start
    for red in reds:
        if red.end <= cursor or red.start >= stop:
            continue
        if red.start >= cursor:
            parts.append(text[cursor : red.start])
            parts.append(red.replacement)
        cursor = min(red.end, stop)
    parts.append(text[cursor:stop])
    return "".join(parts)
