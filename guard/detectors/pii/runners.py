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
Card numbers, SSNs and phone numbers are all made of digits and a few separators:
one pass finds the runs of those (``Text.digit_runs``) and each of these
recognizers looks only at the runs with enough digits for one of its values.

Presidio's IBAN recognizer overrides ``analyze`` only to retry a failing match
shorter (a sentence's next word may look like one more group); a ``PatternRunner``
does the same. Recognizers that find hits themselves (guard's phone recognizer) are
asked for them directly; others (NER) run as they are.
"""

from __future__ import annotations

import functools
import operator
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import regex
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer
from presidio_analyzer.predefined_recognizers import IbanRecognizer

_REGEX_TIMEOUT_S = 1.0
# Windows up to this long are scanned without a timeout (see PatternRunner._scan).
_SHORT_WINDOW = 256
# Presidio's context rule (guard.detectors.pii.detector applies it): a context word
# before a match raises its score by this much, to at least the floor.
CONTEXT_BOOST = 0.35
CONTEXT_FLOOR = 0.4
CONTEXT_WORDS = 5  # a context word counts among this many words before a value
CONTEXT_CHARS = 120  # in this many characters before it
# The last CONTEXT_WORDS words of a text, matched on the text reversed: a match that
# stops after them, where ``findall`` would find every word of the window first.
_LAST_WORDS = re.compile(r"\W*(\w+)" + r"(?:\W+(\w+))?" * (CONTEXT_WORDS - 1))
_LOCAL_PART = r"[\w!#$%&'*+\-/=?^`{|}~.]*"
_HOST = r"[\w.\-]*"
_ADDRESS = r"[\w:.%/]*"  # / : a CIDR prefix length


def words_before(text: str, at: int) -> list[str]:
    """The last ``CONTEXT_WORDS`` words (``re``'s ``\\w+``) among the ``CONTEXT_CHARS``
    characters before ``at``, casefolded, the nearest first: where Presidio looks for
    a context word."""
    found = _LAST_WORDS.match(text[max(0, at - CONTEXT_CHARS) : at][::-1])
    return [] if found is None else [w[::-1].casefold() for w in found.groups() if w]


class Candidates:
    """Where a match can be: around each match of an ``anchor`` (a piece every match
    contains), spread over the characters a match is made of, plus one beyond on each
    side so that the patterns' own boundaries (\\b, lookarounds) see what they would
    see. Several anchors where one would start with a class of characters: ``re``
    finds a pattern that starts with a literal character several times faster.

    ``left`` and ``right`` are read by ``re`` in ASCII text and by ``regex`` in any
    other, as the patterns are: ``regex`` counts marks (a vowel sign in ``राम``) as
    word characters, ``re`` does not."""

    __slots__ = ("_ascii", "_unicode", "anchors", "reach")

    def __init__(
        self,
        anchors: tuple[re.Pattern[str] | regex.Pattern[str], ...],
        left: str,  # the characters a match may have before its anchor
        right: str,  # and after it
        reach: int,  # how far a match may extend before its anchor
    ) -> None:
        self.anchors = anchors
        self.reach = reach
        self._ascii = (re.compile(left), re.compile(right))
        self._unicode = (regex.compile(left), regex.compile(right))

    def windows(self, text: str) -> list[tuple[int, int]]:
        left, right = self._ascii if text.isascii() else self._unicode
        spans = []
        for found in (f for anchor in self.anchors for f in anchor.finditer(text)):
            lo, hi = found.start(), found.end()
            before = text[max(lo - self.reach, 0) : lo][::-1]
            lo -= left.match(before).end()  # type: ignore[union-attr]  # matches ""
            hi = right.match(text, hi).end()  # type: ignore[union-attr]
            spans.append((max(lo - 1, 0), min(hi + 1, len(text))))
        return _merged(spans)


# Runs of digits and the separators numbers are written with, of at least
# ``_MIN_RUN`` characters: no recognizer that starts from them takes fewer digits.
# A run of ASCII digits is found fastest with a character set (``regex``: about twice
# ``re``'s speed, and two and a half times that of \d), which on a text of ASCII
# characters is the same as the patterns' own \d; other texts take \d.
_MIN_RUN = 7
_ASCII_DIGIT_RUN = regex.compile(r"[0-9][0-9 ().\-/]{5,}[0-9]")  # 5: _MIN_RUN - 2
_DIGIT_RUN = regex.compile(r"\d[\d ().\-/]{5,}\d")
_SEPARATORS = " ().-/"
# How far a match may reach beyond its run: a leading + and ( before the digits,
# and the two characters after them that a pattern's lookahead reads.
_RUN_MARGIN = 2


class Text:
    """A text being scanned, with what several recognizers start from found once.

    With ``focus`` (positions in the text), only values that run across one of them
    are wanted: where two texts of a request meet. Windowed recognizers then look
    only at the windows that hold a focus position; a value across it lies in one."""

    __slots__ = ("_digit_runs", "focus", "value")

    def __init__(self, value: str, focus: Sequence[int] = ()) -> None:
        self.value = value
        self.focus = tuple(focus)
        self._digit_runs: list[tuple[int, int, int]] | None = None

    def spanning(self, windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """``windows``, or with a focus only those a value across it can lie in."""
        if not self.focus:
            return windows
        return [(lo, hi) for lo, hi in windows if any(lo < at < hi for at in self.focus)]

    def digit_runs(self) -> list[tuple[int, int, int]]:
        """``(start, end, digits)`` of each run of digits and ``( ) . - /`` and spaces,
        from a digit to a digit, at least ``_MIN_RUN`` characters long."""
        if self._digit_runs is None:
            text = self.value
            runs = (_ASCII_DIGIT_RUN if text.isascii() else _DIGIT_RUN).finditer(text)
            self._digit_runs = [
                (m.start(), m.end(), m.end() - m.start() - sum(map(m.group().count, _SEPARATORS)))
                for m in runs
            ]
        return self._digit_runs

    def number_windows(self, digits: int) -> list[tuple[int, int]]:
        """Where a value written with at least ``digits`` digits (and only separators
        between them; ``_MIN_RUN`` at least) can be, with the characters around it its
        pattern reads."""
        end = len(self.value)
        return self.spanning(
            _merged(
                [
                    (max(lo - _RUN_MARGIN, 0), min(hi + _RUN_MARGIN, end))
                    for lo, hi, count in self.digit_runs()
                    if count >= digits
                ]
            )
        )


# Cheap over-approximations for the entity types whose patterns cost most to run
# over a whole text: every email has an @, every IP address a digit-dot-digit
# (IPv4) or a colon before a hex digit (IPv6), every IBAN starts with two capitals
# and two check digits (Presidio's pattern is case-sensitive) followed by groups.
# Each anchor is written for the engine that finds it fastest (measured on 1 KB
# prompts): a literal or a punctuation mark first for ``re``, a class run for ``regex``.
_CANDIDATES = {
    "EMAIL_ADDRESS": Candidates((re.compile("@"),), _LOCAL_PART, _HOST, 64),
    "IP_ADDRESS": Candidates(
        (re.compile(r"\.(?<=\d\.)(?=\d)"), re.compile(r":(?=[0-9A-Fa-f:])")),
        _ADDRESS,
        _ADDRESS,
        64,
    ),
    "IBAN_CODE": Candidates((regex.compile(r"[A-Z]{2}[0-9]{2}"),), "", r"[A-Z0-9 \-]*", 0),
}
# Entity types whose every value is a run of at least so many digits, with single
# separators between groups: card numbers (13 to 19 digits, Presidio's and guard's
# patterns) and US social security numbers (9).
_DIGITS = {"CREDIT_CARD": 13, "US_SSN": 9}


class Hit(NamedTuple):
    """What a recognizer reports: an entity type, a span, a score (never the value).
    A named tuple: made for every match, in half the time of a frozen dataclass."""

    entity_type: str
    start: int
    end: int
    score: float


Runner = Callable[[Text], list[Hit]]


@runtime_checkable
class FindsHits(Protocol):
    """A recognizer of guard's own that reports ``Hit``s without Presidio's result
    objects (an explanation and metadata per match), looking only at ``windows``
    where given, which a numeric recognizer's ``MIN_DIGITS`` asks for."""

    def hits(self, text: str, windows: Sequence[tuple[int, int]] | None = None) -> list[Hit]: ...


class PatternRunner:
    """A pattern recognizer's logic, run lean. A pattern whose best possible score
    (its own, raised by a context word, or 1.0 where the recognizer validates) is
    under the entity's threshold is not run at all: Presidio's SSN recognizer has
    three such "very weak" patterns (0.05) under any useful threshold.

    With ``shorter`` (Presidio's IBAN logic), a match whose value fails is tried again
    ending where each of its groups ends, from the last group back, and the first
    that scores is kept."""

    def __init__(
        self, recognizer: PatternRecognizer, threshold: float = 0.0, *, shorter: bool = False
    ) -> None:
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
            (compiled, _re_twin(compiled), float(p.score))
            for p in patterns
            if best(float(p.score)) >= threshold
            for compiled in [regex.compile(p.regex, flags)]
        ]
        self._validate = recognizer.validate_result
        self._invalidate = recognizer.invalidate_result
        self._candidates = _CANDIDATES.get(self.entity)
        self._digits = _DIGITS.get(self.entity)
        self._shorter = shorter

    def __call__(self, text: Text) -> list[Hit]:
        if self._digits is not None:
            windows = text.number_windows(self._digits)
        elif self._candidates is not None:
            windows = text.spanning(self._candidates.windows(text.value))
        else:
            return self._scan(text.value, [(0, len(text.value))], windowed=False)
        return self._scan(text.value, windows, windowed=True) if windows else []

    def _scan(self, text: str, windows: Sequence[tuple[int, int]], *, windowed: bool) -> list[Hit]:
        hits: list[Hit] = []
        ascii_text = text.isascii()
        for pattern, twin, base in self._patterns:
            for lo, hi in windows:
                # A timeout costs 2 µs a call to set up; the windowed patterns take
                # well under a millisecond on any window this short, and re (which
                # has none) runs them on ASCII text in half the time (_re_twin).
                short = windowed and hi - lo <= _SHORT_WINDOW
                matches: Iterable[re.Match[str] | regex.Match[str]]
                if short and ascii_text and twin is not None:
                    matches = twin.finditer(text, lo, hi)
                else:
                    timeout = None if short else _REGEX_TIMEOUT_S
                    matches = pattern.finditer(text, lo, hi, timeout=timeout)
                for match in matches:
                    hit = self._shortened(text, match, base) if self._shorter else None
                    start, end = match.span()
                    if hit is not None:
                        hits.append(hit)
                    elif end > start and (score := self._score(text[start:end], base)) > 0:
                        hits.append(Hit(self.entity, start, end, score))
        # One pattern's matches in disjoint windows are disjoint: none contains another.
        return _uncontained(hits) if len(hits) > 1 and len(self._patterns) > 1 else hits

    def _shortened(
        self, text: str, match: re.Match[str] | regex.Match[str], base: float
    ) -> Hit | None:
        """The match ending where its last group ends, else the one before, ...: the
        first of these values that scores (Presidio's ``IbanRecognizer``)."""
        start = match.start()
        for group in range(len(match.groups()), 0, -1):
            end = match.end(group) if match.end(group) > 0 else match.end()
            if end > start and (score := self._score(text[start:end], base)) > 0:
                return Hit(self.entity, start, end, score)
        return None

    def _score(self, value: str, score: float) -> float:
        """Presidio's rule: a validated value scores 1, a refuted or invalidated one 0."""
        valid = self._validate(value)
        if valid is not None:
            score = 1.0 if valid else 0.0
        return 0.0 if self._invalidate(value) else score


# The flags a ``regex`` pattern of version 0 (Presidio's) may carry for ``re`` to read
# it the same, and theirs in ``re``. UNICODE is the default of both for str patterns.
_RE_FLAGS = {
    regex.IGNORECASE: re.IGNORECASE,
    regex.MULTILINE: re.MULTILINE,
    regex.DOTALL: re.DOTALL,
    regex.VERBOSE: re.VERBOSE,
    regex.ASCII: re.ASCII,
    regex.UNICODE: 0,
    regex.VERSION0: 0,
}


def _re_twin(pattern: regex.Pattern[str]) -> re.Pattern[str] | None:
    """The same pattern compiled by ``re``, where it means the same on ASCII text: an
    ASCII pattern in the syntax both modules share, with flags both know. ``re``
    runs the recognizers' patterns over short windows in about half the time (every
    windowed pattern over a 1 KB ticket's windows: 12.5 against 24 µs, the email
    pattern 5.7 against 10.8, measured); ``regex`` is kept for what ``re`` lacks (a
    timeout, ``\\p{..}`` classes, full Unicode words). A pattern ``re`` reads
    differently or warns about (a set that version 1 would nest) gets no twin."""
    flags = pattern.flags
    if not pattern.pattern.isascii() or flags & ~functools.reduce(operator.or_, _RE_FLAGS):
        return None
    translated = 0
    for flag, twin in _RE_FLAGS.items():
        if flags & flag:
            translated |= twin
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return re.compile(pattern.pattern, translated)
        except (re.error, FutureWarning, DeprecationWarning):
            return None


def _uncontained(hits: list[Hit]) -> list[Hit]:
    """Presidio's ``remove_duplicates``: a hit within another of a higher score (or of
    the same score and earlier or longer) is dropped, as is a repeated one."""
    kept: list[Hit] = []
    for hit in sorted(hits, key=lambda h: (-h.score, h.start, h.start - h.end)):
        if not any(k.start <= hit.start and hit.end <= k.end for k in kept):
            kept.append(hit)
    return kept


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
    if isinstance(recognizer, FindsHits):
        digits: int | None = getattr(recognizer, "MIN_DIGITS", None)
        if digits is None:
            return lambda text: recognizer.hits(text.value)
        return lambda text: recognizer.hits(text.value, text.number_windows(digits))
    if isinstance(recognizer, IbanRecognizer):
        return PatternRunner(recognizer, threshold, shorter=True)
    if (
        isinstance(recognizer, PatternRecognizer)
        and type(recognizer).analyze is PatternRecognizer.analyze
    ):
        return PatternRunner(recognizer, threshold)

    def run(text: Text) -> list[Hit]:
        found = recognizer.analyze(text.value, entities, None)  # type: ignore[arg-type]
        return [Hit(r.entity_type, r.start, r.end, r.score) for r in found]

    return run
