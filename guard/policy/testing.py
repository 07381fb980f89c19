"""Running a bundle's own test cases through its real detectors and engine.

Each case is decided by the whole bundle, as in production: another policy's rule
that matches the same text changes the outcome, and the test shows it. ``action``
is what is enforced; for a case of a ``monitor`` policy, what that policy would do.
``rules`` lists exactly the rules of the case's own policy that match.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from guard.detectors.base import Direction, ScanContext
from guard.errors import ConfigError
from guard.policy.actions import apply_redactions
from guard.policy.decision import Action, Decision, RuleMatch
from guard.policy.loader import Loaded, Problem
from guard.policy.pseudonyms import Pseudonyms
from guard.policy.schema import PolicyTest
from guard.registry.cards import ModelCard
from guard.settings import ModelSettings
from guard.tenancy import Tenant

_DEFAULT_MODEL: dict[str, Any] = {
    "name": "test-model",
    "licence": {"id": "apache-2.0", "commercial_use": True},
}


@dataclass(frozen=True, slots=True)
class Outcome:
    file: str
    policy: str
    case: str
    failures: tuple[str, ...]  # empty: passed

    @property
    def passed(self) -> bool:
        return not self.failures


async def run_tests(loaded: Loaded, models: Mapping[str, ModelCard] | None = None) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for item in loaded.checked.parsed:
        own = {rule.id for rule in item.policy.rules}
        monitor = item.policy.mode == "monitor"
        for case in item.policy.tests:
            try:
                failures = await _run_case(loaded, case, own, monitor, models or {})
            except ConfigError as exc:
                failures = [f"cannot run: {exc}"]
            outcomes.append(Outcome(item.file, item.policy.name, case.name, tuple(failures)))
    return outcomes


def failed_problems(outcomes: Sequence[Outcome]) -> list[Problem]:
    """Failed cases as bundle problems (a reload that fails its tests is rejected)."""
    return [
        Problem(o.file, None, None, f"test {o.case!r}", "; ".join(o.failures))
        for o in outcomes
        if not o.passed
    ]


async def _run_case(
    loaded: Loaded,
    case: PolicyTest,
    own: set[str],
    monitor: bool,
    models: Mapping[str, ModelCard],
) -> list[str]:
    spec = case.context
    ctx = ScanContext(
        direction=Direction(case.direction),
        route=spec.route,
        model=model_card(spec.model, models),
        stream=spec.stream,
        tenant=_tenant(spec.tenant),
    )
    texts = case.texts
    _, decision = await loaded.bundle.check(texts, ctx)
    return _compare(case, decision, texts, own, monitor)


def _compare(
    case: PolicyTest, decision: Decision, texts: list[str], own: set[str], monitor: bool
) -> list[str]:
    expect = case.expect
    failures: list[str] = []
    mine = [m for m in decision.hits() if m.rule_id in own]
    action = _would(mine) if monitor else decision.action
    if action is not Action[expect.action.upper()]:
        failures.append(f"action: expected {expect.action}, got {action.name.lower()}")
    if expect.rules is not None:
        got = sorted({m.rule_id for m in mine})
        if got != sorted(set(expect.rules)):
            failures.append(f"rules: expected {sorted(set(expect.rules))}, got {got}")
    if expect.status is not None and decision.blocks and decision.status != expect.status:
        failures.append(f"status: expected {expect.status}, got {decision.status}")
    if expect.redacted is not None:
        got_texts = apply_redactions(texts, decision.redactions, Pseudonyms())
        wanted = [expect.redacted] if isinstance(expect.redacted, str) else expect.redacted
        if got_texts != wanted:
            failures.append(f"redacted: expected {wanted!r}, got {got_texts!r}")
    return failures


def _would(matches: Sequence[RuleMatch]) -> Action:
    return max((m.action for m in matches), default=Action.ALLOW)


def model_card(spec: str | dict[str, Any] | None, models: Mapping[str, ModelCard]) -> ModelCard:
    if isinstance(spec, str):
        card = models.get(spec)
        if card is None:
            raise ConfigError(f"context.model: no configured model named {spec!r}")
        return card
    data = {**_DEFAULT_MODEL, **(spec or {}), "upstream": "test"}
    try:
        return ModelCard.from_settings(ModelSettings.model_validate(data))
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        key = ".".join(str(p) for p in error["loc"])
        raise ConfigError(f"context.model.{key}: {error['msg']}") from None


def _tenant(spec: dict[str, Any] | None) -> Tenant | None:
    if spec is None:
        return None
    attributes = {k: v for k, v in spec.items() if k != "id"}
    return Tenant(str(spec.get("id", "test-tenant")), MappingProxyType(attributes))
