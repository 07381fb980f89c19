"""Policy: findings and context in, one Decision out. Only the engine decides."""

from guard.policy.engine import Action, AllowAll, Decision, PolicyEngine, Redaction

__all__ = ["Action", "AllowAll", "Decision", "PolicyEngine", "Redaction"]
