"""Model cards: which upstream serves a model, under which name and licence."""

from guard.registry.cards import LicenceCard, ModelCard, ModelRegistry

__all__ = ["LicenceCard", "ModelCard", "ModelRegistry"]
