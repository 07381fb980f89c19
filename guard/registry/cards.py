from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from guard.errors import ModelNotFound
from guard.registry import licences

if TYPE_CHECKING:
    # Only for annotations: the settings read the licence catalogue in this package.
    from guard.settings import Licence, ModelSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class LicenceCard:
    """A model's licence terms as policies and audits see them (``model.licence.<term>``):
    the catalogue's terms for its id, with whatever the settings override."""

    id: str
    name: str  # the catalogue's name; the id for a licence the catalogue lacks
    commercial_use: bool
    attribution_required: bool
    share_alike: bool
    restrictions: tuple[str, ...]
    user_threshold: int | None  # monthly active users needing the licensor's own licence
    catalogued: bool  # the id is in guard's catalogue, so terms not set came from it
    source_url: str | None
    revision: str | None

    @classmethod
    def from_settings(cls, lic: Licence) -> LicenceCard:
        entry = licences.lookup(lic.id)
        return cls(
            id=lic.id,
            name=entry.name if entry else lic.id,
            commercial_use=lic.commercial_use,
            attribution_required=lic.attribution_required,
            share_alike=lic.share_alike,
            restrictions=lic.restrictions,
            user_threshold=lic.user_threshold,
            catalogued=entry is not None,
            source_url=str(lic.source_url) if lic.source_url else None,
            revision=lic.revision,
        )


@dataclass(frozen=True, slots=True)
class ModelCard:
    name: str
    upstream: str
    upstream_model: str
    licence: LicenceCard

    @classmethod
    def from_settings(cls, model: ModelSettings) -> ModelCard:
        return cls(
            name=model.name,
            upstream=model.upstream,
            upstream_model=model.upstream_model or model.name,
            licence=LicenceCard.from_settings(model.licence),
        )

    def licence_fields(self) -> dict[str, object]:
        lic = self.licence
        return {
            "id": lic.id,
            "name": lic.name,
            "commercial_use": lic.commercial_use,
            "attribution_required": lic.attribution_required,
            "share_alike": lic.share_alike,
            "restrictions": list(lic.restrictions),
            "user_threshold": lic.user_threshold,
            "catalogued": lic.catalogued,
            "source_url": lic.source_url,
            "revision": lic.revision,
        }


class ModelRegistry:
    """The configured models by the name clients use; nothing else is routable."""

    def __init__(self, models: list[ModelSettings]) -> None:
        self._cards = {m.name: ModelCard.from_settings(m) for m in models}

    def __iter__(self) -> Iterator[ModelCard]:
        return iter(self._cards.values())

    def lookup(self, name: object) -> ModelCard:
        if not isinstance(name, str) or not name:
            raise ModelNotFound("you must provide a model name", param="model")
        card = self._cards.get(name)
        if card is None:
            # The name is client input, but a model name is not personal data and the
            # client needs it to see the mistake; it is cut short to stay harmless.
            raise ModelNotFound(f"The model '{name[:100]}' does not exist", param="model")
        return card
