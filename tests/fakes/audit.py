"""Audit events for tests, and what an audit database holds."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from guard.audit.chain import ChainReport, verify_trail
from guard.audit.events import AuditEvent, FindingCount, RuleHit, new_event_id
from guard.db import models
from guard.db.base import make_engine
from guard.db.repository import AuditRepository

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def sample_event(n: int = 0, **fields: Any) -> AuditEvent:
    """A plausible exchange event; ``n`` spaces the start times a minute apart."""
    started = T0 + timedelta(minutes=n)
    values: dict[str, Any] = {
        "id": new_event_id(),
        "started_at": started,
        "ended_at": started + timedelta(milliseconds=250),
        "client_address": "10.0.0.7",
        "method": "POST",
        "route": "/v1/chat/completions",
        "model": "llama",
        "upstream": "vllm",
        "upstream_model": "meta/llama-3.1-8b",
        "licence_id": "llama3.1",
        "licence_commercial_use": True,
        "licence_attribution_required": True,
        "policy_version": "v1",
        "decision": "redact",
        "status": 200,
        "input_scan": "scanned",
        "output_scan": "scanned",
        "findings": (FindingCount("input", "pii", "EMAIL_ADDRESS", 2, 0.95),),
        "rules": (RuleHit("input", "pii.contact", "redact"),),
        "request_texts": ["write to <EMAIL_ADDRESS> please \u00e9\u4e2d"],
        "response_texts": ["done."],
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "usage_source": "upstream",
        "guard_in_ms": 0.412,
        "upstream_ttfb_ms": 120.5,
        "upstream_total_ms": 240.25,
        "guard_out_ms": 0.1,
        "total_ms": 250.0,
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
    }
    values.update(fields)
    return AuditEvent(**values)


def stored(url: str) -> tuple[collections.Counter[int], list[ChainReport]]:
    """What an audit database holds: exchange events counted by status, and its chains
    verified."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            status = models.events.c.status
            exchanges = models.events.c.kind == "exchange"
            counts = sa.select(status, sa.func.count()).where(exchanges).group_by(status)
            rows = conn.execute(counts).all()
        return collections.Counter(dict(rows)), verify_trail(AuditRepository(engine), None)
    finally:
        engine.dispose()


def wait_until(condition: Callable[[], object], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
