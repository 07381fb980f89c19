"""The exchange pipeline: per-request state (context) and the order of phases (flow)."""
