"""The ``pii`` detector: Presidio's recognizers, run by guard.

Presidio's ``AnalyzerEngine`` is not used to run them: with nothing to lemmatize,
its context step deep-copies every result (half of a 10 KB prompt's time,
measured), and it needs an NLP engine even for regexes. guard calls each
recognizer's ``analyze`` itself and applies, as the engine does, context words
(a word among the five before a match raises its score by 0.35, to at least
0.4), score thresholds and allow lists; where two findings overlap, the higher
score (then the longer span) wins.

A text that is not pure ASCII is scanned as guard.detectors.pii.normalize makes it
(NFKC, invisible characters dropped, digits of every script and Latin look-alike
letters made ASCII), and what is found there is reported at its span in the
original. The texts of one request are also scanned where each meets the next, so
that a value split between two messages (or two tool-call arguments) is found: the
value is reported once in each text, each part at its own span.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import hashlib
import itertools
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import regex
from presidio_analyzer import EntityRecognizer

from guard.detectors.base import Direction, Finding, ScanContext
from guard.detectors.pii.ner import NER_ENTITIES, Ner
from guard.detectors.pii.normalize import normalize, prepare
from guard.detectors.pii.recognizers import patterns_of
from guard.detectors.pii.runners import (
    CONTEXT_BOOST,
    CONTEXT_FLOOR,
    Hit,
    Runner,
    Text,
    runner_for,
    words_before,
)

log = logging.getLogger(__name__)
# Presidio logs the matched text when an IBAN fails to validate, and context words
# at debug level: its log never reaches guard's, which logs no content.
logging.getLogger("presidio-analyzer").setLevel(logging.CRITICAL + 1)
NAME = "pii"
MAX_HOLD = 256  # the most a stream's tail is held back for one value
CACHE_TEXTS = 4096  # texts whose findings are kept
CACHE_CHARS = 16 * 1024  # longer texts are always scanned
# Cache keys of the places where two texts meet, apart from those of whole texts:
# the same characters are scanned there without NER.
_JUNCTION = b"pii-junction"
_REGEX_TIMEOUT_S = 1.0
_WORD = re.compile(r"\w+")  # re finds words in twice the speed of regex
# Where NER is in play, a run of capitalised words at the end of a stream's text
# may still become (or grow into) a name.
_NAME_TAIL = regex.compile(
    r"(?:\p{Lu}[\p{L}\p{M}'\u2019\-]*\.?[ \t]+){0,3}\p{Lu}[\p{L}\p{M}'\u2019\-]*"
)


@dataclass(frozen=True, slots=True)
class _Recognizer:
    run: Runner
    context: frozenset[str]


class PiiDetector:
    name = NAME
    directions = frozenset(Direction)

    def __init__(
        self,
        recognizers: Sequence[EntityRecognizer],
        thresholds: Mapping[str, float],
        *,
        ner: Ner | None = None,
        allow: Sequence[str] = (),
        allow_patterns: Sequence[str] = (),
        inline_chars: int = 4096,
    ) -> None:
        self._thresholds = dict(thresholds)
        self._recognizers = tuple(
            _Recognizer(runner_for(rec, wanted, min(thresholds[e] for e in wanted)), _words(rec))
            for rec in recognizers
            if (wanted := [e for e in rec.supported_entities if e in thresholds])
        )
        self._ner = ner
        self._allow = frozenset(value.casefold() for value in allow)
        self._allow_patterns = tuple(regex.compile(p) for p in allow_patterns)
        self._inline_chars = inline_chars
        # Findings of recent texts, by a digest of the text (the text itself is not
        # kept): clients resend the system prompt and the conversation's history with
        # every turn, and only the new message needs scanning. Kept as plain tuples of
        # strings and numbers, which the garbage collector stops tracking; as Hits, a
        # full cache was 30,000 tracked objects that every full collection walked
        # (8 ms each, every ~1,500 requests) and each request moved 8 more through
        # the generations.
        self._cache: OrderedDict[bytes, tuple[tuple[str, int, int, float], ...]] = OrderedDict()
        self._lock = threading.Lock()  # long texts are scanned in worker threads
        tails = [p for rec in recognizers for p in patterns_of(rec)]
        self._tails = tuple(tails + ([_NAME_TAIL] if ner is not None else []))
        prepare()

    @property
    def ner_model(self) -> str | None:
        return self._ner.description if self._ner is not None else None

    def entities(self) -> list[str]:
        return sorted(self._thresholds)

    def cannot_detect(self) -> list[str]:
        """The named-entity types the policies ask for that no loaded model finds."""
        found = set(self._ner.entities) if self._ner is not None else set()
        wanted = set(self._thresholds) & (set(NER_ENTITIES) | found)
        return sorted(wanted - found)

    def describe(self) -> dict[str, object]:
        """What this detector looks for and can find, for /readyz."""
        return {
            "entities": self.entities(),
            "ner": self.ner_model,
            "cannot_detect": self.cannot_detect(),
        }

    def scan_inline(self, texts: Sequence[str]) -> list[Finding] | None:
        return self.scan(texts) if sum(map(len, texts)) <= self._inline_chars else None

    async def detect(self, texts: Sequence[str], ctx: ScanContext) -> list[Finding]:
        found = self.scan_inline(texts)
        return found if found is not None else await asyncio.to_thread(self.scan, tuple(texts))

    def scan(self, texts: Sequence[str]) -> list[Finding]:
        found = [
            Finding(NAME, r.entity_type, round(r.score, 4), index, (r.start, r.end))
            for index, text in enumerate(texts)
            for r in self.analyze(text)
        ]
        if len(texts) < 2:
            return found
        reported = set(found)
        if across := [f for f in self._across(texts, found) if f not in reported]:
            found = sorted(found + across, key=lambda f: (f.text_index, f.span))
        return found

    def analyze(self, text: str) -> list[Hit]:
        """Every finding in ``text`` at or above its entity's threshold, by position."""
        return self._cached(text, self._analyze)

    def _cached(
        self,
        text: str,
        scan: Callable[[str], list[Hit]],
        person: bytes = b"",
        suffix: bytes = b"",
    ) -> list[Hit]:
        """``scan(text)``, kept by the text's digest (with ``person``: what kind of
        scan) and ``suffix`` (what else the scan depended on)."""
        if len(text) > CACHE_CHARS:
            return scan(text)
        data = text.encode("utf-8", "surrogatepass")
        key = hashlib.blake2b(data, digest_size=16, person=person).digest() + suffix
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return list(map(Hit._make, cached))
        found = scan(text)
        with self._lock:
            self._cache[key] = tuple((h[0], h[1], h[2], h[3]) for h in found)
            if len(self._cache) > CACHE_TEXTS:
                self._cache.popitem(last=False)
        return found

    def _analyze(self, text: str, *, ner: bool = True, focus: Sequence[int] = ()) -> list[Hit]:
        """With ``focus``, at least the values that run across one of those positions
        (in an ASCII text, windowed recognizers look nowhere else)."""
        seen = normalize(text)  # None for ASCII text, at the cost of one isascii()
        if seen is None:
            results = self._hits(Text(text, focus), text if ner else None)
        else:
            results = [
                r._replace(start=start, end=end)
                for r in self._hits(Text(seen.text), seen.clean if ner else None)
                if r.end > r.start
                for start, end in [seen.original_span(r.start, r.end)]
            ]
        # Allow lists are held to the original value: a look-alike of an allowed
        # address is another address.
        kept = [r for r in results if self._reported(text, r)]
        return sorted(_without_overlaps(kept), key=lambda r: (r.start, r.end))

    def _hits(self, scanned: Text, ner_text: str | None) -> list[Hit]:
        results: list[Hit] = []
        text = scanned.value
        for rec in self._recognizers:
            for hit in rec.run(scanned):
                boost = rec.context and hit.score < 1.0
                results.append(_boosted(text, hit, rec.context) if boost else hit)
        if self._ner is not None and ner_text is not None:
            results.extend(
                Hit(r.entity_type, r.start, r.end, r.score) for r in self._ner.analyze(ner_text)
            )
        return results

    def _across(self, texts: Sequence[str], found: Sequence[Finding]) -> list[Finding]:
        """Values that run from one text into the next, one finding per text each.

        Around each place where one text meets the next, the ``MAX_HOLD``
        characters before are joined directly to the ``MAX_HOLD`` after and
        scanned with the pattern recognizers (an NER model reads sentences, not
        fragments glued together); only values that cross a junction count, so
        none found in one text is reported twice, and windowed recognizers look
        only where such a value can be. Junctions closer than ``MAX_HOLD`` (a
        short text between) share one window, so that no character is scanned more
        than about twice however many short texts a request holds. A value across
        a junction that overlaps one ``found`` in a text is reported only if it
        scores higher (then is longer), as between any two overlapping values.

        Where a text ends a sentence with a full stop and the next starts with a
        letter, only values a recognizer validated (a checksum, a known domain)
        are taken across: joined, ``Thanks.`` and ``Can you`` match the URL
        pattern. A word that ends one text may still join a validated value that
        starts the next (``thanks.`` and ``bob@example.com``); it is reported
        with it, as a split value's first half would be."""
        joined = "".join(texts)
        starts = list(itertools.accumulate(map(len, texts), initial=0))
        junctions = sorted({s for s in starts if 0 < s < len(joined)})
        breaks = {at for at in junctions if joined[at - 1] == "." and joined[at].isalpha()}
        crossing: list[Hit] = []
        for lo, hi in _windows(junctions, len(joined)):
            focus = [at - lo for at in junctions if lo < at < hi]
            scan = functools.partial(self._junction, focus=focus)
            suffix = b"".join(at.to_bytes(4, "big") for at in focus)
            for hit in self._cached(joined[lo:hi], scan, _JUNCTION, suffix):
                start, end = hit.start + lo, hit.end + lo
                crossed = junctions[
                    bisect.bisect_right(junctions, start) : bisect.bisect_left(junctions, end)
                ]
                if crossed and (hit.score >= 1.0 or breaks.isdisjoint(crossed)):
                    crossing.append(Hit(hit.entity_type, start, end, hit.score))
        if not crossing:
            return []
        inside = [
            Hit(f.label, at + f.span[0], at + f.span[1], f.score)
            for f in found
            if f.span is not None
            for at in [starts[f.text_index]]
        ]
        across = set(crossing)
        return [
            part
            for hit in _without_overlaps(inside + crossing)
            if hit in across
            for part in _parts(hit, starts)
        ]

    def _junction(self, text: str, focus: Sequence[int]) -> list[Hit]:
        return self._analyze(text, ner=False, focus=focus)

    def holdback(self, text: str) -> int:
        """How many trailing characters of ``text`` may still be (part of) a value
        once more text follows: the tail a stream must hold back. A tail that is
        not ASCII is read as the recognizers read it (normalized)."""
        tail = text[-MAX_HOLD:]
        seen = normalize(tail)
        if seen is None:
            return len(tail) - self._pending(tail)
        return len(tail) - seen.original_index(self._pending(seen.text))

    def _pending(self, tail: str) -> int:
        """Where the part of ``tail`` that may still be (part of) a value starts."""
        start = len(tail)
        for pattern in self._tails:
            for match in pattern.finditer(tail, partial=True, timeout=_REGEX_TIMEOUT_S):
                if match.end() == len(tail) and match.end() > match.start():
                    start = min(start, match.start())
                    break
        return start

    def _reported(self, text: str, result: Hit) -> bool:
        threshold = self._thresholds.get(result.entity_type)
        if threshold is None or result.score < threshold or result.end <= result.start:
            return False
        value = text[result.start : result.end]
        if value.casefold() in self._allow:
            return False
        return not any(p.fullmatch(value) for p in self._allow_patterns)


