"""`guard tenants` and `guard keys` against a real database: what they store, what they
print, what they refuse, and the admin audit events they write (never key material).

Commands are written as shell lines (split with shlex) and run in-process; one test
starts guard as a process, for the real stdout a shell captures."""

import json
import shlex
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from guard.cli import main
from guard.db import models
from guard.db.base import make_engine
from guard.db.tenants import KeyRecord, TenantRepository
from guard.tenancy import keys
from tests.fakes.guard_server import free_port
from tests.fakes.postgres import scratch_database

TENANT_HEADER = ["ID", "ATTRIBUTES", "LIMITS", "CREATED", "UPDATED"]
KEY_HEADER = ["ID", "TENANT", "ROLE", "NAME", "STATE", "CREATED", "EXPIRES", "REVOKED"]


def write_config(path, database_url):
    path.write_text(yaml.safe_dump({"audit": {"database_url": database_url}}))
    return path


@pytest.fixture
def sqlite_url(audit_home, monkeypatch):
    monkeypatch.delenv("GUARD_AUDIT__DATABASE_URL", raising=False)
    return f"sqlite:///{audit_home / 'audit.sqlite3'}"


@pytest.fixture
def config(tmp_path, sqlite_url):
    return write_config(tmp_path / "guard.yaml", sqlite_url)


@pytest.fixture
def engine(sqlite_url):
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def repo(engine):
    return TenantRepository(engine)


def guard(config, line):
    result = CliRunner().invoke(main, [*shlex.split(line), "--config", str(config)])
    # Bad input and unreachable databases end in an exit, never in a traceback.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def ok(config, line):
    result = guard(config, line)
    assert result.exit_code == 0, result.output
    return result


def rows(output):
    return [line.split("\t") for line in output.splitlines()]


def create_key(config, options=""):
    """The key `guard keys create` printed, its (id, secret), and the whole result."""
    result = ok(config, f"keys create {options}")
    token = result.stdout.strip()
    parsed = keys.parse(token)
    assert parsed is not None, token
    return token, parsed, result


def admin_events(engine):
    e = models.events.c
    query = (
        sa.select(e.route, e.detail, e.method)
        .where(e.kind == "admin")
        .order_by(e.started_at, e.seq)
    )
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]


def database_text(engine):
    """Every value of every table, as text: where a copy of a key would show."""
    metadata = sa.MetaData()
    metadata.reflect(engine)
    with engine.connect() as conn:
        return "\n".join(
            repr(tuple(row))
            for table in metadata.sorted_tables
            for row in conn.execute(table.select())
        )


# -- tenants ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        pytest.param("commercial=false", False, id="boolean"),
        pytest.param("tier=gold", "gold", id="string"),
        pytest.param("'models=[a, b]'", ["a", "b"], id="flow-list"),
        pytest.param("seats=10", 10, id="integer"),
        pytest.param("share=0.5", 0.5, id="float"),
        pytest.param("\"code='10'\"", "10", id="quoted-number-is-a-string"),
        pytest.param("motto=a=b", "a=b", id="value-with-equals"),
    ],
)
def test_tenant_attributes_are_read_as_yaml(config, repo, attr, expected):
    ok(config, f"tenants create acme --attr {attr}")
    [tenant] = repo.tenants()
    assert list(tenant.attributes.values()) == [expected]


def test_tenants_create_prints_the_row_and_list_prints_every_tenant(config, repo):
    created = ok(
        config,
        "tenants create acme --attr tier=gold --attr commercial=false "
        "--limit requests_per_minute=60",
    )
    header, row = rows(created.stdout)
    assert header == TENANT_HEADER
    assert row[:3] == ["acme", '{"commercial":false,"tier":"gold"}', '{"requests_per_minute":60}']
    assert repo.tenant("acme").limits == {"requests_per_minute": 60}
    ok(config, "tenants create beta")

    header, *listed = rows(ok(config, "tenants list").stdout)
    assert header == TENANT_HEADER
    assert listed == [row, ["beta", "{}", "{}", listed[1][3], listed[1][3]]]
    as_json = json.loads(ok(config, "tenants list --json").stdout)
    assert [(t["id"], t["attributes"], t["limits"]) for t in as_json] == [
        ("acme", {"tier": "gold", "commercial": False}, {"requests_per_minute": 60}),
        ("beta", {}, {}),
    ]


