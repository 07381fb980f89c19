"""Text as the pii recognizers see it, with the way back to the original's offsets.

PII written with Unicode tricks reads the same to a person (and to the model) but
not to a pattern: full-width digits (U+FF14 for 4), a zero-width joiner inside an
email address, Arabic-Indic digits (U+0664 for 4), a Cyrillic a (U+0430) in an
email's domain (the email recognizer checks it against the public suffix list). A text
that is not pure ASCII is normalized for detection first:

* NFKC, character by character, without casefolding (Presidio's IBAN pattern is
  case-sensitive): full-width and mathematical digits and letters, ligatures,
  compatibility spaces. Composition across characters (an accent written as a
  combining mark) matters to no value a pattern finds, and keeping to one
  character at a time ties every output character to one input character.
* Invisible characters dropped: format characters (category Cf: zero-width space,
  joiners, word joiner, soft hyphen, BOM, bidi controls, tags) and the other
  default-ignorable code points that render as nothing (variation selectors,
  Hangul fillers); and combining marks on a digit, so that a keycap ``4️⃣`` (4, a
  variation selector, an enclosing keycap) or a struck-through ``4̶`` is a 4.
* Decimal digits of every script (category Nd) made ASCII, one for one, and
  the dashes that Unicode lists as confusable with a hyphen made one.
* Cyrillic and Greek letters that look like Latin ones made Latin, in the words
  (runs of non-space characters) that also hold an ASCII letter or digit, or that
  hold no other letters than look-alikes: ``maria@example.com`` with a Cyrillic
  a is checked as written in Latin, while Russian or Greek prose, and an address
  at a Cyrillic domain, keep their letters (made Latin, a domain ending in
  ``.рф`` would no longer end in a known suffix).

The first three can change the length (``ﬁ`` becomes ``fi``, a zero-width space
nothing); folding's ``Folded`` maps offsets back, so a value is reported at its
span in the original text, the invisible characters inside it included. The
look-alikes map one letter to one and change no offset.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

import regex

from guard.detectors.folding import ASTRAL, Folded, Piece, char_class

# Default-ignorable code points (Unicode's DerivedCoreProperties.txt) that are not
# format characters (Cf) and render as nothing.
_IGNORABLE = (
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x115F, 0x1160),  # Hangul choseong and jungseong fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian free variation selectors (and 180E, a Cf)
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xE0100, 0xE01EF),  # variation selectors supplement
)
# Dashes that confusables.txt gives the hyphen-minus as prototype (after NFKC,
# which makes U+2011, U+FE63 and U+FF0D one of these or a hyphen already).
_DASHES = frozenset("\u2010\u2012\u2013\u2212")

# Cyrillic and Greek letters whose prototype in Unicode's confusables.txt (UTS #39,
# the 2025-07-22 file) is one ASCII letter; capitals it sends to ``l`` (its
# prototype for ``I`` too) go to ``I``, so that an IBAN's country code reads as one.
# Digit look-alikes (Cyrillic ze for 3, be for 6) are left out: letters are not
# read as digits. A table rather than the confusable-homoglyphs package: that package
# answers whether a string mixes scripts confusably and lists every homoglyph of
# a character across all scripts, from JSON tables it loads at import; guard needs
# one Latin letter for each of a few dozen letters, which fits here.
_LOOKALIKES = {
    # Cyrillic
    "\u0410": "A",  # capital letter a
    "\u0412": "B",  # capital letter ve
    "\u0415": "E",  # capital letter ie
    "\u041a": "K",  # capital letter ka
    "\u041c": "M",  # capital letter em
    "\u041d": "H",  # capital letter en
    "\u041e": "O",  # capital letter o
    "\u0420": "P",  # capital letter er
    "\u0421": "C",  # capital letter es
    "\u0422": "T",  # capital letter te
    "\u0423": "Y",  # capital letter u
    "\u0425": "X",  # capital letter ha
    "\u042c": "b",  # capital letter soft sign
    "\u0405": "S",  # capital letter dze
    "\u0406": "I",  # capital letter byelorussian-ukrainian i
    "\u0408": "J",  # capital letter je
    "\u0474": "V",  # capital letter izhitsa
    "\u04ae": "Y",  # capital letter straight u
    "\u04c0": "I",  # letter palochka
    "\u050c": "G",  # capital letter komi sje
    "\u051c": "W",  # capital letter we
    "\u0430": "a",  # small letter a
    "\u0433": "r",  # small letter ghe
    "\u0435": "e",  # small letter ie
    "\u043e": "o",  # small letter o
    "\u0440": "p",  # small letter er
    "\u0441": "c",  # small letter es
    "\u0443": "y",  # small letter u
    "\u0445": "x",  # small letter ha
    "\u0448": "w",  # small letter sha
    "\u0455": "s",  # small letter dze
    "\u0456": "i",  # small letter byelorussian-ukrainian i
    "\u0458": "j",  # small letter je
    "\u0461": "w",  # small letter omega
    "\u0475": "v",  # small letter izhitsa
    "\u04af": "y",  # small letter straight u
    "\u04bb": "h",  # small letter shha
    "\u04bd": "e",  # small letter abkhasian che
    "\u04cf": "l",  # small letter palochka
    "\u0501": "d",  # small letter komi de
    "\u051b": "q",  # small letter qa
    "\u051d": "w",  # small letter we
    # Greek
    "\u0391": "A",  # capital letter alpha
    "\u0392": "B",  # capital letter beta
    "\u0395": "E",  # capital letter epsilon
    "\u0396": "Z",  # capital letter zeta
    "\u0397": "H",  # capital letter eta
    "\u0399": "I",  # capital letter iota
    "\u039a": "K",  # capital letter kappa
    "\u039c": "M",  # capital letter mu
    "\u039d": "N",  # capital letter nu
    "\u039f": "O",  # capital letter omicron
    "\u03a1": "P",  # capital letter rho
    "\u03a4": "T",  # capital letter tau
    "\u03a5": "Y",  # capital letter upsilon
    "\u03a7": "X",  # capital letter chi
    "\u037f": "J",  # capital letter yot
    "\u03dc": "F",  # letter digamma
    "\u03f9": "C",  # capital lunate sigma symbol
    "\u03fa": "M",  # capital letter san
    "\u03b1": "a",  # small letter alpha
    "\u03b3": "y",  # small letter gamma
    "\u03b9": "i",  # small letter iota
    "\u03bd": "v",  # small letter nu
    "\u03bf": "o",  # small letter omicron
    "\u03c1": "p",  # small letter rho
    "\u03c2": "c",  # small letter final sigma, NFKC of the lunate sigma symbol
    "\u03c3": "o",  # small letter sigma
    "\u03c5": "u",  # small letter upsilon
    "\u03f3": "j",  # letter yot
    "\u03f8": "p",  # small letter sho
}
_LATIN = str.maketrans(_LOOKALIKES)
_LOOKALIKE_CLASS = "".join(sorted(_LOOKALIKES))
# The words whose look-alikes are made Latin: runs of non-space characters that hold
# a look-alike and an ASCII letter or digit, or a look-alike and no other letter or
# digit (\w: letters, digits and ``_``).
_MIXED = re.compile(
    rf"(?<!\S)(?:(?=\S*[A-Za-z0-9])\S*[{_LOOKALIKE_CLASS}]\S*"
    rf"|[^\w\s]*[{_LOOKALIKE_CLASS}](?:[{_LOOKALIKE_CLASS}_]|[^\w\s])*(?!\S))"
)
_HAS_LOOKALIKE = re.compile(f"[{_LOOKALIKE_CLASS}]")


@dataclass(frozen=True, slots=True)
class Normalized:
    """A text as the pattern recognizers see it (``text``), as an NER model does
    (``clean``: look-alike letters kept, made Latin they would garble Cyrillic and
    Greek names), and the map from either's offsets to the original's (one letter
    stands for one between the two)."""

    text: str
    clean: str
    offsets: Folded

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of ``text[start:end]`` (not empty): from its first
        character's origin to its last's, what was dropped in between included."""
        return self.offsets.original_span(start, end)

    def original_index(self, index: int) -> int:
        """Where the character at ``index`` (or the end, at ``len(text)``) came from."""
        if index >= len(self.text):
            return self.offsets.original_span(index - 1, index)[1] if index else 0
        return self.offsets.original_span(index, index + 1)[0]


