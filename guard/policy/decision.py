"""What the policy engine hands the pipeline: a Decision, with the rules behind it."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Action(enum.IntEnum):
    """Ordered by strictness: when several rules match, the highest wins."""

    ALLOW = 0
    FLAG = 1
    REDACT = 2
    BLOCK = 3


@dataclass(frozen=True, slots=True)
class Redaction:
    """Replace ``texts[text_index][start:end]`` with ``replacement``; or, where
    ``pseudonym`` names an entity type, with the exchange's placeholder for the value
    (``<PERSON_1>``), which only the exchange's own map can give."""

    text_index: int
    start: int
    end: int
    replacement: str
    pseudonym: str | None = None


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """A rule that matched, with its own action; ``monitor`` rules are never acted on."""

    rule_id: str
    action: Action
    mode: str = "enforce"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action = Action.ALLOW
    rule_ids: tuple[str, ...] = ()
    message: str = ""
    status: int = 403
    redactions: tuple[Redaction, ...] = ()
    matches: tuple[RuleMatch, ...] = ()  # every matching rule; empty: rule_ids took `action`
    degraded: bool = False  # a check failed and its rule said on_error: allow

    @property
    def blocks(self) -> bool:
        return self.action is Action.BLOCK

    def hits(self) -> list[RuleMatch]:
        """Every rule that matched, each with its own action and mode."""
        if self.matches:
            return list(self.matches)
        return [RuleMatch(rule, self.action) for rule in self.rule_ids]


ALLOW = Decision()
UNCHECKED_MESSAGE = "The content could not be checked and was not forwarded."
