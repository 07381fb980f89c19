"""Acting on a decision: the replacement text for each redacted span, and applying it."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping, Sequence

from guard.detectors.base import Finding
from guard.policy.decision import Redaction
from guard.policy.pseudonyms import Pseudonyms
from guard.settings import PolicySettings

_MASK_KEEP = 4  # trailing characters a mask keeps, on values long enough to spare them
_MASK_MIN = 8


class Redactor:
    """Turns findings into redactions by the methods of the redact rules that matched.
    ``hash`` is an HMAC of the tenant and the value under the key given, so equal
    values give equal tokens within a tenant and different ones across tenants.
    ``pseudonymize`` leaves the placeholder to the exchange's own map
    (guard.policy.pseudonyms), applied with the redactions."""

    def __init__(self, hash_key: bytes) -> None:
        self._key = hash_key

    @classmethod
    def from_settings(cls, settings: PolicySettings) -> Redactor:
        """Keyed by ``policy.hash_key_env``; without it, by a new key per process."""
        env = settings.hash_key_env
        return cls(os.environ[env].encode() if env else secrets.token_bytes(32))

    def redactions(
        self,
        findings: Sequence[Finding],
        texts: Sequence[str],
        rules: Sequence[Mapping[str, str]],
        tenant: str | None = None,
    ) -> tuple[Redaction, ...]:
        out: list[Redaction] = []
        for finding in findings:
            if finding.span is None:
                continue
            method = _method(finding.label, rules)
            if method is None:
                continue
            start, end = finding.span
            index, label = finding.text_index, finding.label
            if method == "pseudonymize":
                out.append(Redaction(index, start, end, f"<{label}>", pseudonym=label))
                continue
            value = texts[index][start:end]
            out.append(Redaction(index, start, end, self.replace(method, label, value, tenant)))
        return tuple(out)

    def replace(self, method: str, label: str, value: str, tenant: str | None = None) -> str:
        if method == "mask":
            return mask(value)
        if method == "hash":
            keyed = f"{tenant or ''}\0{value}".encode()
            digest = hmac.new(self._key, keyed, hashlib.sha256).hexdigest()
            return f"<{label}:{digest[:12]}>"
        return f"<{label}>"


def _method(label: str, rules: Sequence[Mapping[str, str]]) -> str | None:
    """The first redact rule (in order) that names the label decides its method."""
    for methods in rules:
        method = methods.get(label) or methods.get("*")
        if method:
            return method
    return None


def mask(value: str) -> str:
    """``****1234``: the last characters stay on long values (a card's last four)."""
    if len(value) < _MASK_MIN:
        return "*" * len(value)
    return "*" * (len(value) - _MASK_KEEP) + value[-_MASK_KEEP:]


def apply_redactions(
    texts: Sequence[str], redactions: Sequence[Redaction], pseudonyms: Pseudonyms | None = None
) -> list[str]:
    """New texts with every span replaced; overlapping spans merge into the first.
    Pseudonyms come from ``pseudonyms``, numbered in order of appearance; without a
    map, a pseudonymized span is replaced by its entity type."""
    out = list(texts)
    by_text: dict[int, list[Redaction]] = {}
    for red in redactions:
        by_text.setdefault(red.text_index, []).append(red)
    for index in sorted(by_text):
        reds = sorted(by_text[index], key=lambda r: (r.start, -r.end))
        if pseudonyms is not None:
            text = out[index]
            reds = [
                dataclasses.replace(
                    r, replacement=pseudonyms.token(r.pseudonym, text[r.start : r.end])
                )
                if r.pseudonym
                else r
                for r in reds
            ]
        out[index] = _redact_one(out[index], reds)
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
