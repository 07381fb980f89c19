# ruff: noqa: E501  (tables read better one case a line)
"""Conditions compile once into plain functions; each key form against facts."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from guard.policy.conditions import CompileError, ConditionCompiler, ExpressionError, Facts
from guard.registry.cards import LicenceCard, ModelCard
from guard.tenancy import Tenant

LABELS: dict[str, frozenset[str] | None] = {
    "pii": frozenset({"US_SSN", "CREDIT_CARD", "EMAIL_ADDRESS"}),
    "toxicity": None,  # a classifier: any label
}


def model(commercial: bool = True, restrictions: tuple[str, ...] = ()) -> ModelCard:
    licence = LicenceCard(
        id="cc-by-nc-4.0" if not commercial else "apache-2.0",
        name="x",
        commercial_use=commercial,
        attribution_required=not commercial,
        share_alike=False,
        restrictions=restrictions,
        user_threshold=None,
        source_url=None,
        revision=None,
        catalogued=True,
    )
    return ModelCard("m", "up", "m-up", licence)


def facts(
    findings: dict[str, dict[str, tuple[int, float]]] | None = None,
    tenant: dict[str, Any] | None = None,
    card: ModelCard | None = None,
    direction: str = "input",
    size: int = 40,
) -> Facts:
    who = None
    if tenant is not None:
        attrs = {k: v for k, v in tenant.items() if k != "id"}
        who = Tenant(tenant.get("id", "t1"), MappingProxyType(attrs))
    return Facts(
        direction=direction,
        findings=findings or {},
        model=card or model(),
        tenant=who,
        route="/v1/chat/completions",
        stream=False,
        size=size,
        texts=1,
    )


def holds(condition: dict[str, Any], f: Facts) -> bool:
    return ConditionCompiler(LABELS).compile(condition).check(f)


SSN = {"pii": {"US_SSN": (2, 0.85)}}
TOXIC = {"toxicity": {"toxic": (1, 0.91), "insult": (1, 0.4)}}


@pytest.mark.parametrize(
    ("condition", "f", "expected"),
    [
        pytest.param({"pii.any": ["US_SSN", "CREDIT_CARD"]}, facts(SSN), True, id="any-hit"),
        pytest.param({"pii.any": ["CREDIT_CARD"]}, facts(SSN), False, id="any-miss"),
        pytest.param({"pii.any": "*"}, facts(SSN), True, id="any-star"),
        pytest.param({"pii.any": "*"}, facts(TOXIC), False, id="any-star-other-detector"),
        pytest.param(
            {"pii.any": {"labels": ["US_SSN"], "min_score": 0.9}}, facts(SSN), False, id="min-score"
        ),
        pytest.param({"pii.all": ["US_SSN", "CREDIT_CARD"]}, facts(SSN), False, id="all-miss"),
        pytest.param({"pii.count": {"gte": 2}}, facts(SSN), True, id="count"),
        pytest.param({"pii.US_SSN.count": {"gt": 2}}, facts(SSN), False, id="label-count"),
        pytest.param({"pii.US_SSN": True}, facts(SSN), True, id="label-present"),
        pytest.param({"pii.EMAIL_ADDRESS": False}, facts(SSN), True, id="label-absent"),
        pytest.param({"toxicity.toxic": {"gt": 0.8}}, facts(TOXIC), True, id="score-gt"),
        pytest.param({"toxicity.insult": {"gt": 0.5}}, facts(TOXIC), False, id="score-below"),
        pytest.param({"toxicity.threat": {"gt": 0.1}}, facts(TOXIC), False, id="score-absent-0"),
        pytest.param({"tenant.commercial": True}, facts(tenant={"commercial": True}), True, id="tenant-attr"),
        pytest.param({"tenant.commercial": True}, facts(), False, id="no-tenant"),
        pytest.param({"tenant.commercial": False}, facts(tenant={}), False, id="unset-is-not-false"),
        pytest.param({"tenant.commercial": True}, facts(tenant={"commercial": 1}), False, id="1-is-not-true"),
        pytest.param({"tenant.id": ["a", "t1"]}, facts(tenant={"id": "t1"}), True, id="tenant-in-list"),
        pytest.param({"tenant.tier": {"not_in": ["free"]}}, facts(tenant={"tier": "gold"}), True, id="not-in"),
        pytest.param({"tenant.limits.daily": {"gte": 10}}, facts(tenant={"limits": {"daily": 12}}), True, id="nested"),
        pytest.param({"model.licence.commercial_use": False}, facts(card=model(False)), True, id="licence"),
        pytest.param({"model.licence.id": "apache-2.0"}, facts(), True, id="licence-id"),
        pytest.param(
            {"model.licence.restrictions": {"contains": "no-weapons"}},
            facts(card=model(restrictions=("no-weapons",))),
            True,
            id="contains",
        ),
        pytest.param({"model.licence.restrictions": {"empty": False}}, facts(), False, id="empty"),
        pytest.param({"request.direction": "output"}, facts(), False, id="direction"),
        pytest.param({"request.tokens": {"gt": 9}}, facts(size=40), True, id="tokens-estimated"),
        pytest.param({"request.size": {"lt": 10}}, facts(size=40), False, id="size"),
        pytest.param({"any": [{"pii.any": ["CREDIT_CARD"]}, {"pii.US_SSN": True}]}, facts(SSN), True, id="or"),
        pytest.param({"not": {"pii.any": "*"}}, facts(SSN), False, id="not"),
        pytest.param(
            {"pii.any": ["US_SSN"], "tenant.commercial": True}, facts(SSN), False, id="keys-and"
        ),
        pytest.param({"expr": "size(findings) > 0 && tenant.tier == 'gold'"}, facts(SSN, {"tier": "gold"}), True, id="cel"),
        pytest.param(
            {"expr": "has(findings.pii) && findings.pii.US_SSN.count >= 2"}, facts(SSN), True, id="cel-findings"
        ),
        pytest.param({"expr": "model.licence.commercial_use"}, facts(card=model(False)), False, id="cel-licence"),
    ],
)  # fmt: skip
def test_condition(condition: dict[str, Any], f: Facts, expected: bool) -> None:
    assert holds(condition, f) is expected


@pytest.mark.parametrize(
    ("condition", "path", "words"),
    [
        pytest.param({"pii.any": ["SSN"]}, ("pii.any",), "never reports 'SSN'", id="unknown-label"),
        pytest.param({"toxicty.toxic": 0.5}, ("toxicty.toxic",), "not declared", id="undeclared-detector"),
        pytest.param({"model.licence.commercial": True}, ("model.licence.commercial",), "unknown model key", id="licence-term"),
        pytest.param({"request.body": "x"}, ("request.body",), "unknown request key", id="request-key"),
        pytest.param({"toxicity.toxic": {"above": 1}}, ("toxicity.toxic", "above"), "unknown operator", id="operator"),
        pytest.param({"toxicity.toxic": "high"}, ("toxicity.toxic",), "expected a number", id="not-number"),
        pytest.param({"any": []}, ("any",), "non-empty list", id="empty-any"),
        pytest.param({"all": [{"pii.any": "*"}, {"nope": 1}]}, ("all", 1, "nope"), "unknown condition key", id="nested-path"),
        pytest.param({"pii.all": "*"}, ("pii.all",), "needs a list", id="all-star"),
        pytest.param({"expr": "tenant.tier == "}, ("expr",), "invalid CEL", id="cel-syntax"),
        pytest.param({"expr": "tenat.tier == 'gold'"}, ("expr",), "undeclared reference", id="cel-unknown-name"),
    ],
)  # fmt: skip
def test_compile_errors_name_the_key(
    condition: dict[str, Any], path: tuple[Any, ...], words: str
) -> None:
    with pytest.raises(CompileError) as info:
        ConditionCompiler(LABELS).compile(condition)
    assert info.value.path == path
    assert words in info.value.message


def test_cel_syntax_error_gives_the_column() -> None:
    with pytest.raises(CompileError) as info:
        ConditionCompiler(LABELS).compile({"expr": "tenant.tier == "})
    assert info.value.column == 13  # where the missing operand should start


def test_cel_runtime_errors_never_quote_values() -> None:
    check = ConditionCompiler(LABELS).compile({"expr": "tenant.secret_attr == 'x'"}).check
    with pytest.raises(ExpressionError) as info:
        check(facts(tenant={"other": "4111 1111 1111 1111"}))
    assert "4111" not in str(info.value)
    non_bool = ConditionCompiler(LABELS).compile({"expr": "request.size"}).check
    with pytest.raises(ExpressionError, match="not a bool"):
        non_bool(facts())


def test_condition_reports_the_detectors_it_reads() -> None:
    compiled = ConditionCompiler(LABELS).compile(
        {"any": [{"pii.any": "*"}, {"not": {"toxicity.toxic": {"gt": 0.5}}}], "tenant.tier": "x"}
    )
    assert compiled.detectors == {"pii", "toxicity"}
    assert not compiled.uses_expr
    assert ConditionCompiler(LABELS).compile(None).check(facts()) is True
