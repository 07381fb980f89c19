"""Running a recognizer: Presidio's pattern logic without its per-call overhead, and
only where a match can be.

Presidio's ``PatternRecognizer.analyze`` times and logs every pattern and builds an
explanation object for every match; on a 1 KB prompt that is a third of the
detector's time. A ``PatternRunner`` keeps what decides (the recognizer's patterns,
scores, ``validate_result`` and ``invalidate_result``: Luhn, checksums, known
sample values) and drops the rest. Where an entity type has a cheap candidate
pattern (every email has an ``@``, every IP address a ``d.d`` or two colons),
the recognizer's own patterns run only on small windows around the candidates:
the email pattern alone was 240 µs of a 1 KB prompt, scanning every position.

Recognizers that override ``analyze`` (IBAN, phone, NER) run as they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import regex
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer

_REGEX_TIMEOUT_S = 1.0
# Presidio's context rule (guard.detectors.pii.detector applies it): a context word
# before a match raises its score by this much, to at least the floor.
CONTEXT_BOOST = 0.35
CONTEXT_FLOOR = 0.4
_LOCAL_PART = r"[\w!#$%&'*+\-/=?^`{|}~.]*"
_HOST = r"[\w.\-]*"
_ADDRESS = r"[\w:.%]*"


@dataclass(frozen=True, slots=True)
class Candidates:
    """Where a match can be: around each ``anchor`` (a piece every match contains),
    spread over the characters a match is made of, plus one beyond on each side so
    that the patterns' own boundaries (\\b, lookarounds) see what they would see."""

    anchor: re.Pattern[str]
    left: re.Pattern[str]  # the characters a match may have before its anchor, reversed
    right: re.Pattern[str]  # and after it
    reach: int  # how far a match may extend before its anchor

    def windows(self, text: str) -> list[tuple[int, int]]:
        spans = []
        for found in self.anchor.finditer(text):
            lo, hi = found.start(), found.end()
            before = text[max(lo - self.reach, 0) : lo][::-1]
            lo -= self.left.match(before).end()  # type: ignore[union-attr]  # matches ""
            hi = self.right.match(text, hi).end()  # type: ignore[union-attr]
            spans.append((max(lo - 1, 0), min(hi + 1, len(text))))
        return _merged(spans)


# Cheap over-approximations for the entity types whose patterns cost most to run
# over a whole text: every email has an @, every IP address a digit-dot-digit
# (IPv4) or a colon before a hex digit (IPv6).
_CANDIDATES = {
    "EMAIL_ADDRESS": Candidates(re.compile("@"), re.compile(_LOCAL_PART), re.compile(_HOST), 64),
    "IP_ADDRESS": Candidates(
        re.compile(r"\d\.\d|:[0-9A-Fa-f:]"), re.compile(_ADDRESS), re.compile(_ADDRESS), 64
    ),
}


# For recognizers run as they are: what a text must contain for them to find anything
# (an IBAN starts with two letters and two check digits).
_REQUIRED = {"IBAN_CODE": re.compile(r"[A-Za-z]{2}\d{2}")}


@dataclass(frozen=True, slots=True)
class Hit:
    """What a recognizer reports: an entity type, a span, a score (never the value)."""

    entity_type: str
    start: int
    end: int
    score: float


Runner = Callable[[str], list[Hit]]


class PatternRunner:
    """A pattern recognizer's logic, run lean. A pattern whose best possible score
    (its own, raised by a context word, or 1.0 where the recognizer validates) is
    under the entity's threshold is not run at all: Presidio's SSN recognizer has
    three such "very weak" patterns (0.05) under any useful threshold."""

    def __init__(self, recognizer: PatternRecognizer, threshold: float = 0.0) -> None:
        flags = recognizer.global_regex_flags or 0
        self.entity: str = recognizer.supported_entities[0]
        validates = type(recognizer).validate_result is not PatternRecognizer.validate_result
        boost = CONTEXT_BOOST if recognizer.context else 0.0

        def best(score: float) -> float:
            if validates:
                return 1.0
            return min(1.0, max(score + boost, CONTEXT_FLOOR)) if boost else score

        patterns: list[Pattern] = getattr(recognizer, "patterns", [])
        self._patterns = [
            (regex.compile(p.regex, flags), float(p.score))
            for p in patterns
            if best(float(p.score)) >= threshold
        ]
        self._validate = recognizer.validate_result
        self._invalidate = recognizer.invalidate_result
        self._candidates = _CANDIDATES.get(self.entity)

    def __call__(self, text: str) -> list[Hit]:
        if self._candidates is None:
            return self._scan(text, [(0, len(text))])
        windows = self._candidates.windows(text)
        return self._scan(text, windows) if windows else []

    def _scan(self, text: str, windows: Sequence[tuple[int, int]]) -> list[Hit]:
        hits: list[Hit] = []
        for pattern, base in self._patterns:
            for lo, hi in windows:
                for match in pattern.finditer(text, lo, hi, timeout=_REGEX_TIMEOUT_S):
                    start, end = match.span()
                    if end > start and (score := self._score(text[start:end], base)) > 0:
                        hits.append(Hit(self.entity, start, end, score))
        return hits

    def _score(self, value: str, score: float) -> float:
        """Presidio's rule: a validated value scores 1, a refuted or invalidated one 0."""
        valid = self._validate(value)
        if valid is not None:
            score = 1.0 if valid else 0.0
        return 0.0 if self._invalidate(value) else score


def _merged(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans in order of start, overlapping or touching ones joined."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def runner_for(recognizer: EntityRecognizer, entities: list[str], threshold: float = 0.0) -> Runner:
    """``threshold``: the least score any of ``entities`` is reported with."""
    if (
        isinstance(recognizer, PatternRecognizer)
        and type(recognizer).analyze is PatternRecognizer.analyze
    ):
        return PatternRunner(recognizer, threshold)

    required = _REQUIRED.get(entities[0]) if len(entities) == 1 else None

    def run(text: str) -> list[Hit]:
        if required is not None and required.search(text) is None:
            return []
        found = recognizer.analyze(text, entities, None)  # type: ignore[arg-type]
        return [Hit(r.entity_type, r.start, r.end, r.score) for r in found]

    return run
