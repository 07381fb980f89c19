"""The licence catalogue shipped with guard (``licences.yaml``): terms by licence id.

A model's settings can name a licence by id or alias alone; its terms then come from
here. The file is package data, read and validated once per process: a broken file
is a packaging bug, so it fails loudly with ``CatalogueError`` at the first lookup.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Annotated, Any

import yaml
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError, model_validator

from guard.errors import GuardError

_FILE = "licences.yaml"


class CatalogueError(GuardError):
    """The shipped catalogue is unreadable or invalid (never the operator's fault)."""


def normalise(name: str) -> str:
    """How ids and aliases are compared: without case or surrounding blanks."""
    return name.strip().casefold()


class CatalogueLicence(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    aliases: tuple[str, ...] = ()
    url: AnyHttpUrl
    commercial_use: bool
    attribution_required: bool
    share_alike: bool
    use_restrictions: tuple[str, ...] = ()
    user_threshold: Annotated[int, Field(ge=1)] | None = None
    notes: str

    @model_validator(mode="after")
    def _names_normalised(self) -> CatalogueLicence:
        for name in (self.id, *self.aliases):
            if name != normalise(name) or not name:
                raise ValueError(f"{self.id}: {name!r} must be lower case without blanks around")
        return self

    def terms(self) -> dict[str, Any]:
        """The terms a model's licence settings take from this entry, under their keys there."""
        return {
            "commercial_use": self.commercial_use,
            "attribution_required": self.attribution_required,
            "share_alike": self.share_alike,
            "restrictions": self.use_restrictions,
            "user_threshold": self.user_threshold,
        }


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    licences: tuple[CatalogueLicence, ...]

    @model_validator(mode="after")
    def _names_unique(self) -> Catalogue:
        _index(self.licences)
        return self

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(entry.id for entry in self.licences)


def _index(licences: tuple[CatalogueLicence, ...]) -> dict[str, CatalogueLicence]:
    """Every id and alias to its entry; one name meaning two licences is an error."""
    index: dict[str, CatalogueLicence] = {}
    for entry in licences:
        for name in (entry.id, *entry.aliases):
            other = index.setdefault(name, entry)
            if other is not entry:
                raise ValueError(f"{name!r} names both {other.id} and {entry.id}")
    return index


@cache
def catalogue() -> Catalogue:
    """The shipped catalogue, read and validated on first use."""
    text = resources.files("guard.registry").joinpath(_FILE).read_text(encoding="utf-8")
    return parse(text)


def parse(text: str) -> Catalogue:
    """A catalogue from YAML text; ``CatalogueError`` names the key that is wrong."""
    try:
        return Catalogue.model_validate(yaml.safe_load(text))
    except yaml.YAMLError as exc:
        raise CatalogueError(f"licence catalogue {_FILE} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        key = ".".join(str(part) for part in error["loc"])
        where = f"{key}: " if key else ""  # cross-entry checks name the licence themselves
        message = error["msg"].removeprefix("Value error, ")
        raise CatalogueError(f"licence catalogue {_FILE}: {where}{message}") from None


@cache
def _names() -> Mapping[str, CatalogueLicence]:
    return _index(catalogue().licences)


def lookup(name: str) -> CatalogueLicence | None:
    """The entry an id or alias names, in any case; None when guard does not know it."""
    return _names().get(normalise(name))
