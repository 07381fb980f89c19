"""The policy engine: findings and context in, one ``Decision`` out. Only it decides.

The pipeline asks ``Guardrails.check(texts, ctx)``: the detectors that the policies
in scope need run, then every rule in scope is evaluated. All matching rules are
recorded; the strictest action of the enforced ones wins (block > redact > flag >
allow); rules of ``monitor`` policies are recorded and never acted on. A rule whose
detector failed, or whose expression could not be evaluated, follows its
``on_error``: block (fail closed), or allow and mark the decision degraded.

A loaded bundle (guard.policy.loader) is immutable: a reload builds a new one, and
an exchange keeps the one it started with.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from guard.detectors.base import (
    Closes,
    Describes,
    Detector,
    Direction,
    Incremental,
    ScanContext,
    Versioned,
)
from guard.detectors.runner import DetectorRunner, ScanResult
from guard.policy.actions import Redactor
from guard.policy.conditions import Check, ExpressionError, Facts
from guard.policy.decision import (
    ALLOW,
    UNCHECKED_MESSAGE,
    Action,
    Decision,
    Redaction,
    RuleMatch,
)

log = logging.getLogger(__name__)
Select = Callable[[ScanResult], ScanResult]
_PLAN_CACHE_MAX = 4096


class Guardrails(Protocol):
    """What the pipeline asks: one loaded set of detectors and policies."""

    @property
    def version(self) -> str:
        """Recorded with every decision."""
        ...

    def active(self, ctx: ScanContext) -> bool:
        """Whether anything would be checked in this scope (else the text goes on as is)."""
        ...

    def detector_names(self) -> list[str]: ...

    def detector_info(self) -> dict[str, dict[str, object]]:
        """What each detector has loaded and can find, where it says."""
        ...

    def detector_versions(self) -> dict[str, str]:
        """Detector name -> what produces its findings (model, revision, licence, device),
        for the detectors that say (``Versioned``); read for every audited exchange."""
        ...

    def holds(self, ctx: ScanContext) -> bool:
        """Whether a rule in this scope could change or stop the text (redact, block), so
        that streamed text must wait for its scan; else it flows on at once."""
        ...

    def holdback(self, text: str, ctx: ScanContext) -> int | None:
        """How many trailing characters of a streamed text a rule in this scope may still
        change once more text follows (0: none); None where a detector cannot say."""
        ...

    async def check(
        self, texts: Sequence[str], ctx: ScanContext, select: Select | None = None
    ) -> tuple[ScanResult, Decision]:
        """Scan, then decide; ``select`` may narrow the scan's findings in between (a
        stream decides only about the text it is about to release)."""
        ...

    def close(self) -> None:
        """guard is stopping: the detectors let go of what they hold."""
        ...


class PolicyEngine(Protocol):
    """A fixed engine in code (embedders, tests): decides over every detector's scan."""

    @property
    def version(self) -> str: ...

    def decide(self, scan: ScanResult, ctx: ScanContext) -> Decision: ...


class AllowAll:
    """No policies: allow scanned text, block text a detector failed to scan."""

    version = "builtin:allow-all"

    def decide(self, scan: ScanResult, ctx: ScanContext) -> Decision:
        if scan.failed:
            return Decision(
                action=Action.BLOCK,
                rule_ids=("guard.detector_failed",),
                message=UNCHECKED_MESSAGE,
                status=503,
            )
        return ALLOW


class FixedGuardrails:
    """Every given detector, decided by one engine in code."""

    def __init__(self, detectors: Sequence[Detector], engine: PolicyEngine, timeout: float) -> None:
        self._runner = DetectorRunner(detectors, timeout)
        self._engine = engine
        self._versioned = _versioned(detectors)

    @property
    def version(self) -> str:
        return self._engine.version

    def active(self, ctx: ScanContext) -> bool:
        return self._runner.active(ctx.direction)

    def detector_names(self) -> list[str]:
        return self._runner.names()

    def detector_info(self) -> dict[str, dict[str, object]]:
        return _info(self._runner.detectors())

    def detector_versions(self) -> dict[str, str]:
        return _versions(self._versioned)

    def holds(self, ctx: ScanContext) -> bool:
        return self.active(ctx)  # an engine in code may do anything

    def holdback(self, text: str, ctx: ScanContext) -> int | None:
        return _holdback(self._runner.detectors(ctx.direction), text)

    async def check(
        self, texts: Sequence[str], ctx: ScanContext, select: Select | None = None
    ) -> tuple[ScanResult, Decision]:
        scan = await self._runner.scan(texts, ctx)
        if select is not None:
            scan = select(scan)
        started = time.perf_counter()
        decision = self._engine.decide(scan, ctx)
        return _timed(scan, started), decision

    def close(self) -> None:
        _close(self._runner.detectors())


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: str
    action: Action
    monitor: bool
    check: Check
    needs: frozenset[str]  # detectors whose failure triggers on_error
    fail_closed: bool
    status: int
    message: str
    redact: Mapping[str, str]
    directions: frozenset[Direction] = frozenset(Direction)  # where its condition can hold


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    name: str
    directions: frozenset[Direction]
    tenants: frozenset[str]
    models: re.Pattern[str] | None
    routes: re.Pattern[str] | None
    detectors: tuple[str, ...]
    rules: tuple[CompiledRule, ...]

    def applies(self, ctx: ScanContext) -> bool:
        if ctx.direction not in self.directions:
            return False
        if self.tenants and (ctx.tenant is None or ctx.tenant.id not in self.tenants):
            return False
        if self.models is not None and not self.models.match(ctx.model.name):
            return False
        return self.routes is None or bool(self.routes.match(ctx.route))


