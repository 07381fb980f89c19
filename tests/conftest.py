from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from guard.db.base import make_engine
from guard.db.migrate import upgrade
from guard.settings import Settings
from tests.fakes.guard_server import GuardServer
from tests.fakes.postgres import scratch_database
from tests.fakes.upstream import FakeModelServer


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as server:
        yield server


@pytest.fixture
def upstream(upstream_server: FakeModelServer) -> FakeModelServer:
    upstream_server.reset()
    return upstream_server


_audit_defaults: dict[str, Any] = {}


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty audit database at head, migrated once and copied for each test."""
    path = tmp_path_factory.mktemp("audit-template") / "audit.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(autouse=True)
def audit_home(tmp_path: Path, migrated_sqlite: Path) -> Iterator[Path]:
    """Each test's guard records into its own SQLite file and spool directory."""
    home = tmp_path / "audit"
    home.mkdir()
    shutil.copy(migrated_sqlite, home / "audit.sqlite3")
    _audit_defaults.update(
        database_url=f"sqlite:///{home / 'audit.sqlite3'}", spool_dir=str(home / "spool")
    )
    yield home
    _audit_defaults.clear()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A scratch PostgreSQL database migrated to head, dropped after the test."""
    with scratch_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url


def make_settings(upstream_url: str, **overrides: Any) -> Settings:
    """Settings for one fake upstream serving two models (one renamed upstream), with
    the audit trail in this test's own directory."""
    data: dict[str, Any] = {
        "audit": {**_audit_defaults, "flush_interval": 0.01},
        "upstreams": [
            {
                "name": "fake",
                "base_url": upstream_url,
                "kind": "openai",
                "timeouts": {"connect": 1, "read": 2},
            },
            {
                "name": "fake-ollama",
                "base_url": upstream_url,
                "kind": "ollama",
                "timeouts": {"connect": 1, "read": 2},
            },
        ],
        "models": [
            {
                "name": "m1",
                "upstream": "fake",
                "licence": {"id": "apache-2.0", "commercial_use": True},
            },
            {
                "name": "llama",
                "upstream": "fake",
                "upstream_model": "meta/llama-3.1-8b",
                "licence": {
                    "id": "llama3.1",
                    "commercial_use": True,
                    "attribution_required": True,
                    "source_url": "https://example.org/llama",
                    "revision": "abc123",
                },
            },
            {
                "name": "olm",
                "upstream": "fake-ollama",
                "upstream_model": "fake-model",
                "licence": {"id": "mit", "commercial_use": True},
            },
        ],
    }
    audit = overrides.pop("audit", {})
    data.update(overrides)
    data["audit"] = {**data["audit"], **audit}
    return Settings(**data)


GuardFactory = Callable[..., AbstractContextManager[GuardServer]]


@pytest.fixture
def guard_at(upstream: FakeModelServer) -> Iterator[Callable[..., GuardServer]]:
    """Start guard with settings overrides and app kwargs; stopped after the test."""
    started: list[GuardServer] = []

    def start(settings: Settings | None = None, **app_kwargs: Any) -> GuardServer:
        server = GuardServer(settings or make_settings(upstream.base_url), **app_kwargs)
        started.append(server.__enter__())
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture
def guard(guard_at: Callable[..., GuardServer]) -> GuardServer:
    return guard_at()