def _words(recognizer: EntityRecognizer) -> frozenset[str]:
    return frozenset(
        word.casefold() for phrase in recognizer.context or () for word in _WORD.findall(phrase)
    )


def _boosted(text: str, result: Hit, context: frozenset[str]) -> Hit:
    if not context.isdisjoint(words_before(text, result.start)):
        score = min(1.0, max(result.score + CONTEXT_BOOST, CONTEXT_FLOOR))
        return Hit(result.entity_type, result.start, result.end, score)
    return result


def _windows(junctions: Sequence[int], size: int) -> list[tuple[int, int]]:
    """Where to scan for values across junctions: ``MAX_HOLD`` characters either
    side of each, one window for junctions fewer than ``MAX_HOLD`` apart."""
    windows: list[tuple[int, int]] = []
    for k, at in enumerate(junctions):
        if k and at - junctions[k - 1] < MAX_HOLD:
            windows[-1] = (windows[-1][0], min(size, at + MAX_HOLD))
        else:
            windows.append((max(0, at - MAX_HOLD), min(size, at + MAX_HOLD)))
    return windows


def _parts(hit: Hit, starts: Sequence[int]) -> list[Finding]:
    """A value found in texts joined (``starts``: where each text begins, and the
    end) as one finding per text it lies in, each at its own span there."""
    out: list[Finding] = []
    index = bisect.bisect_right(starts, hit.start) - 1
    while index < len(starts) - 1 and starts[index] < hit.end:
        begin, end = starts[index], starts[index + 1]
        if max(hit.start, begin) < min(hit.end, end):  # an empty text has no part
            span = (max(hit.start, begin) - begin, min(hit.end, end) - begin)
            out.append(Finding(NAME, hit.entity_type, round(hit.score, 4), index, span))
        index += 1
    return out


def _without_overlaps(results: list[Hit]) -> list[Hit]:
    """The best of overlapping findings: highest score, then longest span."""
    starts: list[int] = []  # the kept spans, sorted and disjoint
    ends: list[int] = []
    kept: list[Hit] = []
    for result in sorted(results, key=lambda r: (-r.score, r.start - r.end, r.start)):
        at = bisect.bisect_right(starts, result.start)
        if at and ends[at - 1] > result.start:
            continue  # the kept span before it reaches into it
        if at < len(starts) and starts[at] < result.end:
            continue  # it reaches into the kept span after it
        starts.insert(at, result.start)
        ends.insert(at, result.end)
        kept.append(result)
    return kept
