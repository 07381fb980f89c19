"""Prometheus metrics, served at ``/metrics``.

Request-path metrics are observed once per finished exchange (``Metrics.observe``);
the audit writer's and the policy store's state is read when Prometheus scrapes.
Labels are bounded: routes, configured models, decisions, statuses, detectors,
rule ids of the bundle; tenant ids only where ``telemetry.metrics.tenant_labels``
allows. No label ever holds request or response text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from guard.settings import MetricsSettings

if TYPE_CHECKING:
    from guard.pipeline.context import Exchange

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_FAST = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)
_WIDE = tuple(sorted({*_FAST, *_LATENCY}))
_STAGES = ("guard_in", "upstream_ttfb", "upstream_total", "guard_out", "total")
_UPSTREAM_ERRORS = {502: "unavailable", 504: "timeout"}
State = Callable[[], Mapping[str, Any]]


class Metrics:
    """One app's metrics, in a registry of its own."""

    def __init__(self, settings: MetricsSettings, audit: State, policy: State) -> None:
        self._tenants = settings.tenant_labels
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "guard_requests",
            "Exchanges, by route, model, decision and status.",
            ["route", "model", "decision", "status", "tenant"],
            registry=registry,
        )
        self.duration = Histogram(
            "guard_request_duration_seconds",
            "Time from the request's arrival to the last byte sent.",
            ["route", "model", "decision", "status"],
            buckets=_LATENCY,
            registry=registry,
        )
        self.stage = Histogram(
            "guard_stage_duration_seconds",
            "Time per stage: guard_in (before the upstream call), upstream_ttfb, "
            "upstream_total, guard_out (output guarding), total.",
            ["stage"],
            buckets=_WIDE,
            registry=registry,
        )
        self.detector = Histogram(
            "guard_detector_duration_seconds",
            "One detector's scan of one direction's texts (a stream: of one window).",
            ["detector", "direction"],
            buckets=_WIDE,
            registry=registry,
        )
        self.policy = Histogram(
            "guard_policy_duration_seconds",
            "Policy evaluation, detectors excluded.",
            ["direction"],
            buckets=_FAST,
            registry=registry,
        )
        self.rule_hits = Counter(
            "guard_rule_hits",
            "Rules that matched, by action and mode (enforce, monitor).",
            ["rule", "action", "direction", "mode"],
            registry=registry,
        )
        self.findings = Counter(
            "guard_findings",
            "Findings, by detector and label (entity type or class); never their values.",
            ["detector", "label", "direction"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "guard_upstream_errors",
            "Upstream calls that failed (unavailable, timeout) or answered 5xx.",
            ["upstream", "kind"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "guard_classifier_batch_size",
            "Texts per classifier forward pass.",
            ["detector"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=registry,
        )
        self.queue_depth = Gauge(
            "guard_classifier_queue_depth",
            "Texts waiting for a classifier's next batch.",
            ["detector"],
            registry=registry,
        )
        registry.register(_StateCollector(audit, policy))

    def observe(self, ex: Exchange) -> None:
        """Count one finished exchange: a handful of label lookups, nothing more."""
        route = ex.adapter.route or ex.inbound.path
        model = ex.model.name if ex.model else ""
        decision = max(d.action for d in ex.decisions.values()).name.lower() if ex.decided else ""
        status = str(ex.status)
        tenant = ex.tenant.id if self._tenants and ex.tenant else ""
        total = ex.ended - ex.started
        self.requests.labels(route, model, decision, status, tenant).inc()
        self.duration.labels(route, model, decision, status).observe(total)
        self._stages(ex, total)
        for name, direction, start, end in ex.steps:
            if name == "policy":
                self.policy.labels(direction).observe(end - start)
            else:
                self.detector.labels(name.removeprefix("detector:"), direction).observe(end - start)
        for direction, rule, action, mode in ex.rules:
            self.rule_hits.labels(rule, action, direction.value, mode).inc()
        for direction, scan in ex.scans.items():
            for finding in scan.findings:
                self.findings.labels(finding.detector, finding.label, direction.value).inc()
        self._upstream_error(ex)

    def _stages(self, ex: Exchange, total: float) -> None:
        sent, first, done = ex.upstream_sent, ex.upstream_first_byte, ex.upstream_done
        stage = self.stage
        stage.labels("total").observe(total)
        if sent is None:
            return
        stage.labels("guard_in").observe(sent - ex.started)
        if first is not None:
            stage.labels("upstream_ttfb").observe(first - sent)
        if done is not None:
            stage.labels("upstream_total").observe(done - sent)
        if ex.output_guarded:
            stage.labels("guard_out").observe(ex.guard_out)

    def _upstream_error(self, ex: Exchange) -> None:
        if ex.status < 500 or ex.model is None or ex.upstream_sent is None:
            return
        if ex.upstream_first_byte is None:
            kind = _UPSTREAM_ERRORS.get(ex.status)
        else:
            kind = "status_5xx" if ex.error_code is None else None
        if kind:
            self.upstream_errors.labels(ex.model.upstream, kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class NoMetrics:
    """``telemetry.metrics.enabled: false``."""

    def observe(self, ex: Exchange) -> None:
        pass


class _StateCollector(Collector):
    """The audit writer's and the policy store's state, read at scrape time."""

    def __init__(self, audit: State, policy: State) -> None:
        self._audit = audit
        self._policy = policy

    def collect(self) -> Iterator[Any]:
        audit = self._audit()
        yield _gauge("guard_audit_queue_depth", "Events waiting to be written.", audit, "queued")
        yield _gauge("guard_audit_spool_bytes", "Bytes in the spool.", audit, "spooled_bytes")
        yield _counter("guard_audit_events_lost", "Events lost (fail open).", audit, "lost")
        yield _counter("guard_audit_events_written", "Events written.", audit, "written")
        exported = CounterMetricFamily(
            "guard_spans_exported", "Spans exported, by exporter.", labels=["exporter"]
        )
        failed = CounterMetricFamily(
            "guard_spans_export_failures", "Spans not exported, by exporter.", labels=["exporter"]
        )
        for exporter in ("database", "otlp"):
            exported.add_metric([exporter], audit.get(f"spans_{exporter}", 0))
            failed.add_metric([exporter], audit.get(f"spans_{exporter}_failed", 0))
        yield exported
        yield failed
        policy = self._policy()
        reloads = CounterMetricFamily(
            "guard_policy_reloads", "Policy bundle loads, by outcome.", labels=["outcome"]
        )
        for outcome in ("loaded", "rejected", "unchanged"):
            reloads.add_metric([outcome], policy.get(outcome, 0))
        yield reloads
        info = GaugeMetricFamily("guard_policy_info", "The bundle in force.", labels=["version"])
        info.add_metric([str(policy.get("version", ""))], 1)
        yield info


def _gauge(name: str, doc: str, state: Mapping[str, Any], key: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=state.get(key, 0))


def _counter(name: str, doc: str, state: Mapping[str, Any], key: str) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=state.get(key, 0))
