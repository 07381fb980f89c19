"""The ``patterns`` detector: a policy's own regexes and keyword lists, and built-in secrets.

Each policy says what to look for in its ``detectors.patterns`` section::

    regexes:  [{name: EMPLOYEE_ID, pattern: 'EMP-\\d{6}', ignore_case: false, score: 1.0}]
    keywords: [{name: PROJECT_CODENAME, phrases: ["Blue Falcon", "nightjar"]}]
    secrets:  true            # or a list of the labels in guard.detectors.secrets

A name is the label its findings carry. The detector built for a bundle looks for
what every policy asked for; a name two policies define differently is an error,
because one label must mean one thing to every rule that names it.

Keywords match whole words, case-insensitively and after NFKC, so ``Nightjar`` and
its full-width form find ``nightjar``; spans are in the original text,
even where normalizing changed its length (the ligature ``ﬁ`` becomes ``fi``). The
phrases of one list form one trie-shaped regex, so a thousand phrases cost about
as much as a handful (the engine tries one branch per distinct next character).

Findings carry a label, a score and a span, never the matched text.
"""

from __future__ import annotations

import asyncio
import importlib
import re
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Self, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from guard.detectors.base import Direction, Finding, ScanContext
from guard.detectors.folding import fold, fold_phrase, prepare
from guard.detectors.registry import DetectorEntry
from guard.detectors.secrets import SECRET_LABELS, SecretRule, find_secrets, rules_for
from guard.errors import ConfigError

NAME = "patterns"
# Up to this many characters in one call, scanning costs well under a millisecond
# and runs on the event loop; above, it moves to a worker thread.
INLINE_LIMIT = 16 * 1024

# CPython's own regex parser knows a pattern's least width; no public API does.
_re_parser = importlib.import_module("re._parser")

Label = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]*$", max_length=64)]
Score = Annotated[float, Field(gt=0.0, le=1.0)]
Phrase = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class RegexRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Label
    pattern: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    ignore_case: bool = False
    score: Score = 1.0

    @model_validator(mode="after")
    def _compiles(self) -> Self:
        try:
            compiled = self.compiled()
        except re.error as exc:
            raise ValueError(f"regex {self.name}: {exc.msg} at position {exc.pos}") from None
        if _can_match_empty(compiled):
            # An empty match has no text to redact, and `a*` would "find" one everywhere.
            raise ValueError(f"regex {self.name} can match the empty string")
        return self

    def compiled(self) -> re.Pattern[str]:
        return re.compile(self.pattern, re.IGNORECASE if self.ignore_case else 0)

    def definition(self) -> tuple[object, ...]:
        return ("regex", self.pattern, self.ignore_case, self.score)


