"""Decisions over whole bundles: strictest action wins, every match recorded, shadow
mode, fail closed, scopes; through the real loader and a real (test) detector."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard.detectors.base import Direction
from guard.policy.actions import apply_redactions, mask
from guard.policy.decision import Action, RuleMatch
from guard.policy.engine import AllowAll, FixedGuardrails
from guard.tenancy import Tenant
from tests.fakes.detectors import StampDetector, marker_registry
from tests.fakes.policies import card, context, load_bundle, write_bundle

FLAG_SECRETS = """
    name: flag-secrets
    detectors: {marker: {}}
    rules:
      - id: flag.secret
        when: {marker.any: [SECRET]}
        action: flag
"""
REDACT_SECRETS = """
    name: redact-secrets
    detectors: {marker: {}}
    rules:
      - id: redact.secret
        when: {marker.any: [SECRET]}
        action: redact
        redact: {SECRET: replace}
"""
BLOCK_BANNED = """
    name: block-banned
    detectors: {marker: {}}
    rules:
      - id: block.banned
        when: {marker.BANNED: true}
        action: block
        status: 451
        message: Not here.
"""


def bundle(tmp_path: Path, *texts: str, options: dict[str, dict[str, object]] | None = None):  # type: ignore[no-untyped-def]
    registry, made = marker_registry()
    root = write_bundle(tmp_path / "p", {f"{i:02}.yaml": t for i, t in enumerate(texts)})
    return load_bundle(root, registry, options).bundle, made


async def test_strictest_action_wins_and_every_match_is_recorded(tmp_path: Path) -> None:
    rails, _ = bundle(tmp_path, FLAG_SECRETS, REDACT_SECRETS, BLOCK_BANNED)
    _, redacted = await rails.check(["key secret-abcd here"], context())
    assert redacted.action is Action.REDACT
    assert redacted.rule_ids == ("flag.secret", "redact.secret")
    assert apply_redactions(["key secret-abcd here"], redacted.redactions) == ["key <SECRET> here"]
    _, blocked = await rails.check(["secret-abcd is forbidden"], context())
    assert blocked.action is Action.BLOCK
    assert (blocked.status, blocked.message) == (451, "Not here.")
    assert set(blocked.rule_ids) == {"flag.secret", "redact.secret", "block.banned"}
    _, clean = await rails.check(["nothing to see"], context())
    assert clean.action is Action.ALLOW and clean.rule_ids == ()


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        pytest.param("replace", "<SECRET>", id="replace"),
        pytest.param("mask", mask("secret-abcd"), id="mask"),
    ],
)
async def test_redaction_methods(tmp_path: Path, method: str, expected: str) -> None:
    policy = REDACT_SECRETS.replace("SECRET: replace", f"SECRET: {method}")
    rails, _ = bundle(tmp_path, policy)
    _, decision = await rails.check(["a secret-abcd b"], context())
    assert apply_redactions(["a secret-abcd b"], decision.redactions) == [f"a {expected} b"]
    assert mask("secret-abcd") == "*******abcd"


async def test_hash_gives_equal_tokens_for_equal_values(tmp_path: Path) -> None:
    rails, _ = bundle(tmp_path, REDACT_SECRETS.replace("SECRET: replace", "SECRET: hash"))
    texts = ["secret-aaaa and secret-aaaa and secret-bbbb"]
    _, decision = await rails.check(texts, context())
    tokens = apply_redactions(texts, decision.redactions)[0].split(" and ")
    assert tokens[0] == tokens[1] != tokens[2]
    assert tokens[0].startswith("<SECRET:") and "aaaa" not in tokens[0]


async def test_monitor_mode_records_but_does_not_act(tmp_path: Path) -> None:
    shadow = BLOCK_BANNED.replace("name: block-banned", "name: block-banned\n    mode: monitor")
    rails, _ = bundle(tmp_path, FLAG_SECRETS, shadow)
    _, decision = await rails.check(["forbidden secret-abcd"], context())
    assert decision.action is Action.FLAG
    assert decision.rule_ids == ("flag.secret",)
    assert RuleMatch("block.banned", Action.BLOCK, "monitor") in decision.hits()


@pytest.mark.parametrize(
    ("on_error", "action", "degraded"),
    [
        pytest.param("block", Action.BLOCK, False, id="fail-closed"),
        pytest.param("allow", Action.ALLOW, True, id="fail-open-degraded"),
    ],
)
async def test_failed_detector_follows_on_error(
    tmp_path: Path, on_error: str, action: Action, degraded: bool
) -> None:
    policy = f"""
        name: needs-broken
        detectors: {{broken: {{}}}}
        rules:
          - id: broken.rule
            when: {{broken.any: "*"}}
            action: flag
            on_error: {on_error}
    """
    rails, _ = bundle(tmp_path, policy)
    scan, decision = await rails.check(["text"], context())
    assert scan.failed == ("broken",)
    assert decision.action is action
    assert decision.degraded is degraded
    if action is Action.BLOCK:
        assert decision.status == 503 and "could not be checked" in decision.message


async def test_expression_error_follows_on_error(tmp_path: Path) -> None:
    policy = """
        name: cel
        rules:
          - id: cel.tier
            when: {expr: "tenant.tier == 'gold'"}
            action: flag
    """
    rails, _ = bundle(tmp_path, policy)
    _, no_tenant = await rails.check(["x"], context())  # tenant has no tier: a runtime error
    assert no_tenant.action is Action.BLOCK and no_tenant.status == 503
    gold = Tenant("t", {"tier": "gold"})
    _, decision = await rails.check(["x"], context(tenant=gold))
    assert decision.action is Action.FLAG


async def test_scope_limits_rules_and_the_detectors_that_run(tmp_path: Path) -> None:
    scoped = BLOCK_BANNED.replace(
        "name: block-banned",
        "name: block-banned\n    scope: {direction: output, tenants: [t1], models: ['llama-*'],"
        " routes: ['/v1/chat/*']}",
    )
    rails, made = bundle(tmp_path, scoped)
    llama = card("llama-3")
    t1 = Tenant("t1")
    out = Direction.OUTPUT
    cases = [
        (context(out, model=llama, tenant=t1), Action.BLOCK),
        (context(Direction.INPUT, model=llama, tenant=t1), Action.ALLOW),
        (context(out, model=card("qwen"), tenant=t1), Action.ALLOW),
        (context(out, model=llama, tenant=Tenant("t2")), Action.ALLOW),
        (context(out, model=llama), Action.ALLOW),
        (context(out, model=llama, tenant=t1, route="/v1/embeddings"), Action.ALLOW),
    ]
    for ctx, expected in cases:
        _, decision = await rails.check(["forbidden"], ctx)
        assert decision.action is expected, ctx
        assert rails.active(ctx) is (expected is Action.BLOCK)
    assert made["marker"].texts(Direction.INPUT) == []  # never ran where no rule needed it
    assert len(made["marker"].texts(Direction.OUTPUT)) == 1


async def test_rules_without_detectors_decide_on_context(tmp_path: Path) -> None:
    policy = """
        name: licence
        rules:
          - id: nc
            when: {tenant.commercial: true, model.licence.commercial_use: false}
            action: block
    """
    rails, _ = bundle(tmp_path, policy)
    nc = card("nc", "cc-by-nc-4.0")
    acme = Tenant("acme", {"commercial": True})
    scan, decision = await rails.check(["hi"], context(model=nc, tenant=acme))
    assert decision.action is Action.BLOCK and scan.detectors == ()
    _, allowed = await rails.check(["hi"], context(model=card(), tenant=acme))
    assert allowed.action is Action.ALLOW


async def test_streamed_text_waits_only_where_a_rule_could_change_it(tmp_path: Path) -> None:
    flag_open = FLAG_SECRETS.replace("action: flag", "action: flag\n        on_error: allow")
    shadow = BLOCK_BANNED.replace("name: block-banned", "name: block-banned\n    mode: monitor")
    cases = [
        ((flag_open,), False),
        ((flag_open, shadow), False),  # a monitor rule never acts
        ((FLAG_SECRETS,), True),  # fail closed: a failed scan would stop the text
        ((flag_open, REDACT_SECRETS), True),
        ((BLOCK_BANNED,), True),
    ]
    for index, (texts, holds) in enumerate(cases):
        rails, _ = bundle(tmp_path / str(index), *texts)
        assert rails.holds(context(Direction.OUTPUT)) is holds, texts


async def test_an_empty_bundle_checks_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    rails = load_bundle(tmp_path / "empty").bundle
    scan, decision = await rails.check(["AKIA" + "Z" * 16], context())
    assert decision.action is Action.ALLOW and scan.detectors == ()
    assert not rails.active(context()) and rails.version.startswith("sha256:")


def test_a_reload_reuses_the_detectors_of_the_bundle_in_force(tmp_path: Path) -> None:
    from guard.policy.actions import Redactor
    from guard.policy.loader import Loader, read_source
    from tests.fakes.detectors import marker_registry

    registry, _ = marker_registry()
    loader = Loader(registry, {}, Redactor(b"k"), 1.0)
    root = write_bundle(tmp_path / "p", {"a.yaml": FLAG_SECRETS})
    first = loader.load(read_source(root))
    loader.adopt(first)
    write_bundle(root, {"b.yaml": BLOCK_BANNED})  # one more policy, same detector settings
    second = loader.load(read_source(root))
    assert second.bundle.detectors["marker"] is first.bundle.detectors["marker"]
    loader2 = Loader(registry, {"marker": {"delay": 0.0}}, Redactor(b"k"), 1.0)
    loader2.adopt(first)  # other settings for the detector: built anew
    assert (
        loader2.load(read_source(root)).bundle.detectors["marker"]
        is not first.bundle.detectors["marker"]
    )


STAMP_ANY = """
    name: stamp-any
    detectors: {stamp: {}}
    rules:
      - id: stamp.any
        when: {stamp.any: "*"}
        action: flag