def normalize(text: str) -> Normalized | None:
    """``text`` normalized for detection, or None where that changes nothing (every
    ASCII text, most others)."""
    if text.isascii():
        return None
    clean, pieces = _cleaned(text)
    latin = _MIXED.sub(_made_latin, clean) if _HAS_LOOKALIKE.search(clean) else clean
    if latin == text:
        return None
    return Normalized(latin, clean, Folded(clean, pieces))


def _made_latin(word: re.Match[str]) -> str:
    return word.group().translate(_LATIN)


def _cleaned(text: str) -> tuple[str, list[Piece]]:
    """Steps one to three, with a piece wherever a character became other than one
    (``Folded``: ``(f, w, o, n)``, the ``w`` characters at ``f`` came from the ``n``
    at ``o``; ``w`` is 0 where characters were dropped). Python runs per changed
    character, and per astral one, only; the rest is copied in slices."""
    base, changes = _changes(text)
    parts: list[str] = []
    pieces: list[Piece] = []
    size = done = 0  # the output's length so far; the input consumed
    for at, seen in changes:
        if len(seen) == 1 and seen == text[at]:
            continue  # an astral character looked at and kept
        parts.append(base[done:at])
        size += at - done
        done = at + 1
        if not seen:
            _dropped(pieces, size, at, mark=unicodedata.category(text[at])[0] == "M")
        elif len(seen) != 1:
            pieces.append((size, len(seen), at, 1))
        parts.append(seen)
        size += len(seen)
    parts.append(base[done:])
    return "".join(parts), pieces