def test_tenants_create_json_prints_one_tenant(config):
    tenant = json.loads(ok(config, "tenants create acme --attr models=[x] --json").stdout)
    assert (tenant["id"], tenant["attributes"], tenant["limits"]) == ("acme", {"models": ["x"]}, {})


def test_tenants_set_merges_unsets_and_removes_a_limit(config, repo):
    ok(
        config,
        "tenants create acme --attr tier=gold --attr commercial=false "
        "--limit requests_per_minute=60 --limit tokens_per_day=5000",
    )
    out = ok(
        config,
        "tenants set acme --attr tier=silver --attr regions=[eu] --unset commercial "
        "--limit requests_per_minute=none --limit concurrent_streams=2",
    ).stdout
    stored = repo.tenant("acme")
    assert stored.attributes == {"tier": "silver", "regions": ["eu"]}
    assert stored.limits == {"tokens_per_day": 5000, "concurrent_streams": 2}
    assert rows(out)[1][:3] == [
        "acme",
        '{"regions":["eu"],"tier":"silver"}',
        '{"concurrent_streams":2,"tokens_per_day":5000}',
    ]


def test_tenants_set_without_a_change_is_a_usage_error(config, repo):
    ok(config, "tenants create acme --attr tier=gold")
    result = guard(config, "tenants set acme")
    assert result.exit_code == 2
    assert "nothing to change" in result.stderr
    assert repo.tenant("acme").attributes == {"tier": "gold"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param("tenants create acme", "tenant acme exists", id="duplicate"),
        pytest.param("tenants set nope --attr a=1", "no tenant nope", id="set-unknown"),
        pytest.param("keys create --tenant nope", "no tenant nope", id="key-unknown-tenant"),
        pytest.param("keys list --tenant nope", "no tenant nope", id="list-unknown-tenant"),
        pytest.param("keys revoke 0123456789abcdef", "no key 0123456789abcdef", id="revoke"),
    ],
)
def test_what_the_database_refuses_exits_1(config, line, message):
    ok(config, "tenants create acme")
    result = guard(config, line)
    assert result.exit_code == 1
    assert result.stderr == f"guard: {message}\n"
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param("create 'a b'", "a tenant id is 1 to 64", id="id"),
        pytest.param(
            "create x --limit requests_per_minute=0",
            "limit requests_per_minute: Input should be greater than or equal to 1",
            id="limit-zero",
        ),
        pytest.param("create x --limit rpm=5", "limit rpm: unknown limit", id="unknown-limit"),
        pytest.param(
            "create x --limit requests_per_minute=none",
            "limit requests_per_minute: Input should be a valid integer",
            id="none-only-removes",
        ),
        pytest.param("create x --limit rpm", "--limit 'rpm': expected NAME=VALUE", id="limit-no-="),
        pytest.param("create x --attr id=7", "attribute 'id': a name is", id="attr-id"),
        pytest.param("create x --attr tier", "--attr 'tier': expected NAME=VALUE", id="attr-no-="),
        pytest.param("create x --attr 'a={b: 1}'", "attribute 'a': a value is", id="attr-mapping"),
        pytest.param("create x --attr a=[b", "--attr a: the value is not", id="attr-bad-yaml"),
        pytest.param("set acme --limit rpm=none", "limit rpm: unknown limit", id="set-limit"),
    ],
)
def test_invalid_input_exits_2_with_the_reason(config, repo, line, message):
    ok(config, "tenants create acme")
    result = guard(config, f"tenants {line}")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"guard: {message}"), result.stderr
    assert result.stderr.count("\n") == 1
    assert [t.id for t in repo.tenants()] == ["acme"]


