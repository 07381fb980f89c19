"""`guard tenants|keys --server URL`: the commands over a running guard's admin API, on
real loopback HTTP, with the key in GUARD_API_KEY. The server checks roles and records
the changes; the commands print what the local ones print and exit as they do."""

import json
import shlex

import httpx
import pytest
from click.testing import CliRunner

from guard.cli import main
from guard.tenancy import keys
from tests.conftest import make_settings
from tests.fakes.guard_server import free_port
from tests.integration.test_cli_tenants import KEY_HEADER, TENANT_HEADER, rows, write_config

TOKEN = "bootstrap-admin-token-0123456789"  # noqa: S105
CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def server(guard_at, upstream, monkeypatch):
    monkeypatch.setenv("GUARD_ADMIN_TOKEN", TOKEN)
    monkeypatch.delenv("GUARD_SERVER", raising=False)
    monkeypatch.delenv("GUARD_API_KEY", raising=False)
    # A long cache: a revocation must not wait for it.
    return guard_at(
        make_settings(upstream.base_url, auth={"required": True, "cache_seconds": 3600})
    )


@pytest.fixture
def config(tmp_path, audit_home, monkeypatch):
    """A settings file for the local commands: the database the guard records into."""
    monkeypatch.delenv("GUARD_AUDIT__DATABASE_URL", raising=False)
    url = f"sqlite:///{audit_home / 'audit.sqlite3'}"
    return write_config(tmp_path / "guard.yaml", url)


def remote(server, line, key=TOKEN):
    result = CliRunner().invoke(
        main, [*shlex.split(line), "--server", server.url], env={"GUARD_API_KEY": key}
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def ok(server, line, key=TOKEN):
    result = remote(server, line, key)
    assert result.exit_code == 0, result.output
    return result


def api(server, method, path, key=TOKEN, **kwargs):
    headers = {"authorization": f"Bearer {key}"}
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=10, **kwargs)


def chat(server, key):
    return api(server, "POST", "/v1/chat/completions", key, json=CHAT).status_code


def test_tenants_made_remotely_are_in_the_database_and_recorded_by_the_server(server, config):
    made = ok(server, "tenants create acme --attr tier=gold --limit requests_per_minute=5")
    header, row = rows(made.stdout)
    assert header == TENANT_HEADER
    assert row[:3] == ["acme", '{"tier":"gold"}', '{"requests_per_minute":5}']
    changed = ok(
        server,
        "tenants set acme --attr tier=silver --limit requests_per_minute=none --json",
    )
    assert json.loads(changed.stdout)["limits"] == {}
    # GUARD_SERVER works as --server does.
    listed = CliRunner().invoke(
        main,
        ["tenants", "list", "--json"],
        env={"GUARD_SERVER": server.url, "GUARD_API_KEY": TOKEN},
    )
    assert listed.exit_code == 0, listed.output
    assert [t["id"] for t in json.loads(listed.stdout)] == ["acme"]
    local = CliRunner().invoke(main, ["tenants", "list", "--json", "--config", str(config)])
    assert local.exit_code == 0, local.output
    [tenant] = json.loads(local.stdout)
    assert (tenant["id"], tenant["attributes"], tenant["limits"]) == (
        "acme",
        {"tier": "silver"},
        {},
    )
    events = api(server, "GET", "/admin/audit/events", params={"kind": "admin"}).json()["data"]
    actions = {(e["route"], e["method"]) for e in events}
    assert {("tenants.create", "POST"), ("tenants.set", "PATCH")} <= actions


def test_a_key_made_remotely_works_and_a_remote_revocation_stops_it_at_once(server, upstream):
    ok(server, "tenants create acme")
    made = ok(server, "keys create --tenant acme --name app --expires 30d")
    token = made.stdout.strip()
    parsed = keys.parse(token)
    assert parsed is not None, made.stdout
    key_id = parsed[0]
    assert f"key {key_id} for tenant acme (role client), expires " in made.stderr
    assert token not in made.stderr
    assert chat(server, token) == 200
    header, row = rows(ok(server, "keys list --tenant acme").stdout)
    assert header == KEY_HEADER
    assert row[:5] == [key_id, "acme", "client", "app", "active"]
    assert ok(server, f"keys revoke {key_id}").stdout == f"revoked {key_id}\n"
    assert chat(server, token) == 401
    again = ok(server, f"keys revoke {key_id}").stdout
    assert again.startswith(f"already revoked {key_id} at 20")
    events = api(server, "GET", "/admin/audit/events", params={"kind": "admin"}).json()["data"]
    assert [e["route"] for e in events].count("keys.revoke") == 1


