"""Traces and metrics: one trace per exchange, continued from the client and passed on
to the model server, in the spans table and over OTLP; Prometheus metrics at /metrics.
Never a word of content in either."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from guard.db import models
from tests.conftest import make_settings
from tests.fakes.audit import wait_until
from tests.fakes.guard_server import free_port

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
MARK = "purple-elephant-7731"


def chat(server, content, traceparent=None, **extra):
    headers = {"traceparent": traceparent} if traceparent else {}
    body = {"model": "m1", "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=10)


def spans_of(server, trace_id):
    recorder = server.app.state.recorder
    assert recorder.flush()
    spans = models.spans
    return recorder.repo.rows(spans.select().where(spans.c.trace_id == trace_id))


def test_one_trace_per_exchange_from_the_client_to_the_model_server(guard, upstream):
    r = chat(guard, f"hello {MARK}", f"00-{TRACE}-{CLIENT_SPAN}-01")
    assert r.status_code == 200
    sent = upstream.requests[-1].headers["traceparent"]
    version, trace, upstream_span, flags = sent.split("-")
    assert (version, trace, flags) == ("00", TRACE, "01") and upstream_span != CLIENT_SPAN
    rows = spans_of(guard, TRACE)
    by_name = {row["name"]: row for row in rows}
    root = by_name["guard /v1/chat/completions"]
    assert (root["parent_span_id"], root["kind"], root["status"]) == (CLIENT_SPAN, "server", "ok")
    attrs = root["attributes"]
    assert attrs["http.response.status_code"] == 200
    assert attrs["gen_ai.request.model"] == "m1" and attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.usage.input_tokens"] == r.json()["usage"]["prompt_tokens"]
    assert attrs["guard.decision"] == "allow"
    call = by_name["guard.upstream"]
    assert (call["span_id"], call["parent_span_id"], call["kind"]) == (
        upstream_span,
        root["span_id"],
        "client",
    )
    ingress = by_name["guard.ingress"]
    detectors = [row for row in rows if row["name"] == "guard.detector patterns"]
    parents = sorted(
        (row["attributes"]["guard.direction"], row["parent_span_id"]) for row in detectors
    )
    assert parents == [("input", ingress["span_id"]), ("output", root["span_id"])]
    assert {"guard.policy input", "guard.policy output", "guard.audit.enqueue"} <= set(by_name)
    assert all(row["event_id"] == root["event_id"] for row in rows)
    assert attrs["guard.event_id"] in {str(root["event_id"]), root["event_id"]}
    for row in rows:
        assert row["trace_id"] == TRACE
        assert row["duration_ms"] >= 0 and row["end_time"] >= row["start_time"]
        assert ingress["start_time"] <= row["start_time"]
        assert MARK not in str(row["attributes"]) and "hello" not in str(row["attributes"])


def test_a_streamed_answer_is_scanned_under_the_stream_span(guard, upstream):
    upstream.behaviour.reply_text = "One. Two. Three."
    with httpx.stream(
        "POST",
        f"{guard.url}/v1/chat/completions",
        json={"model": "m1", "stream": True, "messages": [{"role": "user", "content": "go"}]},
        headers={"traceparent": f"00-{TRACE}-{CLIENT_SPAN}-01"},
    ) as r:
        r.read()
    assert wait_until(lambda: any(s["name"] == "guard.stream" for s in spans_of(guard, TRACE)))
    rows = spans_of(guard, TRACE)
    stream = next(row for row in rows if row["name"] == "guard.stream")
    windows = [
        row
        for row in rows
        if row["name"] == "guard.detector patterns"
        and row["attributes"]["guard.direction"] == "output"
    ]
    assert windows and all(row["parent_span_id"] == stream["span_id"] for row in windows)


@pytest.mark.parametrize(
    ("traceparent", "telemetry"),
    [
        pytest.param(f"00-{TRACE}-{CLIENT_SPAN}-00", {}, id="client-not-sampled"),
        pytest.param(None, {"traces": {"sample_ratio": 0.0}}, id="ratio-zero"),
        pytest.param(None, {"traces": {"exporters": []}}, id="no-exporter"),
    ],
)
def test_unsampled_exchanges_leave_no_spans(guard_at, upstream, traceparent, telemetry):
    server = guard_at(make_settings(upstream.base_url, telemetry=telemetry))
    assert chat(server, "hi", traceparent).status_code == 200
    assert upstream.requests[-1].headers["traceparent"].endswith("-00")
    assert server.app.state.recorder.flush()
    with server.app.state.recorder.repo.engine.connect() as conn:
        assert conn.execute(models.spans.select()).all() == []


def test_audit_show_prints_the_timing_tree(guard, audit_home, tmp_path):
    assert chat(guard, "hi", f"00-{TRACE}-{CLIENT_SPAN}-01").status_code == 200
    rows = spans_of(guard, TRACE)
    event_id = str(rows[0]["event_id"])
    config = tmp_path / "guard.yaml"
    config.write_text(
        yaml.safe_dump({"audit": {"database_url": f"sqlite:///{audit_home / 'audit.sqlite3'}"}})
    )
    shown = subprocess.run(
        [sys.executable, "-m", "guard", "audit", "show", "--config", str(config), event_id],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    tree = shown.stdout.split("timing tree (ms from arrival, duration):\n", 1)[1].splitlines()
    assert tree[0].startswith("  guard /v1/chat/completions  +0.000  ")
    assert any(line.startswith("    guard.ingress  +") for line in tree)
    assert any(line.startswith("      guard.detector patterns  +") for line in tree)
    assert any(line.startswith("    guard.upstream  +") for line in tree)


def metric(text, name, **labels):
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, value = line.rsplit(" ", 1)
            got = head.split("{", 1)[1].rstrip("}") if "{" in head else ""
            if head.split("{")[0] == name and ",".join(sorted(got.split(","))) == wanted:
                return float(value)
    return None


def test_metrics_count_exchanges_and_stages_without_content(guard, upstream):
    assert chat(guard, f"fine {MARK}").status_code == 200
    assert chat(guard, "my key is AKIA" + "Z7Q2LR4MXW6TNB3P").status_code == 403
    assert guard.app.state.recorder.flush()
    text = httpx.get(f"{guard.url}/metrics").text
    base = {"route": "/v1/chat/completions", "model": "m1"}
    assert (
        metric(text, "guard_requests_total", **base, decision="allow", status="200", tenant="") == 1
    )
    assert (
        metric(text, "guard_requests_total", **base, decision="block", status="403", tenant="") == 1
    )
    assert (
        metric(text, "guard_request_duration_seconds_count", **base, decision="block", status="403")
        == 1
    )
    assert (
        metric(
            text, "guard_detector_duration_seconds_count", detector="patterns", direction="input"
        )
        == 2
    )
    assert metric(text, "guard_policy_duration_seconds_count", direction="output") == 1
    assert metric(text, "guard_stage_duration_seconds_count", stage="upstream_ttfb") == 1
    assert (
        metric(
            text,
            "guard_rule_hits_total",
            rule="secrets.block-input",
            action="block",
            direction="input",
            mode="enforce",
        )
        == 1
    )
    assert (
        metric(
            text,
            "guard_findings_total",
            detector="patterns",
            label="AWS_ACCESS_KEY",
            direction="input",
        )
        == 1
    )
    assert metric(text, "guard_policy_reloads_total", outcome="loaded") == 1
    assert metric(text, "guard_audit_events_written_total") >= 3  # two exchanges and the bundle
    assert metric(text, "guard_spans_exported_total", exporter="database") > 0
    assert re.search(r'guard_policy_info\{version="sha256:[0-9a-f]{16}"\} 1\.0', text)
    assert MARK not in text and "AKIA" not in text


def test_upstream_errors_are_counted(guard, upstream):
    upstream.behaviour.status = 500
    assert chat(guard, "hi").status_code == 500
    text = httpx.get(f"{guard.url}/metrics").text
    assert metric(text, "guard_upstream_errors_total", upstream="fake", kind="status_5xx") == 1


def test_metrics_can_be_switched_off(guard_at, upstream):
    server = guard_at(make_settings(upstream.base_url, telemetry={"metrics": {"enabled": False}}))
    assert httpx.get(f"{server.url}/metrics").status_code == 404


class _Collector(ThreadingHTTPServer):
    """A loopback OTLP/HTTP receiver: the spans it was sent."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str]] = []  # trace id, name, parent span id
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        collector.spans.extend(
                            (s.trace_id.hex(), s.name, s.parent_span_id.hex()) for s in scope.spans
                        )
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_traces_go_to_an_otlp_collector(guard_at, upstream):
    collector = _Collector()
    try:
        endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
        telemetry = {"traces": {"exporters": ["otlp"], "otlp_endpoint": endpoint}}
        server = guard_at(make_settings(upstream.base_url, telemetry=telemetry))
        assert chat(server, "hi", f"00-{TRACE}-{CLIENT_SPAN}-01").status_code == 200
        assert wait_until(lambda: any(n == "guard.upstream" for _, n, _ in collector.spans), 15)
        mine = [span for span in collector.spans if span[0] == TRACE]
        assert "guard /v1/chat/completions" in {n for _, n, _ in mine}
        root = next(span for span in mine if span[1] == "guard /v1/chat/completions")
        assert root[2] == CLIENT_SPAN
        assert server.app.state.recorder.flush()
        with server.app.state.recorder.repo.engine.connect() as conn:
            assert conn.execute(models.spans.select()).all() == []  # otlp only
    finally:
        collector.shutdown()


def test_a_dead_collector_costs_nothing_but_a_counter(guard_at, upstream):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nobody listens
    telemetry = {"traces": {"exporters": ["otlp", "database"], "otlp_endpoint": endpoint}}
    server = guard_at(make_settings(upstream.base_url, telemetry=telemetry))
    for _ in range(3):
        assert chat(server, "hi").status_code == 200

    def failures():
        text = httpx.get(f"{server.url}/metrics").text
        return metric(text, "guard_spans_export_failures_total", exporter="otlp") or 0

    assert wait_until(lambda: failures() > 0, 30)
    text = httpx.get(f"{server.url}/metrics").text
    assert metric(text, "guard_spans_exported_total", exporter="database") > 0
