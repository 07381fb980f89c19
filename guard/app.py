"""create_app(settings): the one wiring hub (routes, error handlers, lifespan)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from litestar import Litestar, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig

from guard import __version__
from guard.audit.writer import AuditWriter, NoAudit, open_writer
from guard.db.tenants import TenantRepository
from guard.detectors.registry import DetectorRegistry
from guard.errors import (
    BodyTooLarge,
    ClientFacingError,
    ConfigError,
    ollama_error_body,
    openai_error_body,
)
from guard.ingress import admin, health, manage, ollama, openai, telemetry
from guard.ingress.asgi import refuse_ambiguous_paths
from guard.ingress.common import HTTPRequest
from guard.ingress.passthrough import passthrough_routes
from guard.pipeline.flow import Services
from guard.policy.actions import Redactor
from guard.policy.engine import FixedGuardrails, PolicyEngine
from guard.policy.loader import BUNDLED, Loader, PolicyError
from guard.policy.store import EventSink, PolicyStore
from guard.policy.vault import open_vault
from guard.registry.cards import ModelRegistry
from guard.settings import LOG_FORMAT, Settings, load_settings
from guard.telemetry.metrics import Metrics, NoMetrics
from guard.tenancy.auth import Authenticator
from guard.tenancy.gate import LimitGate
from guard.tenancy.limits import open_counters
from guard.upstream import UpstreamPool

log = logging.getLogger(__name__)
CONFIG_ENV = "GUARD_CONFIG_FILE"


def create_app(
    settings: Settings,
    *,
    registry: DetectorRegistry | None = None,
    policy: PolicyEngine | None = None,
) -> Litestar:
    """The guard ASGI app, deciding by the policy bundle the settings name. Embedders
    and tests may pass their own detector registry, or a fixed policy engine in code
    (which then runs every detector of ``settings.detectors``)."""
    registry = registry or DetectorRegistry.builtin()
    fixed: list[FixedGuardrails] = []  # for the first start (see _fixed_guardrails)
    if policy is not None:  # a detector that cannot be built fails create_app
        fixed.append(
            FixedGuardrails(registry.create(settings.detectors), policy, settings.scan.timeout)
        )
    else:
        for name in settings.detectors:  # a misspelt detector name stops the start
            try:
                registry.entry(name)
            except ConfigError as exc:
                raise ConfigError(f"detectors.{name}: {exc}") from None

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # What each step opens is closed when guard stops, in the reverse order, and
        # also when a later step of the start fails: no writer process, classifier
        # thread or connection pool outlives a start that did not happen.
        async with AsyncExitStack() as opened:
            recorder = None
            if settings.audit.enabled:
                traces = settings.telemetry.traces
                recorder = await asyncio.to_thread(open_writer, settings.audit, traces)
                opened.push_async_callback(_closing, recorder.aclose)
            else:
                log.warning("audit: disabled (audit.enabled: false); no exchange is recorded")
            audit = recorder or NoAudit()
            models = ModelRegistry(settings.models)
            if policy is None:
                policies = await _open_policies(settings, registry, models, audit)
            else:
                policies = await _fixed_guardrails(settings, registry, policy, fixed)
            opened.push_async_callback(_closing, policies.aclose)
            upstreams = UpstreamPool(settings.upstreams)
            opened.push_async_callback(_closing, upstreams.aclose)
            vault = open_vault(settings.pseudonyms)
            opened.push_async_callback(_closing, vault.aclose)
            limits = _limit_gate(settings)
            opened.push_async_callback(_closing, limits.aclose)
            metrics = _metrics(settings, recorder, policies)
            app.state.metrics = metrics
            app.state.services = Services(
                settings=settings,
                models=models,
                upstreams=upstreams,
                policies=policies,
                audit=audit,
                metrics=metrics or NoMetrics(),
                vault=vault,
                auth=_authenticator(settings, recorder),
                limits=limits,
            )
            app.state.recorder = recorder
            app.state.started_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            # What exists now lives as long as the process: keep it out of every GC pass
            # (measured: a third off p99 latency under load).
            gc.collect()
            gc.freeze()
            policies.start_watching()
            yield

    app = Litestar(
        route_handlers=[
            *openai.ROUTES,
            *ollama.ROUTES,
            *health.ROUTES,
            *telemetry.ROUTES,
            admin.AUDIT,
            admin.POLICIES,
            manage.ROUTES,
            *passthrough_routes(settings.passthrough),
        ],
        lifespan=[lifespan],
        exception_handlers={
            ClientFacingError: _guard_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        request_max_body_size=settings.server.max_body_bytes,
        logging_config=None,  # guard's command line configures logging, once per process
        openapi_config=OpenAPIConfig(title="guard", version=__version__),
    )
    # Before routing, for every route: Litestar's own middleware runs after it.
    app.asgi_handler = refuse_ambiguous_paths(app.asgi_handler)
    return app


async def _closing(aclose: Callable[[], Awaitable[None]]) -> None:
    """Close one thing at the stop; a stop that is itself cancelled lets it finish."""
    await asyncio.shield(aclose())


def _authenticator(settings: Settings, recorder: AuditWriter | None) -> Authenticator:
    """Keys from the settings, and from the database when guard has one (the audit
    database: without it, only the settings' keys)."""
    repo = TenantRepository(recorder.repo.engine) if recorder is not None else None
    auth = Authenticator(settings.auth, settings.tenants, repo)
    if not settings.auth.required:
        log.warning("auth: requests without an API key are served (auth.required: false)")
    return auth


def _limit_gate(settings: Settings) -> LimitGate:
    """Limits counted in Redis when a URL is set (replicas share them), else here."""
    return LimitGate(open_counters(settings.limits.redis_url), settings.limits.on_store_error)


def _metrics(
    settings: Settings, recorder: AuditWriter | None, policies: PolicyStore
) -> Metrics | None:
    if not settings.telemetry.metrics.enabled:
        return None

    def audit_state() -> dict[str, int]:
        return recorder.telemetry_state() if recorder is not None else {}

    return Metrics(settings.telemetry.metrics, audit_state, policies.counts)


async def _open_policies(
    settings: Settings, registry: DetectorRegistry, models: ModelRegistry, audit: EventSink
) -> PolicyStore:
    """Load, check and test the policy bundle; one that cannot be used stops the start."""
    policy = settings.policy
    redactor = Redactor.from_settings(policy)
    loader = Loader(registry, settings.detectors, redactor, settings.scan.timeout)
    root = policy.dir or BUNDLED
    try:
        return await PolicyStore.open(loader, root, policy, {m.name: m for m in models}, audit)
    except PolicyError as exc:
        for problem in exc.problems:
            log.error("policy: %s", problem)  # noqa: TRY400  # each problem, no traceback
        raise


async def _fixed_guardrails(
    settings: Settings,
    registry: DetectorRegistry,
    engine: PolicyEngine,
    built: list[FixedGuardrails],
) -> PolicyStore:
    """An engine in code over every detector of the settings: the guardrails create_app
    built, at the first start; new ones at every later start of the same app, since a
    stop closes the detectors in force (PolicyStore.aclose)."""
    if built:
        return PolicyStore(built.pop())
    detectors = await asyncio.to_thread(registry.create, settings.detectors)
    return PolicyStore(FixedGuardrails(detectors, engine, settings.scan.timeout))


def app_factory() -> Litestar:
    """For ASGI servers started with an import string (each worker builds its own app)."""
    path = os.environ.get(CONFIG_ENV)
    settings = load_settings(Path(path) if path else None)
    configure_logging(settings.server.log_level)
    return create_app(settings)


def configure_logging(level: str) -> None:
    """Plain lines on stderr; a no-op where logging is already set up (tests, a host app)."""
    if logging.getLogger().handlers:
        return
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    # httpx logs every request's URL at INFO: noise on the hot path, not an audit trail.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    # Alembic narrates every step at INFO; `guard db` prints what happened itself.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))


def _error_response(
    request: HTTPRequest,
    status: int,
    message: str,
    *,
    type_: str,
    code: str | None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    if request.url.path.startswith("/api/"):
        body = ollama_error_body(message)
    else:
        body = openai_error_body(message, type_, code, param)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _guard_error(request: HTTPRequest, exc: Exception) -> Response[bytes]:
    assert isinstance(exc, ClientFacingError)  # noqa: S101  # registered for this type only
    return _error_response(
        request,
        exc.status,
        exc.message,
        type_=exc.type,
        code=exc.code,
        param=exc.param,
        headers=exc.headers(),
    )


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


def _http_error(request: HTTPRequest, exc: Exception) -> Response[bytes]:
    assert isinstance(exc, HTTPException)  # noqa: S101  # registered for this type only
    status = exc.status_code
    if status == 413:
        return _guard_error(
            request,
            BodyTooLarge(
                f"The request body is over the limit of {request.app.request_max_body_size} bytes"
            ),
        )
    type_ = "invalid_request_error" if status < 500 else "server_error"
    message = exc.detail if status != 404 else f"No route for {request.method} {request.url.path}"
    param = None
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        first = exc.extra[0] if isinstance(exc.extra[0], dict) else {}
        param = str(first.get("key") or "") or None
        message = f"'{param or 'body'}': {first.get('message', 'invalid')}"
    return _error_response(
        request, status, message, type_=type_, code=_HTTP_CODES.get(status), param=param
    )


def _unexpected_error(request: HTTPRequest, exc: Exception) -> Response[bytes]:
    # Type and frames only: an exception's message may quote request content.
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unexpected %s on %s\n%s", type(exc).__name__, request.url.path, frames)
    return _error_response(request, 500, "Internal error in guard", type_="server_error", code=None)