def _dropped(pieces: list[Piece], size: int, at: int, *, mark: bool) -> None:
    """Note that the character at ``at`` was dropped. A combining mark (a variation
    selector, a keycap) belongs to the character before it, so a span that ends
    there ends after the mark; anything else stands between its neighbours, outside
    a span that starts or ends next to it."""
    last = pieces[-1] if pieces else None
    if last and last[2] + last[3] == at and last[0] + last[1] == size and (mark or not last[1]):
        pieces[-1] = (last[0], last[1], last[2], last[3] + 1)
    elif mark and size:
        pieces.append((size - 1, 1, at - 1, 2))  # the character before came one for one
    else:
        pieces.append((size, 0, at, 1))


def _changes(text: str) -> tuple[str, list[tuple[int, str]]]:
    """The text with its one-for-one changes made where they are many (a text
    written in full-width letters: ``str.translate`` then takes a fifth of the time
    of one change at a time, and is slower where they are few, as the full-width
    commas of Chinese prose), and the changes left, in order: where a character
    becomes what."""
    tables = _tables()
    base, ones = text, []
    if len(tables.one_for_one.findall(text)) * _DENSE > len(text):
        base = text.translate(tables.table)
    else:
        table = tables.table
        ones = [(m.start(), table[ord(m.group())]) for m in tables.one_for_one.finditer(text)]
    found = [(m.start(), _seen(m.group())) for m in tables.other.finditer(text)]
    marks = [(at, "") for m in _MARKED_DIGIT.finditer(text) for at in range(m.start() + 1, m.end())]
    if not ones and not marks:
        return base, found
    return base, sorted(dict(ones + found + marks).items())


@functools.lru_cache(maxsize=4096)
def _seen(char: str) -> str:
    return _normalized_char(char)


def _normalized_char(char: str) -> str:
    """NFKC of one character, less what is invisible, its digits and dashes ASCII."""
    out = []
    for c in unicodedata.normalize("NFKC", char):
        if _invisible(c):
            continue
        if c in _DASHES:
            out.append("-")
        elif not c.isascii() and c.isdecimal():  # category Nd
            out.append(str(unicodedata.digit(c)))
        else:
            out.append(c)
    return "".join(out)


def _invisible(char: str) -> bool:
    code = ord(char)
    return unicodedata.category(char) == "Cf" or any(a <= code <= b for a, b in _IGNORABLE)


_DENSE = 8  # one changed character in this many or more: translate the text
# A digit with combining marks on it (the marks are dropped). ``regex`` for the
# property classes; the characters of ``_tables`` are found with ``re``, which
# tests a large class 200 times faster (10 KB of text: 0.04 ms against 7 ms).
_MARKED_DIGIT = regex.compile(r"\p{Nd}\p{M}+")


@dataclass(frozen=True, slots=True)
class _Tables:
    one_for_one: re.Pattern[str]  # characters of the BMP that become one other
    table: dict[int, str]  # what each of those becomes, for str.translate
    other: re.Pattern[str]  # those that become none or several, and every astral one


@functools.cache
def _tables() -> _Tables:
    """The characters of the Basic Multilingual Plane that normalization changes,
    listed once (about 20 ms; ``prepare``). Astral characters are looked at one by
    one (listing them would take seconds)."""
    ignorable = {chr(code) for a, b in _IGNORABLE if b < 0x10000 for code in range(a, b + 1)}
    changed = {
        code: _normalized_char(char)
        for code in range(0x80, 0x10000)
        if (char := chr(code)) in _DASHES
        or char in ignorable
        or char.isdecimal()  # category Nd
        or unicodedata.category(char) == "Cf"
        or unicodedata.normalize("NFKC", char) != char
    }
    table = {code: seen for code, seen in changed.items() if len(seen) == 1}
    other = [code for code, seen in changed.items() if len(seen) != 1]
    return _Tables(
        re.compile(char_class(list(table))),
        table,
        re.compile(char_class(other, ASTRAL)),
    )


def prepare() -> None:
    """Build the tables of changing characters now, at load rather than in a request."""
    _tables()
