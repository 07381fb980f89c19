from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from guard.errors import ModelNotFound
from guard.settings import ModelSettings


@dataclass(frozen=True, slots=True)
class LicenceCard:
    id: str
    commercial_use: bool
    attribution_required: bool
    source_url: str | None
    revision: str | None


@dataclass(frozen=True, slots=True)
class ModelCard:
    name: str
    upstream: str
    upstream_model: str
    licence: LicenceCard

    @classmethod
    def from_settings(cls, model: ModelSettings) -> ModelCard:
        lic = model.licence
        return cls(
            name=model.name,
            upstream=model.upstream,
            upstream_model=model.upstream_model or model.name,
            licence=LicenceCard(
                id=lic.id,
                commercial_use=lic.commercial_use,
                attribution_required=lic.attribution_required,
                source_url=str(lic.source_url) if lic.source_url else None,
                revision=lic.revision,
            ),
        )

    def licence_fields(self) -> dict[str, object]:
        lic = self.licence
        return {
            "id": lic.id,
            "commercial_use": lic.commercial_use,
            "attribution_required": lic.attribution_required,
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
