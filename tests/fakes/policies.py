"""Policy bundles written to a directory, loaded through the real loader."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from guard.detectors.base import Direction, ScanContext
from guard.detectors.registry import DetectorRegistry
from guard.policy.actions import Redactor
from guard.policy.loader import Loaded, Loader, read_source
from guard.registry.cards import ModelCard
from guard.settings import ModelSettings
from guard.tenancy import Tenant

KEY = b"k" * 32


def write_bundle(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return root


NEEDS = """
    name: needs-{name}
    detectors: {{{name}: {{}}}}
    rules:
      - id: {name}.any
        when: {{{name}.any: "*"}}
        action: flag
"""


def needing(root: Path, detector: str) -> dict[str, str]:
    """A bundle whose one rule needs ``detector`` (fail closed); its policy settings."""
    write_bundle(root, {"needs.yaml": NEEDS.format(name=detector)})
    return {"dir": str(root)}


def load_bundle(
    root: Path, registry: DetectorRegistry | None = None, options: dict[str, Any] | None = None
) -> Loaded:
    loader = Loader(registry or DetectorRegistry.builtin(), options or {}, Redactor(KEY), 2.0)
    return loader.load(read_source(root))


def card(name: str = "m1", licence: str | dict[str, Any] = "apache-2.0") -> ModelCard:
    return ModelCard.from_settings(
        ModelSettings.model_validate({"name": name, "upstream": "u", "licence": licence})
    )


def context(
    direction: Direction = Direction.INPUT,
    *,
    model: ModelCard | None = None,
    tenant: Tenant | None = None,
    route: str = "/v1/chat/completions",
) -> ScanContext:
    return ScanContext(direction, route, model or card(), False, tenant)
