"""One audit event per exchange, whatever happened to it, with what compliance needs."""

import time
import uuid

import httpx
import msgspec
import pytest
import sqlalchemy as sa

from guard.audit.chain import verify_trail
from guard.db import models
from guard.policy.loader import BUNDLED, read_source
from tests.conftest import make_settings
from tests.fakes.audit import stored
from tests.fakes.detectors import MarkerPolicy, StampDetector, marker_registry
from tests.fakes.policies import write_bundle


def recorded(server, count=None):
    """The exchange events this guard's recorder wrote, in order. A stream is recorded when it
    closes, a moment after the client has read its end: wait for ``count`` events."""
    recorder = server.app.state.recorder
    table = models.events
    mine = (table.c.chain_id == uuid.UUID(recorder.chain.id)) & (table.c.kind == "exchange")
    deadline = time.monotonic() + 5
    while True:
        assert recorder.flush(timeout=10)
        events = recorder.repo.events(sa.select(table).where(mine).order_by(table.c.seq))
        if count is None or len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.01)


def chat(url, content, **extra):
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "llama", "messages": [{"role": "user", "content": content}], **extra},
        headers=extra.pop("headers", None),
    )


@pytest.fixture
def marked(guard_at, upstream):
    registry, _ = marker_registry()
    settings = make_settings(upstream.base_url, detectors={"marker": {}})
    return guard_at(settings, registry=registry, policy=MarkerPolicy())


