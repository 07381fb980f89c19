"""One validated settings model: embedded defaults, a YAML file, GUARD_* overrides.

Precedence, highest first: ``GUARD_*`` environment variables (nested keys joined
with ``__``, lists and maps as JSON), the YAML file, the embedded defaults below.
Unknown keys are errors everywhere. ``load_settings`` turns every failure into one
``ConfigError`` that names the file, the key and what is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from guard.errors import ConfigError
from guard.registry import licences

ENV_PREFIX = "GUARD_"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    workers: Annotated[int, Field(ge=1, le=256)] = 1
    max_body_bytes: Annotated[int, Field(ge=1024)] = 10 * 1024 * 1024
    body_timeout: Annotated[float, Field(gt=0)] = Field(
        default=30.0,
        description="Seconds a client has to send a request's body once its headers are "
        "in; a slower one gets 408 (a client trickling bytes holds nothing longer).",
    )
    keep_alive_timeout: Annotated[float, Field(gt=0)] = Field(
        default=75.0,
        description="Seconds an idle client connection stays open. Keep it above the idle "
        "timeout of the clients and load balancers in front (HTTP clients commonly keep 5 s, "
        "balancers 60 s): one that sends a request on a connection just as guard closes it "
        "gets a reset, and a POST is not safe to retry.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = False


class Timeouts(Strict):
    connect: Annotated[float, Field(gt=0)] = 5.0
    read: Annotated[float, Field(gt=0)] = 600.0
    pool: Annotated[float, Field(gt=0)] = 30.0


class PoolLimits(Strict):
    # At least the expected client concurrency: a smaller pool queues requests
    # inside guard and latency collapses.
    max_connections: Annotated[int, Field(ge=1)] = 512
    keepalive_expiry: Annotated[float, Field(gt=0)] = 60.0


class UpstreamSettings(Strict):
    name: str
    base_url: AnyHttpUrl
    kind: Literal["openai", "ollama"] = "openai"
    api_key_env: str | None = Field(
        default=None,
        description="Environment variable holding the upstream's API key; sent as Bearer.",
    )
    headers_env: dict[str, str] = Field(
        default_factory=dict,
        description="Header name -> environment variable holding its value.",
    )
    timeouts: Timeouts = Timeouts()
    pool: PoolLimits = PoolLimits()

    @model_validator(mode="after")
    def _credentials_present(self) -> UpstreamSettings:
        names = ([self.api_key_env] if self.api_key_env else []) + list(self.headers_env.values())
        missing = [name for name in names if not os.environ.get(name)]
        if missing:
            raise ValueError(f"environment variable {missing[0]} is not set")
        return self

    @property
    def root(self) -> str:
        return str(self.base_url).rstrip("/")


class Licence(Strict):
    """A model's licence terms: a plain id (``licence: llama3.1``) takes them all from
    guard's catalogue (``guard licences``); in the mapping form, the keys given override
    the catalogue's (an operator with a separate agreement). An id the catalogue lacks
    needs at least ``commercial_use``."""

    id: str = Field(description="A catalogue id or alias (e.g. llama3.1), or the licence's name")
    commercial_use: bool
    attribution_required: bool = False
    share_alike: bool = False
    restrictions: tuple[str, ...] = Field(
        default=(), description="What the licence forbids or conditions, in short."
    )
    user_threshold: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="Monthly active users above which the licensor's licence is needed.",
    )
    source_url: AnyHttpUrl | None = Field(default=None, description="Where the weights came from.")
    revision: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_catalogue(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"id": data}
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            return data  # the field checks say what is wrong
        entry = licences.lookup(data["id"])
        if entry is None:
            # None, not absent: the check below then says why the key is needed.
            return {"commercial_use": None, **data}
        # The catalogue's id, so that audit events and queries see one spelling.
        return {**entry.terms(), **data, "id": entry.id}

    @field_validator("commercial_use", mode="before")
    @classmethod
    def _given(cls, value: object) -> object:
        if value is None:
            known = ", ".join(licences.catalogue().ids[:6])
            raise ValueError(
                f"required: true or false, unless the licence id is in guard's catalogue "
                f"(known: {known}, ...; `guard licences` lists all)"
            )
        return value


class ModelSettings(Strict):
    name: str = Field(description="The name clients send in the `model` field.")
    upstream: str
    upstream_model: str | None = Field(
        default=None, description="The name at the upstream; defaults to `name`."
    )
    licence: Licence


class PassthroughRoute(Strict):
    path: str
    methods: list[Literal["GET", "POST", "PUT", "PATCH", "DELETE"]] = ["GET"]
    upstream: str

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or ".." in value or "//" in value:
            raise ValueError("must be an absolute path without '..' or '//'")
        return value


class ScanSettings(Strict):
    timeout: Annotated[float, Field(gt=0)] = Field(
        default=10.0, description="Seconds a detector may take before it counts as failed."
    )
    stream_window_chars: Annotated[int, Field(ge=1)] = Field(
        default=200,
        description="On streams, scan at least every this many characters (and at sentence ends).",
    )


class PolicySettings(Strict):
    dir: Path | None = Field(
        default=None,
        description="The policy bundle: a directory of YAML policy files; "
        "empty: the policies bundled with guard.",
    )
    watch: bool = Field(default=True, description="Reload the bundle when a file in it changes.")
    watch_debounce: Annotated[float, Field(ge=0)] = Field(
        default=0.5, description="Seconds of quiet after a change before the reload."
    )
    test_on_load: bool = Field(
        default=True,
        description="Run the bundle's own test cases before it is used; a failure "
        "rejects it (at start: refuse to start; on reload: keep the running bundle).",
    )
    hash_key_env: str | None = Field(
        default=None,
        description="Environment variable with the key of the `hash` redaction; "
        "empty: a new random key per process.",
    )

    @model_validator(mode="after")
    def _key_present(self) -> PolicySettings:
        if self.hash_key_env and not os.environ.get(self.hash_key_env):
            raise ValueError(f"environment variable {self.hash_key_env} is not set")
        return self


class PseudonymSettings(Strict):
    conversation_header: str = Field(
        default="x-guard-conversation-id",
        description="The request header that names a conversation: its pseudonyms stay "
        "the same from turn to turn. Absent: each exchange has its own.",
    )
    ttl_seconds: Annotated[int, Field(ge=1)] = Field(
        default=3600,
        description="How long a conversation's pseudonyms are kept after its last turn.",
    )
    store: Literal["memory", "redis"] = Field(
        default="memory",
        description="Where conversations' pseudonyms are kept between turns: this "
        "process's memory, or Redis (shared by replicas).",
    )
    redis_url: str | None = Field(
        default=None, description="For store redis: redis://host:port/db."
    )
    key_env: str | None = Field(
        default=None,
        description="Environment variable with the secret the stored maps are encrypted "
        "with (AES-GCM); empty: a new random key per process (memory store only).",
    )
    max_conversations: Annotated[int, Field(ge=1)] = Field(
        default=100_000, description="For store memory: the most conversations kept."
    )

    @model_validator(mode="after")
    def _shared_store(self) -> PseudonymSettings:
        if self.store == "redis" and not self.redis_url:
            raise ValueError("store redis needs redis_url")
        if self.store == "redis" and not self.key_env:
            raise ValueError("store redis needs key_env, so that every replica can read the maps")
        if self.key_env and not os.environ.get(self.key_env):
            raise ValueError(f"environment variable {self.key_env} is not set")
        return self


class AuditSettings(Strict):
    enabled: bool = Field(
        default=True, description="Record one audit event per exchange (off only for benchmarks)."
    )
    database_url: str = Field(
        default="sqlite:///guard-data/audit.sqlite3",
        description="SQLAlchemy URL: sqlite:///PATH (embedded) or postgresql+psycopg://...",
    )
    auto_migrate: bool = Field(
        default=False,
        description="Apply pending migrations at start instead of refusing to serve.",
    )
    store_text: Literal["none", "redacted", "full"] = Field(
        default="redacted",
        description="Request and response texts kept in events: none, as redacted, or full.",
    )
    max_text_bytes: Annotated[int, Field(ge=0)] = Field(
        default=1024 * 1024, description="Texts kept per event and direction, at most."
    )
    spool_dir: Path = Field(
        default=Path("guard-data/spool"),
        description="Where events wait, fsynced, while the database is unreachable.",
    )
    spool_max_bytes: Annotated[int, Field(ge=4096)] = Field(
        default=1024**3, description="A spool over this size counts as unwritable."
    )
    on_spool_failure: Literal["fail_closed", "fail_open"] = Field(
        default="fail_closed",
        description="When events can be neither written nor spooled: refuse requests (503) "
        "or serve and count the lost events.",
    )
    queue_max: Annotated[int, Field(ge=1)] = Field(
        default=100_000, description="Events held in memory, at most, before any is lost."
    )
    batch_size: Annotated[int, Field(ge=1)] = 500
    flush_interval: Annotated[float, Field(gt=0)] = Field(
        default=0.05, description="Seconds an event waits, at most, for its batch to fill."
    )
    retry_interval: Annotated[float, Field(gt=0)] = Field(
        default=1.0, description="Seconds between attempts to reach an unreachable database."
    )
    drain_timeout: Annotated[float, Field(ge=0)] = Field(
        default=30.0, description="Seconds shutdown waits for queued events to be written."
    )
    instance: str = Field(
        default="",
        description="Names this guard's hash chains (one chain per process); empty: the host name.",
    )
    chain_key_env: str | None = Field(
        default=None,
        description="Environment variable with a secret: chain hashes become HMAC-SHA256, "
        "so nobody without it can forge a chain.",
    )

    @model_validator(mode="after")
    def _key_present(self) -> AuditSettings:
        if self.chain_key_env and not os.environ.get(self.chain_key_env):
            raise ValueError(f"environment variable {self.chain_key_env} is not set")
        return self


TraceExporter = Literal["database", "otlp"]


def _database_only() -> list[TraceExporter]:
    return ["database"]


class TraceSettings(Strict):
    exporters: list[TraceExporter] = Field(
        default_factory=_database_only,
        description="Where traces go: the audit database's spans table, an OTLP endpoint, "
        "both, or nowhere ([]). Traces are built by the audit writer, off the request path.",
    )
    otlp_endpoint: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://127.0.0.1:4318"),
        description="OTLP/HTTP endpoint (collector, Jaeger, Tempo); /v1/traces is appended.",
    )
    service_name: str = "guard"
    sample_ratio: Annotated[float, Field(ge=0, le=1)] = Field(
        default=1.0,
        description="Share of exchanges traced when the client sent no traceparent; "
        "a client's sampled flag is followed.",
    )


class MetricsSettings(Strict):
    enabled: bool = Field(default=True, description="Serve Prometheus metrics at /metrics.")
    tenant_labels: bool = Field(
        default=False,
        description="Label request counts with the tenant id (one series per tenant).",
    )


class TelemetrySettings(Strict):
    traces: TraceSettings = TraceSettings()
    metrics: MetricsSettings = MetricsSettings()


class AdminSettings(Strict):
    token_env: str = Field(
        default="GUARD_ADMIN_TOKEN",
        description="Environment variable holding the admin API's bearer token; "
        "without it the admin API refuses every request.",
    )


TENANT_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TenantId = Annotated[
    str, Field(pattern=TENANT_ID, description="Letters, digits, . _ - (64 at most).")
]
Positive = Annotated[int, Field(ge=1)]


class LimitSettings(Strict):
    """What one tenant or one key may use; unset: no limit. A request must pass both
    its tenant's limits and its key's."""

    requests_per_minute: Positive | None = None
    tokens_per_minute: Positive | None = Field(
        default=None, description="Prompt and completion tokens, as the model server counts them."
    )
    tokens_per_day: Positive | None = Field(default=None, description="Per UTC day.")
    concurrent_streams: Positive | None = None
    max_body_bytes: Annotated[int, Field(ge=1024)] | None = Field(
        default=None, description="Under server.max_body_bytes, which bounds every request."
    )


class TenantSettings(Strict):
    """A tenant defined in the settings (the database holds the others)."""

    id: TenantId
    attributes: dict[str, Any] = Field(
        default_factory=dict,
        description="What policies read as tenant.NAME (commercial, tier, data classes …).",
    )
    limits: LimitSettings = LimitSettings()


class ConfigKey(Strict):
    """An API key defined in the settings: its value is read from an environment
    variable, never written in the file."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,32}$")] = Field(
        description="Recorded in audit events as the key id."
    )
    key_env: str = Field(
        description="Environment variable holding the key (16 characters or more)."
    )
    role: Literal["client", "admin", "auditor"] = "client"
    tenant: TenantId | None = Field(default=None, description="One of `tenants`.")
    limits: LimitSettings = LimitSettings()

    @model_validator(mode="after")
    def _key_present(self) -> ConfigKey:
        value = os.environ.get(self.key_env, "")
        if not value:
            raise ValueError(f"environment variable {self.key_env} is not set")
        if len(value) < _MIN_KEY_CHARS:
            raise ValueError(
                f"the key in {self.key_env} is shorter than {_MIN_KEY_CHARS} characters"
            )
        return self


