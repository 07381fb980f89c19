"""compose.yaml and the Dockerfile, checked without a Docker engine: the Compose
Specification's schema, every file they name, the start order, and guard's environment
as guard's own settings read it."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from guard.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# A copy of the Compose Specification's schema (compose-spec/compose-spec,
# schema/compose-spec.json): CI has the repository and nothing else.
SCHEMA = json.loads((ROOT / "tests/schemas/compose-spec.json").read_text(encoding="utf-8"))

# Host paths that are the user's, not the repository's.
USER_PATHS = {"${MODELS_DIR:-./models}": "the model weights vLLM serves, put there by the user"}
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}")
VOLUME = re.compile(r"(?P<source>(?:\$\{[^}]*\}|[^:$])+):(?P<target>[^:]+)(?::(?P<mode>\w+))?")


def interpolate(value: str) -> str:
    """What Compose makes of a value when none of its variables is set."""

    def default(match: re.Match[str]) -> str:
        if match["default"] is None:
            raise AssertionError(f"{match[0]} has no default: compose.yaml needs it set")
        return match["default"]

    return INTERPOLATION.sub(default, value)


def volumes() -> list[tuple[str, str, str, bool]]:
    """(service, source, target, read-only) for every volume in the short syntax."""
    found = []
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            parts = VOLUME.fullmatch(volume)
            assert parts, f"{name}: {volume} is not SOURCE:TARGET[:MODE]"
            found.append((name, parts["source"], parts["target"], parts["mode"] == "ro"))
    return found


def binds() -> list[Any]:
    return [
        pytest.param(service, source, target, ro, id=f"{service}:{source}")
        for service, source, target, ro in volumes()
        if source.startswith(("./", "${"))
    ]


def depends_on(service: str) -> dict[str, dict[str, Any]]:
    """A service's dependencies in the long syntax, whichever syntax the file uses."""
    deps = SERVICES[service].get("depends_on", {})
    if isinstance(deps, list):
        return {dep: {"condition": "service_started"} for dep in deps}
    return dict(deps)


def mount_target(service: str, source: str) -> str:
    [target] = [t for s, src, t, _ in volumes() if s == service and src == source]
    return target


@pytest.fixture
def compose_env(monkeypatch):
    """Set a service's environment as Compose would (variables unset), and nothing else."""
    for name in list(os.environ):
        if name.startswith("GUARD_"):
            monkeypatch.delenv(name)

    def apply(environment: dict[str, str]) -> Settings:
        for key, value in environment.items():
            monkeypatch.setenv(key, interpolate(str(value)))
        return Settings()

    return apply


# -- the file as Compose reads it ---------------------------------------------------------


def test_compose_file_follows_the_compose_specification():
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    errors = jsonschema.Draft7Validator(SCHEMA).iter_errors(COMPOSE)
    assert [f"{list(e.absolute_path)}: {e.message}" for e in errors] == []


def test_the_schema_turns_away_a_misspelt_key():
    broken = {"services": {"guard": {"image": "guard:local", "depends-on": ["postgres"]}}}
    assert not jsonschema.Draft7Validator(SCHEMA).is_valid(broken)


@pytest.mark.parametrize(("service", "source", "target", "read_only"), binds())
def test_bind_mounts_exist_in_the_repository_read_only(service, source, target, read_only):
    if source in USER_PATHS:
        assert read_only, f"{service} may not write to {USER_PATHS[source]}"
        return
    path = ROOT / source
    assert path.exists(), f"{service} mounts {source}, which the repository lacks"
    assert read_only, f"{service} could change the repository's {source}"


@pytest.mark.parametrize(
    "service", [pytest.param(s, id=s) for s, spec in SERVICES.items() if "build" in spec]
)
def test_build_context_and_dockerfile_exist(service):
    build = SERVICES[service]["build"]
    context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert context.is_dir()
    assert (context / dockerfile).is_file()


@pytest.mark.parametrize("service", [pytest.param(s, id=s) for s in SERVICES])
def test_dependencies_are_services(service):
    assert set(depends_on(service)) <= set(SERVICES)
    for dep, spec in depends_on(service).items():
        assert not set(SERVICES[dep].get("profiles", [])), f"{service} needs {dep}'s profile"
        if spec["condition"] == "service_healthy":
            assert "healthcheck" in SERVICES[dep], f"{dep} has no healthcheck to wait for"


def test_guard_starts_after_the_migration_succeeded_on_a_healthy_database():
    assert depends_on("migrate")["postgres"]["condition"] == "service_healthy"
    assert depends_on("guard")["migrate"]["condition"] == "service_completed_successfully"
    assert depends_on("guard")["postgres"]["condition"] == "service_healthy"
    assert SERVICES["migrate"]["command"] == ["db", "upgrade"]
    assert SERVICES["migrate"].get("restart") == "no"
    assert SERVICES["migrate"]["image"] == SERVICES["guard"]["image"]
    assert SERVICES["migrate"]["build"] == SERVICES["guard"]["build"]


def test_model_servers_wait_for_their_profiles():
    assert SERVICES["vllm"]["profiles"] == ["gpu"]
    assert SERVICES["ollama"]["profiles"] == ["cpu"]
    [gpu] = SERVICES["vllm"]["deploy"]["resources"]["reservations"]["devices"]
    assert "gpu" in gpu["capabilities"]


# -- guard's environment, as guard reads it ---------------------------------------------