def globs(patterns: Sequence[str]) -> re.Pattern[str] | None:
    """One compiled pattern for a scope list; None for an empty list (everything)."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


class Plan:
    """The rules in one scope and the detectors they need, evaluated in order."""

    def __init__(
        self, rules: Sequence[CompiledRule], detectors: Sequence[Detector], timeout: float
    ) -> None:
        self.rules = tuple(rules)
        self.detectors = tuple(detectors)
        self.runner = DetectorRunner(detectors, timeout)
        holding = [
            r for r in self.rules if not r.monitor and (r.action >= Action.REDACT or r.fail_closed)
        ]
        self.holds = bool(holding)
        # Only the detectors of rules that may change or stop the text bound what a
        # stream must hold back; a flag rule's detector scans what flows on.
        needed = {name for rule in holding for name in rule.needs}
        if any("*" in rule.redact for rule in holding):  # redacts every detector's findings
            needed = {d.name for d in self.detectors}
        self._holding = tuple(d for d in self.detectors if d.name in needed)

    def holdback(self, text: str) -> int | None:
        return _holdback(self._holding, text) if self.holds else 0

    def decide(
        self, scan: ScanResult, ctx: ScanContext, texts: Sequence[str], redactor: Redactor
    ) -> Decision:
        facts = facts_of(scan, ctx, texts)
        failed = frozenset(scan.failed)
        hits: list[tuple[CompiledRule, Action]] = []
        degraded = False
        for rule in self.rules:
            matched = _evaluate(rule, facts, failed)
            if matched is None:
                if rule.fail_closed:
                    hits.append((rule, Action.BLOCK))
                else:
                    degraded = True
            elif matched:
                hits.append((rule, rule.action))
        tenant = ctx.tenant.id if ctx.tenant else None
        return _decision(hits, degraded, scan, texts, redactor, tenant=tenant)


def _evaluate(rule: CompiledRule, facts: Facts, failed: frozenset[str]) -> bool | None:
    """Whether the rule matches; None when it could not be checked."""
    if rule.needs & failed:
        return None
    try:
        return rule.check(facts)
    except ExpressionError as exc:
        # The reason names the expression's keys, never the exchange's values.
        log.warning("policy rule %s could not be evaluated: %s", rule.id, exc)
        return None


def _decision(
    hits: list[tuple[CompiledRule, Action]],
    degraded: bool,
    scan: ScanResult,
    texts: Sequence[str],
    redactor: Redactor,
    *,
    tenant: str | None,
) -> Decision:
    matches = tuple(
        RuleMatch(rule.id, action, "monitor" if rule.monitor else "enforce")
        for rule, action in hits
    )
    enforced = [(rule, action) for rule, action in hits if not rule.monitor]
    if not enforced:
        return Decision(matches=matches, degraded=degraded)
    action = max(action for _, action in enforced)
    ids = tuple(rule.id for rule, _ in enforced)
    if action is Action.BLOCK:
        rule = next(rule for rule, act in enforced if act is Action.BLOCK)
        failed_check = rule.action is not Action.BLOCK
        return Decision(
            action,
            ids,
            UNCHECKED_MESSAGE if failed_check else rule.message,
            503 if failed_check else rule.status,
            matches=matches,
            degraded=degraded,
        )
    redactions: tuple[Redaction, ...] = ()
    if action is Action.REDACT:
        methods = [rule.redact for rule, act in enforced if act is Action.REDACT]
        redactions = redactor.redactions(scan.findings, texts, methods, tenant)
    return Decision(action, ids, redactions=redactions, matches=matches, degraded=degraded)


def _holdback(detectors: Sequence[Detector], text: str) -> int | None:
    if not all(isinstance(d, Incremental) for d in detectors):
        return None
    return max((d.holdback(text) for d in detectors if isinstance(d, Incremental)), default=0)


def _close(detectors: Sequence[Detector]) -> None:
    """Each that ``Closes``; one that fails to does not keep the rest (or the rest of
    guard's stop: the audit writer's flush comes after) from closing."""
    for detector in detectors:
        if isinstance(detector, Closes):
            try:
                detector.close()
            except Exception as exc:  # noqa: BLE001  # logged, and the stop goes on
                log.warning("detector %s did not close: %s", detector.name, type(exc).__name__)


def _info(detectors: Sequence[Detector]) -> dict[str, dict[str, object]]:
    return {d.name: d.describe() if isinstance(d, Describes) else {} for d in detectors}


def _versioned(detectors: Sequence[Detector]) -> tuple[tuple[str, Versioned], ...]:
    """The detectors that say their version, by the name their scans carry, picked once:
    a protocol check costs microseconds, and versions are read on the request path."""
    return tuple((d.name, d) for d in detectors if isinstance(d, Versioned))


def _versions(versioned: Sequence[tuple[str, Versioned]]) -> dict[str, str]:
    return {name: d.version() for name, d in versioned}


def _timed(scan: ScanResult, started: float) -> ScanResult:
    """The scan with the policy's own evaluation time added to its timings."""
    return scan.timed(("policy", started, time.perf_counter()))


