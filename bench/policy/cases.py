"""The bundled policies as guard loads them, and the exchanges the bench decides.

Each case is one chat exchange: its input (a system and a user message) and its output
(the answer), each with the ScanResult the real detectors gave for it. The detectors run
once here, before any clock starts; the bench then times only what the engine does per
scan with that result: ``Bundle.plan(ctx)`` (the per-scope cache lookup) and
``Plan.decide(scan, ctx, texts, redactor)``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from guard.detectors.base import Direction, ScanContext
from guard.detectors.registry import DetectorRegistry
from guard.detectors.runner import ScanResult
from guard.policy.actions import Redactor
from guard.policy.conditions import Check, ConditionCompiler, Facts
from guard.policy.decision import Action, Decision
from guard.policy.engine import Bundle, facts_of
from guard.policy.loader import BUNDLED, Loader, read_source
from guard.registry.cards import ModelCard
from guard.settings import ModelSettings
from guard.tenancy import Tenant

ROUTE = "/v1/chat/completions"
REDACTOR = Redactor(b"bench-policy-key-0123456789abcdef")
DETECTOR_TIMEOUT_S = 2.0

SYSTEM = (
    "You are a helpful assistant for the finance team at Acme. Answer briefly, cite the "
    "figures you use, and say so when the documents you were given do not cover a question."
)
PROMPT = (
    "Summarise the quarterly report for the board in five bullet points: revenue grew 12% "
    "to 4.2 million, churn fell to 3.1%, two enterprise contracts renew in March, the hiring "
    "plan adds six engineers, and the security review found no critical issues. Then list "
    "the open risks with an owner and a date for each."
)
ANSWER = (
    "- Revenue rose 12% to 4.2 million, led by the two new enterprise accounts.\n"
    "- Churn fell to 3.1%, the lowest in six quarters.\n"
    "- Two enterprise contracts renew in March; both owners expect renewal.\n"
    "- Hiring adds six engineers, mostly to the platform team.\n"
    "- The security review found no critical issues.\n"
    "Open risks: the March renewals (Dana, 15 March), hiring pace (Lee, end of Q2) and "
    "the unpatched VPN appliance (Sam, 30 April)."
)
LEAKED_KEY_PROMPT = (
    "My deploy script fails with InvalidClientTokenId when it uploads invoices to S3. It "
    "reads this config: aws_access_key_id = AKIAZ7Q2LR4MXW6TNB3P, region eu-west-1, bucket "
    "acme-invoices. What am I doing wrong, and how should a CI job pass credentials to "
    "boto3 without putting them in the repository?"
)
LEAKED_KEY_ANSWER = (
    "InvalidClientTokenId means AWS does not recognise the access key id: it was deleted, "
    "deactivated or belongs to another account. Check it with `aws sts get-caller-identity`. "
    "In CI, do not store keys at all: give the job an IAM role through OIDC federation, or "
    "read short-lived credentials from the CI secret store into environment variables, "
    "which boto3 picks up without any code change."
)

# The same test twice: as CEL, and as the matchers the bundled policies use.
CEL_CONDITION: dict[str, object] = {"expr": "tenant.tier == 'gold' && size(findings) > 0"}
MATCHER_CONDITION: dict[str, object] = {"tenant.tier": "gold", "patterns.any": "*"}


def card(name: str, licence: str) -> ModelCard:
    return ModelCard.from_settings(
        ModelSettings.model_validate({"name": name, "upstream": "u", "licence": licence})
    )


@dataclass(frozen=True)
class Side:
    """One direction of an exchange, ready to decide: its scan done up front."""

    ctx: ScanContext
    texts: tuple[str, ...]
    scan: ScanResult
    expect: Action


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    input: Side
    output: Side


@dataclass(frozen=True)
class Spec:
    name: str
    what: str
    model: ModelCard
    tenant: Tenant | None
    prompt: str
    answer: str
    expect_in: Action
    expect_out: Action = Action.ALLOW


SPECS = (
    Spec(
        "clean",
        "apache-2.0 model, no tenant, nothing found",
        card("qwen2.5-7b-instruct", "apache-2.0"),
        None,
        PROMPT,
        ANSWER,
        Action.ALLOW,
    ),
    Spec(
        "llama",
        "llama3.1 model: attribution and use-restriction rules flag",
        card("llama-3.1-8b-instruct", "llama3.1"),
        None,
        PROMPT,
        ANSWER,
        Action.FLAG,
    ),
    Spec(
        "secret-in-prompt",
        "an AWS access key in the prompt: blocked",
        card("qwen2.5-7b-instruct", "apache-2.0"),
        Tenant("finance", {"commercial": True}),
        LEAKED_KEY_PROMPT,
        LEAKED_KEY_ANSWER,
        Action.BLOCK,
    ),
    Spec(
        "commercial-nc",
        "commercial tenant, cc-by-nc-4.0 model: blocked",
        card("nc-research-7b", "cc-by-nc-4.0"),
        Tenant("acme", {"commercial": True, "tier": "gold"}),
        PROMPT,
        ANSWER,
        Action.BLOCK,
    ),
)


def load_bundle() -> Bundle:
    """The bundled policies (``policies/``) through guard's loader, real detectors built."""
    loader = Loader(DetectorRegistry.builtin(), {}, REDACTOR, DETECTOR_TIMEOUT_S)
    return loader.load(read_source(BUNDLED)).bundle


def decide(bundle: Bundle, side: Side) -> Decision:
    """What guard does per scan besides the detectors."""
    return bundle.plan(side.ctx).decide(side.scan, side.ctx, side.texts, REDACTOR)


async def _side(
    bundle: Bundle, spec: Spec, direction: Direction, texts: tuple[str, ...], expect: Action
) -> Side:
    ctx = ScanContext(direction, ROUTE, spec.model, False, spec.tenant)
    scan = await bundle.plan(ctx).runner.scan(texts, ctx)
    return Side(ctx, texts, scan, expect)


async def _case(bundle: Bundle, spec: Spec) -> Case:
    return Case(
        spec.name,
        spec.what,
        await _side(bundle, spec, Direction.INPUT, (SYSTEM, spec.prompt), spec.expect_in),
        await _side(bundle, spec, Direction.OUTPUT, (spec.answer,), spec.expect_out),
    )


def build_cases(bundle: Bundle) -> list[Case]:
    """Every case scanned once by the real detectors; each decision checked against what
    the case is meant to show, so a drifted bundle cannot time the wrong path."""

    async def scan_all() -> list[Case]:
        return [await _case(bundle, s) for s in SPECS]

    cases = asyncio.run(scan_all())
    for case in cases:
        for label, side in (("input", case.input), ("output", case.output)):
            got = decide(bundle, side).action
            if got is not side.expect:
                raise SystemExit(
                    f"bench.policy: case {case.name} {label}: expected {side.expect.name}, "
                    f"the bundle decided {got.name}"
                )
    return cases


def cel_facts(case: Case) -> Facts:
    """Fresh facts of the case's input, seen by a gold-tier tenant (facts cache their CEL
    activation, so every timed evaluation needs its own, as every exchange has)."""
    side = case.input
    gold = Tenant("acme", {"commercial": True, "tier": "gold"})
    ctx = ScanContext(side.ctx.direction, side.ctx.route, side.ctx.model, False, gold)
    return facts_of(side.scan, ctx, side.texts)


def compile_condition(condition: dict[str, object]) -> Check:
    """A condition's check, compiled as the loader does (patterns may report any label)."""
    return ConditionCompiler({"patterns": None}).compile(condition).check