# -- keys ---------------------------------------------------------------------------


def test_keys_create_prints_only_the_key_and_stores_only_its_hash(config, repo, engine):
    ok(config, "tenants create acme")
    token, (key_id, secret), result = create_key(
        config, "--tenant acme --name ci --limit tokens_per_day=9"
    )
    assert result.stdout == token + "\n"
    assert (
        result.stderr == f"key {key_id} for tenant acme (role client); shown once: store it now\n"
    )
    [stored] = repo.keys()
    assert (stored.id, stored.tenant_id, stored.role, stored.name) == (
        key_id,
        "acme",
        "client",
        "ci",
    )
    assert stored.limits == {"tokens_per_day": 9}
    assert keys.matches(stored.salt, stored.hash, secret)
    assert not keys.matches(stored.salt, stored.hash, secret[:-1] + "x")
    text = database_text(engine)
    assert stored.hash in text  # the dump does reach the key's row
    assert token not in text
    assert secret not in text


def test_a_client_key_without_a_tenant_says_it_acts_for_none(config, repo):
    _, _, result = create_key(config)
    assert "acting for no tenant" in result.stderr
    [stored] = repo.keys()
    assert (stored.tenant_id, stored.role) == (None, "client")


@pytest.mark.parametrize("role", ["admin", "auditor"])
def test_an_admin_or_auditor_key_has_no_tenant(config, repo, role):
    ok(config, "tenants create acme")
    result = guard(config, f"keys create --role {role} --tenant acme")
    assert result.exit_code == 2
    assert result.stderr == f"guard: an {role} key belongs to no tenant\n"
    assert result.stdout == ""
    assert repo.keys() == []
    create_key(config, f"--role {role}")
    [stored] = repo.keys()
    assert (stored.role, stored.tenant_id) == (role, None)


@pytest.mark.parametrize(
    ("expires", "delta"),
    [
        pytest.param("30d", timedelta(days=30), id="days"),
        pytest.param("12h", timedelta(hours=12), id="hours"),
        pytest.param("90m", timedelta(minutes=90), id="minutes"),
    ],
)
def test_expires_takes_a_duration_from_now(config, repo, expires, delta):
    before = datetime.now(UTC)
    create_key(config, f"--expires {expires}")
    after = datetime.now(UTC)
    [stored] = repo.keys()
    assert before + delta <= stored.expires_at <= after + delta


@pytest.mark.parametrize(
    ("expires", "expected"),
    [
        pytest.param("2031-05-06", datetime(2031, 5, 6, tzinfo=UTC), id="date"),
        pytest.param("2031-05-06T07:08:09", datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC), id="naive"),
        pytest.param("2031-05-06T07:08:09Z", datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC), id="z"),
        pytest.param(
            "2031-05-06T07:08:09+02:00", datetime(2031, 5, 6, 5, 8, 9, tzinfo=UTC), id="offset"
        ),
    ],
)
def test_expires_takes_an_iso_date_or_time(config, repo, expires, expected):
    create_key(config, f"--expires {expires}")
    [stored] = repo.keys()
    assert stored.expires_at == expected


@pytest.mark.parametrize(
    ("expires", "message"),
    [
        pytest.param("soon", "expected 30d, 12h, 90m or an ISO 8601", id="word"),
        pytest.param("30w", "expected 30d, 12h, 90m or an ISO 8601", id="unit"),
        pytest.param("2031-02-30", "expected 30d, 12h, 90m or an ISO 8601", id="no-such-day"),
        pytest.param("99999999999d", "too far in the future", id="overflow"),
        pytest.param("2001-01-01", "the expiry is in the past", id="past"),
        pytest.param("0m", "the expiry is in the past", id="now"),
    ],
)
def test_a_bad_expiry_exits_2(config, repo, expires, message):
    result = guard(config, f"keys create --expires {expires}")
    assert result.exit_code == 2
    assert result.stderr.startswith("guard: ")
    assert message in result.stderr
    assert repo.keys() == []


