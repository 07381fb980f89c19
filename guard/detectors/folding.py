"""Folding text for keyword matching: NFKC, then casefold, with a map back to the
original offsets, so that a match in folded text reports a span in the original
(full-width letters, ligatures such as ``ﬁ`` and ``ß`` change lengths)."""

from __future__ import annotations

import bisect
import functools
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeAlias


def fold_phrase(phrase: str) -> str:
    """A phrase as the matcher sees it; whitespace runs become one space."""
    return " ".join(unicodedata.normalize("NFKC", phrase).casefold().split())


# Where a fold changed the length: folded[f:f + w] came from original[o:o + n]. A
# fold that drops characters (guard.detectors.pii.normalize drops invisible ones)
# has pieces with w == 0, each before the piece of the character that follows.
Piece: TypeAlias = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class Folded:
    """A folded text, and the way back to the original's offsets: ``pieces`` lists,
    in order, each place where the fold changed the length (``ß`` became ``ss``, a
    decomposed accent became one character); between them one character stands for
    one. ASCII text, most text, has none. A span maps to the original from its first
    character's origin to its last's: dropped characters inside it are in it, those
    before or after it are not."""

    text: str
    pieces: Sequence[Piece] = ()

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        return self._origin(start)[0], self._origin(end - 1)[1]

    def _origin(self, index: int) -> tuple[int, int]:
        """The original characters that folded character ``index`` came from."""
        k = bisect.bisect_right(self.pieces, index, key=lambda piece: piece[0]) - 1
        if k < 0:
            return index, index + 1
        f, w, o, n = self.pieces[k]
        if index < f + w:
            return o, o + n
        at = o + n + index - (f + w)
        return at, at + 1


def fold(text: str) -> Folded:
    folded = _fold_chunk(text)
    if folded is None:
        out = _FoldBuilder()
        _fold_into(out, text, 0, len(text))
        folded = Folded("".join(out.parts), out.pieces)
    return folded


def _fold_chunk(text: str) -> Folded | None:
    """The folded text and its offsets when each character folds on its own; None
    when characters compose across each other (a decomposed accent, Hangul jamo).
    The work is C calls plus Python per changed character, not per character."""
    if text.isascii():
        return Folded(text.lower())
    nfkc = text if unicodedata.is_normalized("NFKC", text) else _nfkc_per_char(text)
    if nfkc is None:
        return None
    folded = nfkc.casefold()
    # NFKC and casefold never map a character to nothing: the same length means
    # one character for one, and the offsets are the original's.
    if len(folded) == len(text):
        return Folded(folded)
    return Folded(folded, _widened(text))


@functools.lru_cache(maxsize=4096)
def _nfkc(char: str) -> str:
    return unicodedata.normalize("NFKC", char)


@functools.lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    return _nfkc(char).casefold()


@functools.cache
def _char_classes() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The characters NFKC changes, and those that fold to more than one character,
    as two regex classes. Listing the BMP takes about 12 ms, once; every astral
    character is a candidate (listing those would take 200 ms) and is looked at on
    its own."""
    changed = [c for c in range(0x10000) if _nfkc(chr(c)) != chr(c)]
    wide = [c for c in range(0x10000) if len(_fold_char(chr(c))) > 1]
    return re.compile(char_class(changed, ASTRAL)), re.compile(char_class(wide, ASTRAL))


ASTRAL = "\U00010000-\U0010ffff"


def char_class(codes: list[int], extra: str = "") -> str:
    """A regex class of ``codes`` as ranges, and ``extra`` (more ranges, already escaped)."""
    ranges: list[list[int]] = []
    for code in codes:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    body = "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in ranges
    )
    return f"[{body}{extra}]"


def _nfkc_per_char(text: str) -> str | None:
    """NFKC of each character on its own, when that is NFKC of the whole text
    (exactly when the result is itself normalized), else None."""
    changed, _ = _char_classes()
    per_char = changed.sub(lambda m: _nfkc(m.group()), text)
    return per_char if unicodedata.is_normalized("NFKC", per_char) else None


def _widened(text: str) -> list[Piece]:
    """The pieces of a fold where some characters became several (``ß``, ``ﬁ``)."""
    _, wide = _char_classes()
    pieces: list[Piece] = []
    extra = 0
    for match in wide.finditer(text):
        width = len(_fold_char(match.group()))
        if width > 1:  # an astral candidate may fold to one character
            pieces.append((match.start() + extra, width, match.start(), 1))
            extra += width - 1
    return pieces


_SMALL = 16  # characters; below this a chunk is folded cluster by cluster


class _FoldBuilder:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pieces: list[Piece] = []
        self.size = 0  # of the folded text so far

    def chunk(self, folded: Folded, offset: int) -> None:
        self.pieces.extend((f + self.size, w, o + offset, n) for f, w, o, n in folded.pieces)
        self.parts.append(folded.text)
        self.size += len(folded.text)

    def piece(self, folded: str, start: int, end: int) -> None:
        if len(folded) != 1 or end - start != 1:
            self.pieces.append((self.size, len(folded), start, end - start))
        self.parts.append(folded)
        self.size += len(folded)


def _fold_into(out: _FoldBuilder, text: str, start: int, end: int) -> None:
    """Halve the text until each part folds character by character (the rare
    composing characters sit in few parts), and fold the small rest cluster by
    cluster: a character with the marks after it, so that `e` + combining acute
    composes as in the whole text. Halves are cut only where a cluster starts."""
    folded = _fold_chunk(text[start:end])
    if folded is not None:
        out.chunk(folded, start)
        return
    middle = _cluster_start(text, (start + end) // 2, end)
    if end - start <= _SMALL or middle == end:
        for a, b in _clusters(text, start, end):
            out.piece(_fold_char(text[a:b]), a, b)
        return
    _fold_into(out, text, start, middle)
    _fold_into(out, text, middle, end)


def _cluster_start(text: str, pos: int, end: int) -> int:
    while pos < end and _continues_cluster(text[pos]):
        pos += 1
    return pos


def _clusters(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    first = start
    for i in range(start + 1, end):
        if not _continues_cluster(text[i]):
            yield first, i
            first = i
    yield first, end


def _continues_cluster(char: str) -> bool:
    # Marks attach to what precedes them; so do Hangul medial vowels and final
    # consonants, which NFKC composes with the leading consonant into a syllable.
    return unicodedata.category(char)[0] == "M" or "\u1160" <= char <= "\u11ff"


# Keywords: the phrases of one list as one regex shaped like their trie.


def prepare() -> None:
    """Build the character tables now (a one-off 12 ms), at load rather than in the
    first request."""
    _char_classes()