"""


def test_detector_versions_name_only_the_detectors_that_say_theirs(tmp_path: Path) -> None:
    rails, made = bundle(tmp_path, FLAG_SECRETS, STAMP_ANY)
    assert rails.detector_names() == ["marker", "stamp"]
    assert rails.detector_versions() == {"stamp": StampDetector.RELEASE}
    made["stamp"].release = "stamp-model@rev2 (apache-2.0; cpu)"  # asked each time
    assert rails.detector_versions() == {"stamp": "stamp-model@rev2 (apache-2.0; cpu)"}
    fixed = FixedGuardrails([made["marker"], made["stamp"]], AllowAll(), 1.0)
    assert fixed.detector_versions() == {"stamp": "stamp-model@rev2 (apache-2.0; cpu)"}
    alone, _ = bundle(tmp_path / "alone", FLAG_SECRETS)
    assert alone.detector_versions() == {}


def test_closing_guardrails_closes_the_detectors_that_hold_something(tmp_path: Path) -> None:
    rails, made = bundle(tmp_path, FLAG_SECRETS, STAMP_ANY)
    rails.close()  # the marker detector has nothing to close; the stamp detector has
    assert made["stamp"].closed == 1
    FixedGuardrails([made["marker"], made["stamp"]], AllowAll(), 1.0).close()
    assert made["stamp"].closed == 2


class _FailsToClose(StampDetector):
    name = "fails"

    def close(self) -> None:
        raise RuntimeError("worker stuck")


def test_a_detector_that_fails_to_close_does_not_keep_the_others_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, made = bundle(tmp_path, STAMP_ANY)
    FixedGuardrails([_FailsToClose({}), made["stamp"]], AllowAll(), 1.0).close()
    assert made["stamp"].closed == 1
    assert "detector fails did not close: RuntimeError" in caplog.text