@pytest.mark.parametrize("role", ["auditor", "client"])
@pytest.mark.parametrize(
    "line",
    [
        pytest.param("tenants create evil", id="tenant-create"),
        pytest.param("tenants set acme --attr tier=free", id="tenant-set"),
        pytest.param("keys create --role admin", id="key-create"),
        pytest.param("keys list", id="key-list"),
    ],
)
def test_keys_without_the_admin_role_are_refused_and_change_nothing(server, role, line):
    assert api(server, "POST", "/admin/tenants", json={"id": "acme"}).status_code == 201
    body = {"role": role, "tenant": "acme" if role == "client" else None}
    key = api(server, "POST", "/admin/keys", json=body).json()["key"]
    before = api(server, "GET", "/admin/tenants").json(), api(server, "GET", "/admin/keys").json()
    result = remote(server, line, key)
    assert result.exit_code == 2
    assert result.output.startswith("guard: the server refused the key: ")
    assert (
        "Client keys cannot" if role == "client" else "needs a key with the role"
    ) in result.output
    after = api(server, "GET", "/admin/tenants").json(), api(server, "GET", "/admin/keys").json()
    assert after == before


def test_without_a_key_in_the_environment_nothing_is_sent(server):
    result = CliRunner().invoke(
        main, ["tenants", "create", "acme", "--server", server.url], env={"GUARD_API_KEY": None}
    )
    assert result.exit_code == 2
    assert result.output == "guard: set GUARD_API_KEY to an admin key to use --server\n"
    assert api(server, "GET", "/admin/tenants").json()["data"] == []


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("gk_0123456789abcdef_" + "s3cr3t" * 6, id="key-shaped"),
        pytest.param("not-a-key-but-secret-0123456789", id="not-key-shaped"),
        pytest.param("secret\u00e9-with-non-ascii", id="non-ascii"),
    ],
)
def test_a_wrong_key_is_refused_and_never_printed(server, key):
    result = remote(server, "tenants list", key)
    assert result.exit_code == 2
    assert len(result.output.splitlines()) == 1
    assert key not in result.output and "s3cr3t" not in result.output
    assert "secret" not in result.output


@pytest.mark.parametrize(
    ("line", "status", "message"),
    [
        pytest.param("tenants set nobody --attr x=1", 1, "No tenant nobody", id="unknown-tenant"),
        pytest.param("tenants create acme", 1, "A tenant acme exists", id="duplicate-tenant"),
        pytest.param("keys list --tenant nobody", 1, "No tenant nobody", id="list-unknown-tenant"),
        pytest.param("keys create --tenant nobody", 1, "No tenant nobody", id="key-unknown-tenant"),
        pytest.param(
            "keys revoke 0000000000000000", 1, "no key 0000000000000000", id="unknown-key"
        ),
        pytest.param(
            "tenants create t2 --limit requests_per_minute=lots",
            2,
            "--limit requests_per_minute: 'lots' is not a whole number",
            id="non-integer-limit",
        ),
        pytest.param(
            "tenants set acme --limit tokens_per_day=1.5",
            2,
            "--limit tokens_per_day: '1.5' is not a whole number",
            id="non-integer-limit-on-set",
        ),
        pytest.param("tenants create t2 --limit bogus=1", 2, "limit", id="unknown-limit"),
        pytest.param(
            "tenants create t2 --limit requests_per_minute=0", 2, "requests_per_minute", id="zero"
        ),
        pytest.param("keys create --role admin --tenant acme", 2, "admin key", id="admin-tenant"),
    ],
)
def test_refusals_exit_as_the_local_commands_do(server, line, status, message):
    assert api(server, "POST", "/admin/tenants", json={"id": "acme"}).status_code == 201
    before = api(server, "GET", "/admin/tenants").json(), api(server, "GET", "/admin/keys").json()
    result = remote(server, line)
    assert result.exit_code == status, result.output
    assert result.output.startswith("guard: ") and message in result.output
    assert len(result.output.splitlines()) == 1
    after = api(server, "GET", "/admin/tenants").json(), api(server, "GET", "/admin/keys").json()
    assert after == before


def test_an_unreachable_server_is_one_line(monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        main, ["tenants", "list", "--server", url], env={"GUARD_API_KEY": TOKEN}
    )
    assert result.exit_code == 2
    assert result.output == f"guard: cannot reach the admin API at {url} (ConnectError)\n"


def test_server_and_config_together_are_a_usage_error(server, config):
    result = remote(server, f"tenants list --config {config}")
    assert result.exit_code == 2
    assert "--server and --config cannot be used together" in result.output