def facts_of(scan: ScanResult, ctx: ScanContext, texts: Sequence[str]) -> Facts:
    findings: dict[str, dict[str, tuple[int, float]]] = {}
    for f in scan.findings:
        labels = findings.setdefault(f.detector, {})
        count, top = labels.get(f.label, (0, 0.0))
        labels[f.label] = (count + 1, max(top, f.score))
    return Facts(
        direction=ctx.direction.value,
        findings=findings,
        model=ctx.model,
        tenant=ctx.tenant,
        route=ctx.route,
        stream=ctx.stream,
        size=sum(map(len, texts)),
        texts=len(texts),
    )


class Bundle:
    """A loaded policy bundle: its policies, compiled, and the detectors they need."""

    def __init__(
        self,
        version: str,
        policies: Sequence[CompiledPolicy],
        detectors: Mapping[str, Detector],
        redactor: Redactor,
        timeout: float,
    ) -> None:
        self.version = version
        self.policies = tuple(policies)
        self.detectors = dict(detectors)
        self._versioned = _versioned(list(self.detectors.values()))
        self._redactor = redactor
        self._timeout = timeout
        self._plans: dict[tuple[object, ...], Plan] = {}

    def plan(self, ctx: ScanContext) -> Plan:
        key = (ctx.direction, ctx.tenant.id if ctx.tenant else None, ctx.model.name, ctx.route)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= _PLAN_CACHE_MAX:
                self._plans.clear()  # many tenants x models x routes: rebuild as needed
            plan = self._plans[key] = self._make_plan(ctx)
        return plan

    def _make_plan(self, ctx: ScanContext) -> Plan:
        policies = [p for p in self.policies if p.applies(ctx)]
        names = dict.fromkeys(name for p in policies for name in p.detectors)
        detectors = [self.detectors[name] for name in names]
        rules = [r for p in policies for r in p.rules if ctx.direction in r.directions]
        return Plan(rules, detectors, self._timeout)

    def active(self, ctx: ScanContext) -> bool:
        return bool(self.plan(ctx).rules)

    def detector_names(self) -> list[str]:
        return sorted(self.detectors)

    def detector_info(self) -> dict[str, dict[str, object]]:
        return _info([self.detectors[name] for name in sorted(self.detectors)])

    def detector_versions(self) -> dict[str, str]:
        return _versions(self._versioned)

    def holds(self, ctx: ScanContext) -> bool:
        return self.plan(ctx).holds

    def holdback(self, text: str, ctx: ScanContext) -> int | None:
        return self.plan(ctx).holdback(text)

    async def check(
        self, texts: Sequence[str], ctx: ScanContext, select: Select | None = None
    ) -> tuple[ScanResult, Decision]:
        plan = self.plan(ctx)
        if not plan.rules:
            return ScanResult(scanned=True), ALLOW
        scan = await plan.runner.scan(texts, ctx)
        if select is not None:
            scan = select(scan)
        started = time.perf_counter()
        decision = plan.decide(scan, ctx, texts, self._redactor)
        return _timed(scan, started), decision

    def close(self) -> None:
        _close(list(self.detectors.values()))