def test_an_allowed_exchange_records_model_licence_usage_timings_and_trace(guard, upstream):
    trace = "0af7651916cd43dd8448eb211c80319c"
    r = httpx.post(
        f"{guard.url}/v1/chat/completions",
        json={"model": "llama", "messages": [{"role": "user", "content": "hello there"}]},
        headers={"traceparent": f"00-{trace}-b7ad6b7169203331-01"},
    )
    assert r.status_code == 200
    [event] = recorded(guard)
    assert (event.route, event.method, event.status) == ("/v1/chat/completions", "POST", 200)
    assert (event.model, event.upstream, event.upstream_model) == (
        "llama",
        "fake",
        "meta/llama-3.1-8b",
    )
    assert (event.licence_id, event.licence_commercial_use) == ("llama3.1", True)
    assert (event.licence_attribution_required, event.model_revision) == (True, "abc123")
    assert event.client_address == "127.0.0.1"
    assert event.trace_id == trace
    # The bundled licence policy records Llama's attribution duty and use restrictions.
    assert event.decision == "flag"
    assert [(r.direction, r.rule_id, r.action) for r in event.rules] == [
        ("input", "licence.attribution", "flag"),
        ("input", "licence.use-restrictions", "flag"),
    ]
    assert event.policy_version == read_source(BUNDLED).version
    # The bundled secrets policy scanned the prompt and the answer with its detector.
    assert (event.input_scan, event.output_scan) == ("scanned", "scanned")
    usage = r.json()["usage"]
    assert (event.prompt_tokens, event.completion_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert event.usage_source == "upstream"
    assert event.request_texts == ["hello there"]
    assert event.response_texts == [r.json()["choices"][0]["message"]["content"]]
    stages = [event.guard_in_ms, event.upstream_ttfb_ms, event.upstream_total_ms, event.total_ms]
    assert all(value is not None and value >= 0 for value in stages)
    assert event.upstream_ttfb_ms <= event.upstream_total_ms <= event.total_ms
    assert event.started_at < event.ended_at


def test_blocked_redacted_and_scanned_exchanges_keep_types_and_counts_never_values(
    marked, upstream
):
    assert chat(marked.url, "a forbidden thing").status_code == 403
    upstream.behaviour.reply_text = "fine"
    assert chat(marked.url, "my key is secret-abcd and secret-efgh").status_code == 200
    blocked, redacted = recorded(marked)
    assert (blocked.decision, blocked.status, blocked.error_code) == (
        "block",
        403,
        "content_policy_violation",
    )
    assert [(h.direction, h.rule_id, h.action) for h in blocked.rules] == [
        ("input", "no-forbidden", "block")
    ]
    assert blocked.input_scan == "scanned"
    assert blocked.output_scan == "unscanned"  # the upstream was never called
    assert blocked.upstream_ttfb_ms is None
    assert redacted.decision == "redact"
    assert (redacted.input_scan, redacted.output_scan) == ("scanned", "scanned")
    [finding] = [f for f in redacted.findings if f.direction == "input"]
    assert (finding.detector, finding.label, finding.count) == ("marker", "SECRET", 2)
    assert redacted.request_texts == ["my key is <SECRET> and <SECRET>"]
    stored = msgspec.json.encode([blocked, redacted])
    assert b"secret-abcd" not in stored


def test_events_record_the_versions_of_the_detectors_that_scanned_them(guard_at, upstream):
    registry, made = marker_registry()
    settings = make_settings(upstream.base_url, detectors={"marker": {}, "stamp": {}})
    server = guard_at(settings, registry=registry, policy=MarkerPolicy())
    upstream.behaviour.reply_text = "fine"
    assert chat(server.url, "hello").status_code == 200
    fallback = "stamp-model@rev1 (apache-2.0; cpu, after cuda:0 failed)"
    made["stamp"].release = fallback  # read for each exchange, not once at start
    assert chat(server.url, "a forbidden thing").status_code == 403
    assert chat(server.url, "hello", model="nope").status_code == 404
    allowed, blocked, unrouted = recorded(server, 3)
    # marker has no version(): it scanned, and is not recorded.
    assert allowed.detector_versions == {"stamp": StampDetector.RELEASE}
    assert blocked.detector_versions == {"stamp": fallback}
    assert unrouted.detector_versions == {}  # nothing scanned it
    _, reports = stored(settings.audit.database_url)
    assert [r.problem for r in reports] == [None]


STAMPED_OUTPUT = """
    name: stamped-output
    scope: {direction: output}
    detectors: {stamp: {}, marker: {}}
    rules:
      - id: stamp.seen
        when: {stamp.any: "*"}
        action: flag
      - id: marker.seen
        when: {marker.any: "*"}
        action: flag
"""


def test_a_policy_bundle_records_the_versions_of_its_output_detectors_on_streams(
    tmp_path, guard_at, upstream
):
    registry, _ = marker_registry()
    root = write_bundle(tmp_path / "policies", {"stamped.yaml": STAMPED_OUTPUT})
    settings = make_settings(upstream.base_url, policy={"dir": str(root)})
    server = guard_at(settings, registry=registry)
    upstream.behaviour.reply_text = "one two three."
    assert chat(server.url, "go", stream=True).status_code == 200
    [event] = recorded(server, 1)
    assert (event.input_scan, event.output_scan) == ("unscanned", "scanned")
    assert event.detector_versions == {"stamp": StampDetector.RELEASE}
    _, reports = stored(settings.audit.database_url)
    assert all(r.problem is None for r in reports)


def test_full_and_no_text_settings(guard_at, upstream):
    registry, _ = marker_registry()
    for store in ("full", "none"):
        settings = make_settings(
            upstream.base_url, detectors={"marker": {}}, audit={"store_text": store}
        )
        server = guard_at(settings, registry=registry, policy=MarkerPolicy())
        upstream.behaviour.reply_text = "ok"
        assert chat(server.url, "my key is secret-abcd").status_code == 200
        [event] = recorded(server)
        if store == "full":
            assert event.request_texts == ["my key is secret-abcd"]
        else:
            assert event.request_texts is None
            assert event.response_texts is None
        assert event.findings  # the summary is kept whatever the text setting


@pytest.mark.parametrize(
    ("send", "status", "code"),
    [
        pytest.param(lambda url: httpx.post(f"{url}/v1/chat/completions", content=b"{"), 400,
                     "invalid_request_error", id="bad-json"),
        pytest.param(lambda url: chat(url, "x", model="nope"), 404, "model_not_found",
                     id="unknown-model"),
        pytest.param(lambda url: httpx.post(f"{url}/v1/embeddings", content=b"x" * 4096), 413,
                     "request_too_large", id="too-large"),
    ],
)  # fmt: skip
def test_refused_requests_are_recorded(guard_at, upstream, send, status, code):
    server = guard_at(make_settings(upstream.base_url, server={"max_body_bytes": 2048}))
    assert send(server.url).status_code == status
    [event] = recorded(server)
    assert (event.status, event.error_code, event.decision) == (status, code, None)
    assert event.input_scan == event.output_scan == "unscanned"
    assert upstream.requests == []


def test_upstream_failure_is_recorded(guard, upstream):
    upstream.behaviour.status = 500
    upstream.behaviour.error_body = {"error": {"message": "boom"}}
    assert chat(guard.url, "x").status_code == 500
    upstream.behaviour = type(upstream.behaviour)(reset=True)
    assert chat(guard.url, "x").status_code == 502
    relayed, failed = recorded(guard)
    assert (relayed.status, relayed.output_scan) == (500, "unscanned")
    assert (failed.status, failed.error_code) == (502, "upstream_unavailable")


def test_streams_record_usage_estimates_and_early_ends(marked, upstream):
    upstream.behaviour.reply_text = "one two three."
    r = chat(marked.url, "go", stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200
    upstream.behaviour.reply_text = "four five six."
    assert chat(marked.url, "go", stream=True).status_code == 200
    upstream.behaviour.reply_text = " ".join(f"w{i}." for i in range(80))
    upstream.behaviour.chunk_delay = 0.05
    body = {"model": "llama", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    with (
        httpx.Client() as client,
        client.stream("POST", f"{marked.url}/v1/chat/completions", json=body) as resp,
    ):
        next(resp.iter_bytes())
    upstream.wait_for(lambda: upstream.disconnects == 1, timeout=5)
    with_usage, estimated, left = recorded(marked, 3)
    assert with_usage.stream and with_usage.usage_source == "upstream"
    assert with_usage.completion_tokens == 3
    assert with_usage.response_texts == ["one two three."]
    assert with_usage.output_scan == "scanned"
    assert estimated.usage_source == "estimated"
    assert estimated.completion_tokens == len("four five six.") // 4 + 1
    assert left.output_scan == "partially_scanned"
    assert left.error_code == "stream_incomplete"


def test_passthrough_is_recorded(guard_at, upstream):
    settings = make_settings(
        upstream.base_url, passthrough=[{"path": "/health", "upstream": "fake"}]
    )
    server = guard_at(settings)
    assert httpx.get(f"{server.url}/health").status_code == 200
    [event] = recorded(server, 1)
    assert (event.route, event.method, event.status) == ("/health", "GET", 200)
    assert event.input_scan == event.output_scan == "unscanned"


def test_readyz_reports_the_audit_trail(guard):
    assert chat(guard.url, "x").status_code == 200
    recorded(guard)
    audit = httpx.get(f"{guard.url}/readyz").json()["audit"]
    assert audit["database"] == "up"
    assert audit["written"] == 2  # the exchange, and the policy bundle put in force at start
    assert audit["lost"] == 0


def test_a_writer_seals_with_the_chain_key_guard_has_now(guard_at, upstream, monkeypatch):
    """Writer processes fork from a server started with the first one: each must still
    run with guard's environment as it is when it starts, here a chain key set since."""
    guard_at()
    monkeypatch.setenv("GUARD_TEST_CHAIN_KEY", "chain-key-for-tests")
    settings = make_settings(upstream.base_url, audit={"chain_key_env": "GUARD_TEST_CHAIN_KEY"})
    server = guard_at(settings)
    assert chat(server.url, "hello").status_code == 200
    assert len(recorded(server, 1)) == 1
    recorder = server.app.state.recorder

    def report(key):
        [mine] = [r for r in verify_trail(recorder.repo, key) if r.chain_id == recorder.chain.id]
        return mine

    assert report(b"chain-key-for-tests").problem is None
    assert report(b"chain-key-for-tests").checked >= 1
    assert report(b"another-key").problem is not None
