"""guard: a governance and safety proxy for self-hosted LLM servers."""

from guard.detectors.base import Detector, Direction, Finding, ScanContext
from guard.policy.engine import Action, Decision, PolicyEngine, Redaction
from guard.registry.cards import LicenceCard, ModelCard

__version__ = "0.1.0"

__all__ = [
    "Action",
    "Decision",
    "Detector",
    "Direction",
    "Finding",
    "LicenceCard",
    "ModelCard",
    "PolicyEngine",
    "Redaction",
    "ScanContext",
    "__version__",
]