def test_keys_list_shows_states_and_never_a_hash_or_salt(config, repo):
    ok(config, "tenants create acme")
    _, (active, _), _ = create_key(config, "--tenant acme --name 'tab\there' --expires 2031-01-01")
    _, (revoked, _), _ = create_key(config, "--role admin")
    ok(config, f"keys revoke {revoked}")
    made = keys.new_key()  # an expired key: the CLI refuses to make one, the proxy meets them
    past = datetime.now(UTC) - timedelta(days=1)
    repo.create_key(
        KeyRecord(made.id, "acme", "client", "", made.salt, made.hash, {}, past, past, None)
    )

    table = ok(config, "keys list").stdout
    header, *listed = rows(table)
    assert header == KEY_HEADER
    assert [row[:5] for row in listed] == [
        [made.id, "acme", "client", "", "expired"],
        [active, "acme", "client", "tab\\there", "active"],
        [revoked, "-", "admin", "", "revoked"],
    ]
    assert listed[1][6:] == ["2031-01-01T00:00:00Z", "-"]
    assert listed[2][6] == "-"
    assert listed[2][7].startswith(f"{datetime.now(UTC).year}-")
    as_json = ok(config, "keys list --json").stdout
    assert {"hash", "salt"}.isdisjoint(json.loads(as_json)[0])
    assert len(rows(ok(config, "keys list --tenant acme").stdout)) == 1 + 2
    stored = repo.keys()
    assert len(stored) == 3
    for output in (table, as_json):
        for key in stored:
            assert key.hash not in output
            assert key.salt not in output


def test_revoke_marks_the_key_and_a_second_revoke_says_when(config, repo):
    _, (key_id, _), _ = create_key(config)
    assert ok(config, f"keys revoke {key_id}").stdout == f"revoked {key_id}\n"
    [stored] = repo.keys()
    assert stored.revoked_at is not None
    again = ok(config, f"keys revoke {key_id}").stdout
    when = stored.revoked_at.isoformat().replace("+00:00", "Z")
    assert again == f"already revoked {key_id} at {when}\n"
    assert repo.keys()[0].revoked_at == stored.revoked_at


# -- the audit trail ------------------------------------------------------------------


def test_every_change_is_an_admin_event_without_key_material(config, repo, engine):
    ok(config, "tenants create acme --attr tier=gold --limit tokens_per_day=9")
    ok(config, "tenants set acme --attr seats=3 --unset tier --limit tokens_per_day=none")
    token, (key_id, secret), _ = create_key(
        config, "--tenant acme --name 'Jane Doe' --expires 2031-01-01"
    )
    ok(config, f"keys revoke {key_id}")
    ok(config, f"keys revoke {key_id}")  # changes nothing, records nothing
    ok(config, "tenants list")
    ok(config, "keys list")

    events = admin_events(engine)
    key = {"key": key_id, "tenant": "acme", "role": "client"}
    key_detail = {**key, "expires_at": "2031-01-01T00:00:00Z", "limits": {}}
    created = {"tenant": "acme", "attributes": ["tier"], "limits": {"tokens_per_day": 9}}
    changed = {
        "tenant": "acme",
        "attributes": ["seats"],
        "unset": ["tier"],
        "limits": {"tokens_per_day": None},
    }
    assert events == [
        ("tenants.create", created, "CLI"),
        ("tenants.set", changed, "CLI"),
        ("keys.create", key_detail, "CLI"),
        ("keys.revoke", key_detail, "CLI"),
    ]
    [stored] = repo.keys()
    details = json.dumps([detail for _, detail, _ in events])
    for material in (token, secret, stored.hash, stored.salt, "Jane Doe"):
        assert material not in details
    assert ok(config, "audit verify").stdout.endswith(" 0 broken\n")


