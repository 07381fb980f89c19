"""Reversible pseudonyms: ``<PERSON_1>`` for a value in a prompt, the value again in
the answer.

One ``Pseudonyms`` map belongs to one exchange, or to one conversation when the
client names it (guard.policy.vault keeps it between turns, encrypted, with a
TTL); never to a detector, a policy or anything else that requests share. Equal
values get equal placeholders; the numbering is per entity type.

Restoring is string replacement: a model's answer has no entity positions, only
the placeholders it repeated. Only placeholders in this map are restored, and on
a stream the tail that may still grow into one is held back until it is whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import regex

from guard.policy.decision import Redaction

# <LABEL_N>: the shape every placeholder has, and the partial one a stream may end with.
PLACEHOLDER = regex.compile(r"<([A-Z][A-Z0-9_]{0,63})_([1-9][0-9]{0,5})>")
_MAX_PLACEHOLDER = 74


class Pseudonyms:
    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str], str] = {}
        self._values: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        self.changed = False

    def __len__(self) -> int:
        return len(self._values)

    def token(self, label: str, value: str) -> str:
        """The placeholder of ``value``, the same every time it is asked for."""
        key = (label, value)
        found = self._tokens.get(key)
        if found is None:
            number = self._counts.get(label, 0) + 1
            self._counts[label] = number
            found = self._tokens[key] = f"<{label}_{number}>"
            self._values[found] = value
            self.changed = True
        return found

    def restorations(self, texts: Sequence[str]) -> list[Redaction]:
        """The placeholders of this map in ``texts``, each to be replaced by its value."""
        if not self._values:
            return []
        return [
            Redaction(index, match.start(), match.end(), self._values[match.group()])
            for index, text in enumerate(texts)
            for match in PLACEHOLDER.finditer(text)
            if match.group() in self._values
        ]

    def holdback(self, text: str) -> int:
        """How many trailing characters may still become a placeholder of this map."""
        if not self._values:
            return 0
        tail = text[-_MAX_PLACEHOLDER:]
        at = tail.rfind("<")
        if at < 0:
            return 0
        match = PLACEHOLDER.fullmatch(tail[at:], partial=True)
        return len(tail) - at if match is not None and match.partial else 0

    def pairs(self) -> Iterator[tuple[str, str]]:
        """(value, placeholder), longest value first (for re-pseudonymizing a text)."""
        for placeholder, value in sorted(self._values.items(), key=lambda kv: -len(kv[1])):
            yield value, placeholder

    def dumps(self) -> bytes:
        return json.dumps([[p, v] for p, v in self._values.items()]).encode()

    @classmethod
    def loads(cls, data: bytes) -> Pseudonyms:
        out = cls()
        for placeholder, value in json.loads(data):
            match = PLACEHOLDER.fullmatch(placeholder)
            if match is None or not isinstance(value, str):
                raise ValueError("not a pseudonym map")
            label, number = match.group(1), int(match.group(2))
            out._tokens[(label, value)] = placeholder
            out._values[placeholder] = value
            out._counts[label] = max(number, out._counts.get(label, 0))
        return out
