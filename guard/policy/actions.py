"""Apply a decision's redactions to texts (replacement is decided by the engine)."""

from __future__ import annotations

from collections.abc import Sequence

from guard.policy.engine import Redaction


def apply_redactions(texts: Sequence[str], redactions: Sequence[Redaction]) -> list[str]:
    """New texts with every span replaced; overlapping spans merge into the first."""
    out = list(texts)
    by_text: dict[int, list[Redaction]] = {}
    for red in redactions:
        by_text.setdefault(red.text_index, []).append(red)
    for index, reds in by_text.items():
        out[index] = _redact_one(out[index], sorted(reds, key=lambda r: (r.start, -r.end)))
    return out


def _redact_one(text: str, reds: list[Redaction]) -> str:
    parts: list[str] = []
    cursor = 0
    for red in reds:
        if red.end <= cursor:
            continue  # inside a span already replaced
        parts.append(text[cursor : max(cursor, red.start)])
        if red.start >= cursor:
            parts.append(red.replacement)
        cursor = red.end
    parts.append(text[cursor:])
    return "".join(parts)