def test_a_refused_change_is_not_recorded(config, engine):
    ok(config, "tenants create acme")
    assert guard(config, "tenants create acme").exit_code == 1
    assert guard(config, "keys create --tenant nope").exit_code == 1
    assert guard(config, "tenants set acme --limit rpm=1").exit_code == 2
    assert [route for route, _, _ in admin_events(engine)] == ["tenants.create"]


# -- databases ------------------------------------------------------------------------


def test_postgresql_keeps_tenants_keys_and_events(tmp_path, pg_url):
    config = write_config(tmp_path / "pg.yaml", pg_url)
    ok(config, "tenants create acme --attr 'models=[a, b]' --limit requests_per_minute=5")
    ok(config, "tenants set acme --attr commercial=true --limit requests_per_minute=none")
    _, (key_id, secret), _ = create_key(config, "--tenant acme --expires 2031-05-06T07:08:09+02:00")
    ok(config, f"keys revoke {key_id}")

    engine = make_engine(pg_url)
    try:
        repo = TenantRepository(engine)
        tenant = repo.tenant("acme")
        assert tenant.attributes == {"models": ["a", "b"], "commercial": True}
        assert tenant.limits == {}
        [stored] = repo.keys()
        assert keys.matches(stored.salt, stored.hash, secret)
        assert stored.expires_at == datetime(2031, 5, 6, 5, 8, 9, tzinfo=UTC)
        assert stored.revoked_at is not None
        routes = [route for route, _, _ in admin_events(engine)]
        assert routes == ["tenants.create", "tenants.set", "keys.create", "keys.revoke"]
        assert secret not in database_text(engine)
    finally:
        engine.dispose()
    listed = rows(ok(config, "keys list").stdout)
    assert listed[1][:5] == [key_id, "acme", "client", "", "revoked"]


@pytest.mark.parametrize(
    "line",
    [
        "tenants list",
        "tenants create acme --attr a=1",
        "tenants set acme --attr a=1",
        "keys create",
        "keys list",
        "keys revoke 0123456789abcdef",
    ],
)
def test_an_unreachable_database_exits_2_with_one_line(tmp_path, monkeypatch, line):
    monkeypatch.delenv("GUARD_AUDIT__DATABASE_URL", raising=False)
    url = f"postgresql+psycopg://guard:s3cret-pw@127.0.0.1:{free_port()}/audit"
    result = guard(write_config(tmp_path / "down.yaml", url), line)
    assert result.exit_code == 2
    assert result.stderr.startswith("guard: cannot reach the audit database postgresql")
    assert result.stderr.count("\n") == 1
    assert "s3cret-pw" not in result.stderr
    assert result.stdout == ""


def test_a_database_without_the_schema_exits_1_naming_the_error(tmp_path, monkeypatch):
    monkeypatch.delenv("GUARD_AUDIT__DATABASE_URL", raising=False)
    with scratch_database() as url:  # never migrated
        result = guard(write_config(tmp_path / "bare.yaml", url), "tenants list")
    assert result.exit_code == 1
    assert result.stderr == (
        "guard: the audit database refused this (UndefinedTable); is its schema current?\n"
    )


def test_a_shell_capture_of_keys_create_holds_only_the_key(config, repo):
    """What `KEY=$(guard keys create ...)` captures is the process's stdout."""
    ok(config, "tenants create acme")
    command = [sys.executable, "-m", "guard", "keys", "create", "--tenant", "acme"]
    result = subprocess.run(
        [*command, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    [token] = result.stdout.splitlines()
    key_id, secret = keys.parse(token)
    assert (
        result.stderr == f"key {key_id} for tenant acme (role client); shown once: store it now\n"
    )
    [stored] = repo.keys()
    assert keys.matches(stored.salt, stored.hash, secret)
