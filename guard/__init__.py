"""guard: a governance and safety proxy for self-hosted LLM servers."""

from guard.detectors.base import Detector, Direction, Finding, ScanContext
from guard.policy.decision import Action, Decision, Redaction
from guard.policy.engine import PolicyEngine
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