_MIN_KEY_CHARS = 16


class AuthSettings(Strict):
    required: bool = Field(
        default=False,
        description="Refuse model requests without a valid API key (401). When false, a "
        "request without a key passes with no tenant; a key that is sent is checked all the same.",
    )
    keys: list[ConfigKey] = Field(
        default_factory=list, description="Keys from the settings, besides the database's."
    )
    cache_seconds: Annotated[float, Field(ge=0)] = Field(
        default=10.0,
        description="How long a database key is trusted before it is read again: the "
        "longest a revocation made by another instance or the CLI takes to reach this one.",
    )


class LimitStoreSettings(Strict):
    redis_url: str | None = Field(
        default=None,
        description="Count limits in Redis (redis://host:port/db), shared by every "
        "replica; unset: in this process's memory.",
    )
    on_store_error: Literal["allow", "refuse"] = Field(
        default="allow",
        description="When Redis cannot be reached: serve without limits (logged and "
        "counted), or refuse with 503.",
    )


def _default_upstreams() -> list[UpstreamSettings]:
    return [UpstreamSettings(name="local", base_url=AnyHttpUrl("http://127.0.0.1:8000"))]


def _default_models() -> list[ModelSettings]:
    # Terms from the catalogue; only where the weights came from is this model's own.
    licence = Licence.model_validate(
        {"id": "apache-2.0", "source_url": "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct"}
    )
    return [
        ModelSettings(
            name="qwen2.5-0.5b-instruct",
            upstream="local",
            upstream_model="Qwen/Qwen2.5-0.5B-Instruct",
            licence=licence,
        )
    ]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    server: ServerSettings = ServerSettings()
    upstreams: list[UpstreamSettings] = Field(default_factory=_default_upstreams)
    models: list[ModelSettings] = Field(default_factory=_default_models)
    passthrough: list[PassthroughRoute] = Field(default_factory=list)
    scan: ScanSettings = ScanSettings()
    detectors: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Detector name -> its options; names from the registry."
    )
    policy: PolicySettings = PolicySettings()
    pseudonyms: PseudonymSettings = PseudonymSettings()
    audit: AuditSettings = AuditSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    admin: AdminSettings = AdminSettings()
    auth: AuthSettings = AuthSettings()
    tenants: list[TenantSettings] = Field(default_factory=list)
    limits: LimitStoreSettings = LimitStoreSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment overrides it. No .env
        # files and no secrets directory: credentials are named, not stored, here.
        del dotenv_settings, file_secret_settings
        return env_settings, init_settings

    @model_validator(mode="after")
    def _references_resolve(self) -> Settings:
        _unique("upstreams", [u.name for u in self.upstreams])
        _unique("models", [m.name for m in self.models])
        _unique("tenants", [t.id for t in self.tenants], "id")
        _unique("auth.keys", [k.id for k in self.auth.keys], "id")
        tenant_ids = {t.id for t in self.tenants}
        for index, key in enumerate(self.auth.keys):
            if key.tenant is not None and key.tenant not in tenant_ids:
                raise ValueError(f"auth.keys.{index}.tenant: no tenant {key.tenant!r} in tenants")
        known = {u.name for u in self.upstreams}
        sections: list[tuple[str, Sequence[ModelSettings | PassthroughRoute]]] = [
            ("models", self.models),
            ("passthrough", self.passthrough),
        ]
        for section, refs in sections:
            for index, ref in enumerate(refs):
                if ref.upstream not in known:
                    raise ValueError(
                        f"{section}.{index}.upstream: no upstream named {ref.upstream!r}"
                    )
        return self


def _unique(section: str, names: list[str], field: str = "name") -> None:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            raise ValueError(f"{section}.{index}.{field}: duplicate {field} {name!r}")
        seen.add(name)


def load_settings(path: Path | None = None) -> Settings:
    """Settings from the embedded defaults, the YAML file at ``path`` and GUARD_* variables."""
    data = _read_yaml(path) if path else {}
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"invalid YAML in {path}{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid settings in {path}: the top level must be a mapping")
    return data


def _describe(exc: ValidationError, path: Path | None) -> str:
    """One message naming the file, the key and the problem (no values: they may be secrets)."""
    error = exc.errors(include_url=False, include_input=False)[0]
    key = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if not key and ": " in message:  # cross-field checks name their key in the message
        key, message = message.split(": ", 1)
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    source = f"{path}" if path else "the embedded defaults"
    top = key.split(".", 1)[0].upper()
    if any(name.startswith(f"{ENV_PREFIX}{top}") for name in os.environ):
        source += f" or the {ENV_PREFIX}{top}* environment"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"invalid settings in {source}: {key}: {message}{more}"
