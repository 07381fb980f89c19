"""Policy: findings and context in, one Decision out. Only the engine decides."""

from guard.policy.decision import Action, Decision, Redaction, RuleMatch
from guard.policy.engine import AllowAll, Guardrails, PolicyEngine

__all__ = [
    "Action",
    "AllowAll",
    "Decision",
    "Guardrails",
    "PolicyEngine",
    "Redaction",
    "RuleMatch",
]