def test_guard_environment_is_valid_settings_that_reach_the_stack(compose_env):
    settings = compose_env(SERVICES["guard"]["environment"])
    assert settings.server.host == "0.0.0.0"
    assert f"{settings.server.port}:{settings.server.port}" in SERVICES["guard"]["ports"]
    assert str(settings.policy.dir) == mount_target("guard", "./policies")
    database = settings.audit.database_url
    postgres = SERVICES["postgres"]["environment"]
    assert database == interpolate(
        f"postgresql+psycopg://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres['POSTGRES_DB']}"
    )
    assert (
        SERVICES["migrate"]["environment"]["GUARD_AUDIT__DATABASE_URL"]
        == (SERVICES["guard"]["environment"]["GUARD_AUDIT__DATABASE_URL"])
    )


def test_the_default_model_is_the_one_vllm_serves(compose_env):
    settings = compose_env(SERVICES["guard"]["environment"])
    [upstream] = settings.upstreams
    assert (upstream.base_url.host, upstream.base_url.port) == ("vllm", 8000)
    command = SERVICES["vllm"]["command"]
    served = command[command.index("--served-model-name") + 1]
    model = settings.models[0]
    assert (model.upstream, model.upstream_model) == (upstream.name, served)
    assert command[command.index("--port") + 1] == "8000"


def test_the_documented_switch_to_ollama_is_valid_settings(compose_env):
    """The commented lines in guard's environment that point it at the ollama service."""
    text = (ROOT / "compose.yaml").read_text(encoding="utf-8")
    lines = re.findall(r"^\s*#\s+(GUARD_\w+: '.*')$", text, flags=re.MULTILINE)
    switch = yaml.safe_load("\n".join(lines))
    assert set(switch) == {"GUARD_UPSTREAMS", "GUARD_MODELS"}
    settings = compose_env({**SERVICES["guard"]["environment"], **switch})
    [upstream] = settings.upstreams
    assert (upstream.base_url.host, upstream.base_url.port, upstream.kind) == (
        "ollama",
        11434,
        "ollama",
    )
    assert settings.models[0].upstream == upstream.name


def test_guard_sends_traces_to_the_database_and_the_collector(compose_env):
    """Needs guard's telemetry settings (telemetry.traces)."""
    settings = compose_env(SERVICES["guard"]["environment"])
    traces = settings.telemetry.traces
    assert set(traces.exporters) == {"database", "otlp"}
    assert str(traces.otlp_endpoint).rstrip("/") == "http://otel-collector:4318"
    collector = yaml.safe_load((ROOT / "deploy/otel-collector.yaml").read_text())
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")


# -- what the other services are given ----------------------------------------------------


def test_prometheus_scrapes_guard():
    config = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text(encoding="utf-8"))
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "guard"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"][0]["targets"] == ["guard:8080"]
    target = mount_target("prometheus", "./deploy/prometheus.yml")
    assert target == "/etc/prometheus/prometheus.yml"


def test_collector_passes_traces_on_to_jaeger():
    config = yaml.safe_load((ROOT / "deploy/otel-collector.yaml").read_text(encoding="utf-8"))
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    assert pipeline["processors"] == ["batch"]
    [exporter] = pipeline["exporters"]
    assert config["exporters"][exporter]["endpoint"] == "jaeger:4317"
    command = SERVICES["otel-collector"]["command"]
    path = mount_target("otel-collector", "./deploy/otel-collector.yaml")
    assert command == [f"--config={path}"]


def test_grafana_provisions_both_data_sources_and_the_dashboards():
    provisioning = ROOT / "deploy/grafana/provisioning"
    sources = yaml.safe_load((provisioning / "datasources/datasources.yaml").read_text())
    by_uid = {s["uid"]: s for s in sources["datasources"]}
    assert by_uid["guard-prometheus"]["url"] == "http://prometheus:9090"
    postgres = by_uid["guard-postgres"]
    assert (postgres["url"], postgres["jsonData"]["database"]) == ("postgres:5432", "guard")
    env = SERVICES["grafana"]["environment"]
    assert postgres["user"] == "$GRAFANA_DB_USER"
    assert env["GRAFANA_DB_USER"] == SERVICES["postgres"]["environment"]["GRAFANA_DB_USER"]
    assert env["GRAFANA_DB_PASSWORD"] == SERVICES["postgres"]["environment"]["GRAFANA_DB_PASSWORD"]
    dashboards = yaml.safe_load((provisioning / "dashboards/dashboards.yaml").read_text())
    [provider] = dashboards["providers"]
    assert provider["options"]["path"] == mount_target("grafana", "./dashboards")
    home = Path(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (ROOT / "dashboards" / home.relative_to(provider["options"]["path"])).is_file()


# -- the image ----------------------------------------------------------------------------


def dockerfile() -> list[list[str]]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [line.split(None, 1) for line in lines if line and not line.startswith("#")]


def instructions(name: str) -> list[str]:
    return [rest for op, rest in dockerfile() if op == name]


def dockerignored() -> set[str]:
    text = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    return {line.strip() for line in text.splitlines() if line.strip()[:1] not in ("", "#")}


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(src, id=src)
        for rest in instructions("COPY")
        for src in shlex.split(rest)[:-1]
        if not src.startswith("--")
    ],
)
def test_copied_files_exist_and_reach_the_build(source):
    assert (ROOT / source).exists()
    assert source.rstrip("/") not in dockerignored()


def test_image_runs_guard_as_a_user_that_is_not_root():
    assert instructions("FROM") == ["python:3.11-slim"]
    [user] = instructions("USER")
    assert user not in ("root", "0")
    assert json.loads(instructions("ENTRYPOINT")[0]) == ["guard"]
    assert json.loads(instructions("CMD")[0]) == ["serve"]
    assert instructions("EXPOSE") == ["8080"]
    [healthcheck] = instructions("HEALTHCHECK")
    assert "/healthz" in healthcheck