class KeywordList(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Label
    phrases: tuple[Phrase, ...] = Field(min_length=1)
    score: Score = 1.0

    @model_validator(mode="after")
    def _no_blank_phrase(self) -> Self:
        if not all(map(fold_phrase, self.phrases)):
            raise ValueError(f"keywords {self.name}: a phrase is blank")
        return self

    def folded_phrases(self) -> frozenset[str]:
        return frozenset(map(fold_phrase, self.phrases))

    def definition(self) -> tuple[object, ...]:
        # Order, case and width of the phrases do not change what the list finds.
        return ("keywords", self.folded_phrases(), self.score)


class PatternsConfig(BaseModel):
    """One policy's ``detectors.patterns`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    regexes: tuple[RegexRule, ...] = ()
    keywords: tuple[KeywordList, ...] = ()
    secrets: bool | tuple[str, ...] = False

    @field_validator("secrets")
    @classmethod
    def _known_secrets(cls, value: bool | tuple[str, ...]) -> bool | tuple[str, ...]:
        if isinstance(value, tuple) and (unknown := sorted(set(value) - set(SECRET_LABELS))):
            known = ", ".join(SECRET_LABELS)
            raise ValueError(f"unknown secret label {', '.join(unknown)} (known: {known})")
        return value

    @model_validator(mode="after")
    def _names_unique_and_own(self) -> Self:
        counts = Counter(rule.name for rule in self.rules())
        if twice := sorted(name for name, n in counts.items() if n > 1):
            raise ValueError(f"{', '.join(twice)} defined more than once")
        # A policy's own rule must not pass for a built-in secret (or hide one).
        if taken := sorted(set(counts) & set(SECRET_LABELS)):
            raise ValueError(
                f"{', '.join(taken)} is a built-in secret label: enable it under "
                "`secrets` or choose another name"
            )
        return self

    def rules(self) -> list[RegexRule | KeywordList]:
        return [*self.regexes, *self.keywords]

    def enabled_secrets(self) -> frozenset[str]:
        if isinstance(self.secrets, bool):
            return frozenset(SECRET_LABELS if self.secrets else ())
        return frozenset(self.secrets)

    def labels(self) -> frozenset[str]:
        names = {rule.name for rule in self.rules()}
        return frozenset(names) | self.enabled_secrets()


def _can_match_empty(regex: re.Pattern[str]) -> bool:
    """Whether the pattern's least width is zero. `search("")` alone would let `\\b`
    or `(?=x)` through, which match only empty strings, inside a text."""
    least, _ = _re_parser.parse(regex.pattern, regex.flags).getwidth()
    return int(least) == 0


_Trie: TypeAlias = dict[str, "_Trie"]
_END = ""  # the key that marks "a phrase ends here"; every atom is non-empty
# Scripts written without spaces between words (Thai, Lao, Myanmar, Khmer, kana,
# CJK ideographs) and Hangul, whose particles attach to the noun: a phrase edge in
# one of them needs no word boundary, or 机密 would never be found in 这是机密文件.
_UNSPACED = (
    "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f"
)
_FREE_EDGE = f"[\\W{_UNSPACED}]"  # a phrase edge that carries its own boundary
_FREE = re.compile(_FREE_EDGE)


def keyword_regex(phrases: Collection[str]) -> re.Pattern[str]:
    """Folded phrases as one regex over folded text, on word boundaries. A phrase
    that starts or ends with a non-word character (`c++`, `#ops`) or an unspaced
    script's character carries its own boundary there."""
    trie: _Trie = {}
    for phrase in phrases:
        node = trie
        for char in phrase:
            node = node.setdefault(r"\s+" if char == " " else re.escape(char), {})
        node[_END] = {}
    left, right = r"(?<!\w)", r"(?!\w)"
    if any(_FREE.match(p[0]) or _FREE.match(p[-1]) for p in phrases):
        left, right = f"(?:{left}|(?={_FREE_EDGE}))", f"(?:{right}|(?<={_FREE_EDGE}))"
    return re.compile(left + _trie_regex(trie) + right)


def _trie_regex(node: _Trie) -> str:
    # Sibling branches start with different characters, so at most one applies;
    # a phrase's end is a greedy `?`, so the longest phrase wins and a shorter one
    # remains when the longer one's boundary fails.
    branches = [atom + _trie_regex(child) for atom, child in sorted(node.items()) if atom]
    if not branches:
        return ""
    optional = _END in node
    if len(branches) == 1 and not optional:
        return branches[0]
    return "(?:" + "|".join(branches) + ")" + ("?" if optional else "")


# The detector.


@dataclass(frozen=True, slots=True)
class _Rule:
    label: str
    regex: re.Pattern[str]
    score: float


class PatternsDetector:
    name = NAME
    directions = frozenset(Direction)

    def __init__(
        self,
        regexes: Sequence[_Rule] = (),
        keywords: Sequence[_Rule] = (),
        secrets: Sequence[SecretRule] = (),
        inline_limit: int = INLINE_LIMIT,
    ) -> None:
        self._regexes = tuple(regexes)
        self._keywords = tuple(keywords)
        self._secrets = tuple(secrets)
        self._inline_limit = inline_limit

    def offloads(self, texts: Sequence[str]) -> bool:
        """Whether these texts are scanned in a worker thread, off the event loop."""
        return sum(map(len, texts)) > self._inline_limit

    def scan_inline(self, texts: Sequence[str]) -> list[Finding] | None:
        return None if self.offloads(texts) else self.scan(texts)

    async def detect(self, texts: Sequence[str], ctx: ScanContext) -> list[Finding]:
        found = self.scan_inline(texts)
        return found if found is not None else await asyncio.to_thread(self.scan, tuple(texts))

    def scan(self, texts: Sequence[str]) -> list[Finding]:
        """The findings in order of text, position and label; each reported once."""
        found = {finding for i, text in enumerate(texts) for finding in self._scan_text(i, text)}
        return sorted(found, key=lambda f: (f.text_index, f.span, f.label))

    def _scan_text(self, index: int, text: str) -> Iterator[Finding]:
        for rule in self._regexes:
            for match in rule.regex.finditer(text):
                if match.end() > match.start():
                    yield Finding(NAME, rule.label, rule.score, index, match.span())
        if self._keywords:
            folded = fold(text)
            for rule in self._keywords:
                for match in rule.regex.finditer(folded.text):
                    span = folded.original_span(*match.span())
                    yield Finding(NAME, rule.label, rule.score, index, span)
        for secret in find_secrets(text, self._secrets):
            yield Finding(NAME, secret.label, secret.score, index, (secret.start, secret.end))


# The registry's entry: merge every policy's config into one detector.


@dataclass(frozen=True, slots=True)
class MergedPatterns:
    regexes: tuple[RegexRule, ...]
    keywords: tuple[KeywordList, ...]
    secrets: frozenset[str]


def merge(configs: Sequence[PatternsConfig]) -> MergedPatterns:
    """One set of rules from every policy's; a name defined twice must be defined
    the same way both times."""
    defined: dict[str, RegexRule | KeywordList] = {}
    for config in configs:
        for rule in config.rules():
            first = defined.setdefault(rule.name, rule)
            if first.definition() != rule.definition():
                raise ConfigError(
                    f"patterns: {rule.name} is defined differently by two policies; "
                    "one label must mean one thing (rename one of them)"
                )
    return MergedPatterns(
        regexes=tuple(r for r in defined.values() if isinstance(r, RegexRule)),
        keywords=tuple(k for k in defined.values() if isinstance(k, KeywordList)),
        secrets=frozenset().union(*(c.enabled_secrets() for c in configs)),
    )


def build(options: Mapping[str, Any], configs: Sequence[BaseModel]) -> PatternsDetector:
    if options:
        raise ConfigError(f"patterns takes no options, got: {', '.join(sorted(options))}")
    merged = merge(_own(configs))
    if merged.keywords:
        prepare()
    return PatternsDetector(
        regexes=[_Rule(r.name, r.compiled(), r.score) for r in merged.regexes],
        keywords=[
            _Rule(k.name, keyword_regex(k.folded_phrases()), k.score) for k in merged.keywords
        ],
        secrets=rules_for(merged.secrets),
    )


def labels(configs: Sequence[BaseModel]) -> frozenset[str]:
    return frozenset().union(*(config.labels() for config in _own(configs)))


def _own(configs: Sequence[BaseModel]) -> list[PatternsConfig]:
    for config in configs:
        if not isinstance(config, PatternsConfig):
            raise TypeError(f"patterns: expected PatternsConfig, got {type(config).__name__}")
    return [c for c in configs if isinstance(c, PatternsConfig)]


ENTRY = DetectorEntry(factory=build, config=PatternsConfig, labels=labels)
