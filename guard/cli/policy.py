"""``guard policy schema | check | test``: policy bundles checked and tested like code."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from guard.cli.common import config_option, load_or_exit
from guard.settings import Settings

if TYPE_CHECKING:
    from guard.policy.loader import Loader, Source

T = TypeVar("T")

_dir_argument = click.argument(
    "directory", type=click.Path(file_okay=False, path_type=Path), required=False
)


@click.group("policy")
def policy() -> None:
    """Check and test policy bundles; print the policy file schema."""


@policy.command("schema")
def schema() -> None:
    """The JSON schema of a policy file (for editors and CI)."""
    from guard.policy.schema import json_schema  # noqa: PLC0415

    click.echo(json.dumps(json_schema(), indent=2))


@policy.command("check")
@config_option
@_dir_argument
def check(config: Path | None, directory: Path | None) -> None:
    """Validate a bundle (default: the configured one) without loading any model:
    schema, detectors and their settings, conditions and expressions, duplicate ids.
    Prints the bundle's version."""
    from guard.policy.loader import Loader  # noqa: PLC0415

    checked = load_bundle(load_or_exit(config), directory, Loader.check)
    for item in checked.parsed:
        p = item.policy
        click.echo(f"{item.file}\t{p.name}\t{p.mode}\t{len(p.rules)} rules\t{len(p.tests)} tests")
    click.echo(f"bundle {checked.source.version}: {len(checked.parsed)} policies, ok")


@policy.command("test")
@config_option
@_dir_argument
@click.option("--json", "as_json", is_flag=True, help="One JSON object per test case.")
def test(config: Path | None, directory: Path | None, as_json: bool) -> None:
    """Run every test case of a bundle through the real detectors and engine; exit 1
    on any failure."""
    from guard.policy.loader import Loader  # noqa: PLC0415
    from guard.policy.testing import run_tests  # noqa: PLC0415
    from guard.registry.cards import ModelRegistry  # noqa: PLC0415

    settings = load_or_exit(config)
    loaded = load_bundle(settings, directory, Loader.load)
    models = {card.name: card for card in ModelRegistry(settings.models)}
    outcomes = asyncio.run(run_tests(loaded, models))
    for o in outcomes:
        if as_json:
            line = {"file": o.file, "policy": o.policy, "case": o.case, "passed": o.passed}
            click.echo(json.dumps({**line, "failures": list(o.failures)}))
        else:
            click.echo(f"{'PASS' if o.passed else 'FAIL'}  {o.policy}: {o.case}")
            for failure in o.failures:
                click.echo(f"        {failure}")
    failed = sum(not o.passed for o in outcomes)
    summary = f"bundle {loaded.version}: {len(outcomes) - failed} passed, {failed} failed"
    click.echo(summary, err=as_json)
    if failed:
        sys.exit(1)


def check_bundle(settings: Settings) -> None:
    """Before serving: a bundle that fails its checks stops the start with every problem
    (its tests run when the server loads it)."""
    from guard.policy.loader import Loader  # noqa: PLC0415

    load_bundle(settings, None, Loader.check, status=2)


def load_bundle(
    settings: Settings,
    directory: Path | None,
    step: Callable[[Loader, Source], T],
    status: int = 1,
) -> T:
    """Read the bundle and check or load it; every problem printed, then exit."""
    from guard.detectors.registry import DetectorRegistry  # noqa: PLC0415
    from guard.policy.actions import Redactor  # noqa: PLC0415
    from guard.policy.loader import BUNDLED, Loader, PolicyError, read_source  # noqa: PLC0415

    loader = Loader(
        DetectorRegistry.builtin(),
        settings.detectors,
        Redactor.from_settings(settings.policy),
        settings.scan.timeout,
    )
    try:
        return step(loader, read_source(directory or settings.policy.dir or BUNDLED))
    except PolicyError as exc:
        for problem in exc.problems:
            click.echo(f"guard: {problem}", err=True)
        sys.exit(status)
