"""``guard scan``: what the configured detectors and policies make of one text, with no
model server: the decision, the findings and the text as it would be forwarded.

A finding is printed as its place and length, never its value: findings lines get
pasted into tickets and logs, and the span is enough to find the value in the text
the user already has. Exit status: 0 allow, flag or redact; 1 block; 2 a usage,
settings or bundle error (as `guard policy check` reports it)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import NoReturn

import click

from guard.cli.common import config_option, load_or_exit
from guard.cli.policy import load_bundle
from guard.detectors.base import Direction, Finding, ScanContext
from guard.detectors.runner import ScanResult
from guard.policy.actions import apply_redactions
from guard.policy.decision import Decision
from guard.policy.loader import Loader
from guard.policy.pseudonyms import Pseudonyms
from guard.policy.schema import ContextSpec
from guard.policy.testing import model_card
from guard.registry.cards import ModelCard, ModelRegistry
from guard.settings import Settings

_STDIN = "-"


@click.command("scan")
@config_option
@click.option(
    "--direction",
    type=click.Choice([d.value for d in Direction]),
    default=Direction.INPUT.value,
    show_default=True,
    help="Scan TEXT as a prompt (input) or as a model's answer (output).",
)
@click.option(
    "--model",
    "model",
    default=None,
    help="A configured model's name (default: test-model under apache-2.0, as in policy tests).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.argument("text")
def scan(config: Path | None, direction: str, model: str | None, as_json: bool, text: str) -> None:
    """Run the configured policies on TEXT (- reads it from stdin) and print the decision,
    the findings and the redacted text; exit 1 when the text would be blocked."""
    source = _text(text)
    settings = load_or_exit(config)
    ctx = _context(settings, Direction(direction), model)  # a wrong --model fails before any load
    loaded = load_bundle(settings, None, Loader.load, status=2)
    result, decision = asyncio.run(loaded.bundle.check([source], ctx))
    # A fresh map, so pseudonymized spans print as <PERSON_1> as a first turn would.
    redacted = (
        None if decision.blocks else apply_redactions([source], decision.redactions, Pseudonyms())
    )
    if as_json:
        report = _json(loaded.version, ctx.direction, decision, result, redacted)
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        _echo_human(loaded.version, decision, result, redacted)
    sys.exit(1 if decision.blocks else 0)


def _text(text: str) -> str:
    """TEXT, or stdin for ``-``; both must be UTF-8 (the error says where, not what)."""
    if text != _STDIN:
        try:
            text.encode("utf-8")  # undecodable argv bytes arrive as lone surrogates
        except UnicodeEncodeError as exc:
            _fail(f"TEXT is not valid UTF-8 (at character {exc.start})")
        return text
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail(f"stdin is not valid UTF-8 (at byte {exc.start})")


def _context(settings: Settings, direction: Direction, name: str | None) -> ScanContext:
    """The exchange a policy test case gets by default, for this direction and model."""
    spec = ContextSpec()
    return ScanContext(
        direction=direction,
        route=spec.route,
        model=_card(settings, name),
        stream=spec.stream,
    )


def _card(settings: Settings, name: str | None) -> ModelCard:
    models = {card.name: card for card in ModelRegistry(settings.models)}
    if name is not None and name not in models:
        known = ", ".join(sorted(models)) or "none"
        _fail(f"--model: no configured model named {name!r} (configured: {known})")
    return model_card(name, models)


def _fail(message: str) -> NoReturn:
    click.echo(f"guard: {message}", err=True)
    sys.exit(2)


def _rules(decision: Decision) -> list[str]:
    """Every rule that matched; a monitor rule is recorded but never acted on."""
    return [m.rule_id + (" (monitor)" if m.mode == "monitor" else "") for m in decision.hits()]


def _ordered(result: ScanResult) -> list[Finding]:
    return sorted(result.findings, key=lambda f: (f.span or (-1, -1), f.label, f.detector))


def _echo_human(
    version: str, decision: Decision, result: ScanResult, redacted: list[str] | None
) -> None:
    click.echo(f"bundle: {version}")
    action = decision.action.name.lower()
    status = f" (status {decision.status})" if decision.blocks else ""
    click.echo(f"decision: {action}{status}")
    click.echo(f"rules: {', '.join(_rules(decision)) or 'none'}")
    if decision.blocks:
        click.echo(f"message: {decision.message}")
    if decision.degraded:
        click.echo("degraded: a check failed and its rule let the text pass")
    if result.failed:
        click.echo(f"failed detectors: {', '.join(result.failed)}")
    for finding in _ordered(result):
        click.echo(_finding_line(finding))
    if redacted is None:
        click.echo("text: blocked")
        return
    click.echo("text:")
    click.echo(redacted[0], nl=not redacted[0].endswith("\n"))


def _finding_line(finding: Finding) -> str:
    where = "span -"
    if finding.span is not None:
        start, end = finding.span
        where = f"span {start}-{end} ({end - start} chars)"
    return f"finding: {finding.label}\tscore {finding.score:.2f}\t{where}\t{finding.detector}"


def _json(
    version: str,
    direction: Direction,
    decision: Decision,
    result: ScanResult,
    redacted: list[str] | None,
) -> dict[str, object]:
    return {
        "bundle": version,
        "direction": direction.value,
        "decision": {
            "action": decision.action.name.lower(),
            "rules": [m.rule_id for m in decision.hits()],
            # Only a block answers with a status and a message; others forward the text.
            "status": decision.status if decision.blocks else None,
            "message": decision.message if decision.blocks else None,
        },
        "findings": [_finding_json(f) for f in _ordered(result)],
        "redacted": redacted,
        "degraded": decision.degraded,
    }


def _finding_json(finding: Finding) -> dict[str, object]:
    start, end = finding.span or (None, None)
    return {
        "detector": finding.detector,
        "label": finding.label,
        "score": finding.score,
        "start": start,
        "end": end,
    }
