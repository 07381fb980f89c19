"""`guard tenants` and `guard keys`: tenants and API keys in the audit database.

``guard.tenancy.manage`` checks every input, for these commands and the admin API
alike; this module only turns the command line into its arguments, its errors into
exit codes (2: input that can never be stored; 1: the database's state says no), and
records every change as an admin audit event. A new key goes to stdout alone, so
``KEY=$(guard keys create ...)`` captures exactly the key; notes go to stderr.

With ``--server URL`` the same commands go to a running guard's admin API
(``guard.cli.remote``) with the admin key in GUARD_API_KEY, never on the command
line; the server checks the key's role and records the change. Both backends return
manage's views, which the commands print alike.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import click

from guard.cli.common import config_option, echo_json, echo_table, engine, load_or_exit
from guard.settings import LimitSettings
from guard.tenancy.keys import Role

if TYPE_CHECKING:
    from guard.db.repository import AuditRepository
    from guard.db.tenants import TenantRepository
    from guard.settings import AuditSettings

_View = dict[str, Any]

# Table columns, and the fields of tenant_view and key_view they show.
_TENANT_COLUMNS = ("ID", "ATTRIBUTES", "LIMITS", "CREATED", "UPDATED")
_TENANT_FIELDS = ("id", "attributes", "limits", "created_at", "updated_at")
_KEY_COLUMNS = ("ID", "TENANT", "ROLE", "NAME", "STATE", "CREATED", "EXPIRES", "REVOKED")
_KEY_FIELDS = ("id", "tenant", "role", "name", "state", "created_at", "expires_at", "revoked_at")
_DURATION = re.compile(r"(\d+)([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
_attr_option = click.option(
    "--attr",
    "attrs",
    multiple=True,
    metavar="NAME=VALUE",
    help="An attribute policies read as tenant.NAME; VALUE is YAML: false, 10, gold, [a, b].",
)


_server_option = click.option(
    "--server",
    envvar="GUARD_SERVER",
    default=None,
    metavar="URL",
    help="A running guard's URL: use its admin API, with the admin key in GUARD_API_KEY, "
    "instead of the database.",
)


def _limit_option(help_text: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return click.option("--limit", "limits", multiple=True, metavar="NAME=N", help=help_text)


# -- errors and the database ---------------------------------------------------------


def _fail(message: str, status: int) -> NoReturn:
    click.echo(f"guard: {message}", err=True)
    sys.exit(status)


@contextmanager
def _translated() -> Iterator[None]:
    """manage's and the repository's errors as one line and an exit code; an unreachable
    database is ``common.engine``'s to report."""
    from guard.db.repository import DatabaseRefused  # noqa: PLC0415
    from guard.db.tenants import TenantExists, UnknownTenant  # noqa: PLC0415
    from guard.tenancy.manage import InvalidInput  # noqa: PLC0415

    try:
        yield
    except InvalidInput as exc:
        _fail(str(exc), 2)
    except TenantExists as exc:
        _fail(f"tenant {exc} exists", 1)
    except UnknownTenant as exc:
        _fail(f"no tenant {exc}", 1)
    except DatabaseRefused as exc:
        # Only the error's type: the database's message may quote what it refused.
        _fail(f"the audit database refused this ({exc}); is its schema current?", 1)


class _Backend(Protocol):
    """Where the commands' work is done: the database itself (``_Local``) or a running
    guard's admin API (``remote.Remote``). Both return manage's views."""

    def tenants(self) -> list[_View]: ...

    def create_tenant(
        self, tenant_id: str, attributes: dict[str, Any], limits: Mapping[str, str | None]
    ) -> _View: ...

    def set_tenant(
        self,
        tenant_id: str,
        attributes: dict[str, Any],
        unset: tuple[str, ...],
        limits: Mapping[str, str | None],
    ) -> _View: ...

    def create_key(
        self,
        *,
        tenant_id: str | None,
        role: str,
        name: str,
        expires_at: datetime | None,
        limits: Mapping[str, str | None],
    ) -> tuple[_View, str]: ...

    def keys(self, tenant_id: str | None) -> list[_View]: ...

    def revoke_key(self, key_id: str) -> tuple[_View, bool]: ...


@dataclass(frozen=True, slots=True)
class _Local:
    """One database's tenants and keys, and its audit trail, where each change to
    them is recorded."""

    repo: TenantRepository
    audit: AuditRepository
    settings: AuditSettings

    def record(self, action: str, detail: dict[str, object]) -> None:
        from guard.audit.recorder import record_admin_action  # noqa: PLC0415

        record_admin_action(self.audit, self.settings, action, detail)

    def tenants(self) -> list[_View]:
        from guard.tenancy.manage import tenant_view  # noqa: PLC0415

        return [tenant_view(tenant) for tenant in self.repo.tenants()]

    def create_tenant(
        self, tenant_id: str, attributes: dict[str, Any], limits: Mapping[str, str | None]
    ) -> _View:
        from guard.tenancy.manage import create_tenant, tenant_view  # noqa: PLC0415

        tenant = create_tenant(self.repo, tenant_id, attributes, limits)
        # Attribute names, not values: the trail says what changed, the table what it is.
        detail: dict[str, object] = {
            "tenant": tenant.id,
            "attributes": sorted(attributes),
            "limits": tenant.limits,
        }
        self.record("tenants.create", detail)
        return tenant_view(tenant)

    def set_tenant(
        self,
        tenant_id: str,
        attributes: dict[str, Any],
        unset: tuple[str, ...],
        limits: Mapping[str, str | None],
    ) -> _View:
        from guard.tenancy.manage import tenant_view, update_tenant  # noqa: PLC0415

        tenant = update_tenant(
            self.repo, tenant_id, attributes=attributes, unset=unset, limits=limits
        )
        detail: dict[str, object] = {
            "tenant": tenant.id,
            "attributes": sorted(attributes),
            "unset": sorted(set(unset)),
            # As checked and stored; None: removed.
            "limits": {name: tenant.limits.get(name) for name in limits},
        }
        self.record("tenants.set", detail)
        return tenant_view(tenant)

    def create_key(
        self,
        *,
        tenant_id: str | None,
        role: str,
        name: str,
        expires_at: datetime | None,
        limits: Mapping[str, str | None],
    ) -> tuple[_View, str]:
        from guard.tenancy.manage import create_key, key_view  # noqa: PLC0415

        key, token = create_key(
            self.repo,
            tenant_id=tenant_id,
            role=role,
            name=name,
            expires_at=expires_at,
            limits=limits,
        )
        view = key_view(key)
        self.record("keys.create", _key_detail(view))
        return view, token

    def keys(self, tenant_id: str | None) -> list[_View]:
        from guard.db.tenants import UnknownTenant  # noqa: PLC0415
        from guard.tenancy.manage import key_view  # noqa: PLC0415

        # An empty table for a mistyped tenant would read as "it has no keys".
        if tenant_id is not None and self.repo.tenant(tenant_id) is None:
            raise UnknownTenant(tenant_id)
        return [key_view(key) for key in self.repo.keys(tenant_id)]

    def revoke_key(self, key_id: str) -> tuple[_View, bool]:
        """The key's view, and whether this call revoked it (a key revoked before is
        left as it is, and nothing is recorded)."""
        from guard.tenancy.manage import key_view  # noqa: PLC0415

        found = self.repo.key(key_id)
        if found is None:
            _fail(f"no key {key_id}", 1)
        view = key_view(found[0])
        if view["revoked_at"] is not None:
            return view, False
        self.repo.revoke_key(key_id)
        self.record("keys.revoke", _key_detail(view))
        return view, True


@contextmanager
def _backend(config: Path | None, server: str | None) -> Iterator[_Backend]:
    if server is None:
        with _local(config) as local:
            yield local
        return
    if config is not None:
        ctx = click.get_current_context(silent=True)
        raise click.UsageError("--server and --config cannot be used together", ctx)
    from guard.cli import remote  # noqa: PLC0415

    key = os.environ.get("GUARD_API_KEY")
    if not key:
        _fail("set GUARD_API_KEY to an admin key to use --server", 2)
    try:
        with remote.connect(server, key) as client:
            yield client
    except remote.RemoteError as exc:
        _fail(str(exc), exc.status)


@contextmanager
def _local(config: Path | None) -> Iterator[_Local]:
    from guard.db.repository import AuditRepository  # noqa: PLC0415
    from guard.db.tenants import TenantRepository  # noqa: PLC0415

    settings = load_or_exit(config).audit
    with engine(config) as eng, _translated():
        yield _Local(TenantRepository(eng), AuditRepository(eng), settings)


# -- parsing the command line -------------------------------------------------------


def _pairs(option: str, values: tuple[str, ...]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for value in values:
        name, equals, text = value.partition("=")
        if not (name and equals):
            _fail(f"{option} {value!r}: expected NAME=VALUE", 2)
        pairs.append((name, text))
    return pairs


def _attributes(values: tuple[str, ...]) -> dict[str, Any]:
    """Each VALUE read as YAML, as it would be in a settings file; manage decides
    which values a tenant may hold."""
    import yaml  # noqa: PLC0415

    attributes: dict[str, Any] = {}
    for name, text in _pairs("--attr", values):
        try:
            attributes[name] = yaml.safe_load(text)
        except yaml.YAMLError:
            _fail(f"--attr {name}: the value is not a YAML scalar or flow list", 2)
    return attributes


def _limits(values: tuple[str, ...], *, removable: bool = False) -> dict[str, str | None]:
    """N stays text for LimitSettings (through manage) to parse and check; where a limit
    is ``removable``, ``none`` (None) removes it."""
    return {
        name: None if removable and text.lower() == "none" else text
        for name, text in _pairs("--limit", values)
    }


def _expiry(value: str | None, now: datetime) -> datetime | None:
    """A duration from now (30d, 12h, 90m) or an ISO 8601 date or time, naive as UTC.
    Stored in UTC: SQLite keeps a time without its offset."""
    if value is None:
        return None
    found = _DURATION.fullmatch(value)
    try:
        if found:
            return now + timedelta(**{_UNITS[found[2]]: int(found[1])})
        parsed = datetime.fromisoformat(value)
    except OverflowError:
        _fail(f"--expires {value!r}: too far in the future", 2)
    except ValueError:
        _fail(f"--expires {value!r}: expected 30d, 12h, 90m or an ISO 8601 date or time", 2)
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- printing -------------------------------------------------------------------------


def _echo_views(
    columns: tuple[str, ...], fields: tuple[str, ...], views: list[dict[str, Any]]
) -> None:
    echo_table(columns, [tuple(_cell(view[f]) for f in fields) for view in views])


def _cell(value: object) -> str:
    """One table cell: a tab or newline in a key's name would break the row."""
    if value is None:
        return "-"
    if not isinstance(value, str):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return value.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _echo_tenants(views: list[_View], *, as_json: bool, one: bool = False) -> None:
    if as_json:
        echo_json(views[0] if one else views)
    else:
        _echo_views(_TENANT_COLUMNS, _TENANT_FIELDS, views)


def _key_detail(view: _View) -> dict[str, object]:
    """A key in the audit trail: from key_view, which holds no hash or salt. Not its
    name either: a label people type may name a person, and the trail keeps no text."""
    detail: dict[str, object] = {"key": view["id"]}
    detail.update({name: view[name] for name in ("tenant", "role", "expires_at", "limits")})
    return detail


def _created_note(view: _View) -> str:
    key_id, tenant_id, role = view["id"], view["tenant"], view["role"]
    if tenant_id is not None:
        whose = f"key {key_id} for tenant {tenant_id} (role {role})"
    elif role == Role.CLIENT:
        whose = f"key {key_id} (role client), acting for no tenant"
    else:
        whose = f"key {key_id} (role {role})"
    expires = f", expires {view['expires_at']}" if view["expires_at"] else ""
    return f"{whose}{expires}; shown once: store it now"


# -- guard tenants --------------------------------------------------------------------


@click.group()
def tenants() -> None:
    """Create, list and change tenants: their attributes and limits.

    A tenant's attributes are what policies read as tenant.NAME. Tables are
    tab-separated under a header; ATTRIBUTES and LIMITS are JSON."""


@tenants.command("create")
@config_option
@_server_option
@click.argument("tenant_id", metavar="ID")
@_attr_option
@_limit_option(f"A limit, one of {', '.join(LimitSettings.model_fields)}.")
@_json_option
def tenants_create(
    *,
    config: Path | None,
    server: str | None,
    tenant_id: str,
    attrs: tuple[str, ...],
    limits: tuple[str, ...],
    as_json: bool,
) -> None:
    """Add the tenant ID."""
    attributes, caps = _attributes(attrs), _limits(limits)
    with _backend(config, server) as backend:
        view = backend.create_tenant(tenant_id, attributes, caps)
    _echo_tenants([view], as_json=as_json, one=True)


@tenants.command("list")
@config_option
@_server_option
@_json_option
def tenants_list(config: Path | None, server: str | None, as_json: bool) -> None:
    """Every tenant in the database, by id (not those of the settings file)."""
    with _backend(config, server) as backend:
        found = backend.tenants()
    _echo_tenants(found, as_json=as_json)


@tenants.command("set")
@config_option
@_server_option
@click.argument("tenant_id", metavar="ID")
@_attr_option
@click.option("--unset", multiple=True, metavar="NAME", help="Remove this attribute.")
@_limit_option("Set a limit, or remove it with NAME=none.")
@_json_option
@click.pass_context
def tenants_set(
    ctx: click.Context,
    *,
    config: Path | None,
    server: str | None,
    tenant_id: str,
    attrs: tuple[str, ...],
    unset: tuple[str, ...],
    limits: tuple[str, ...],
    as_json: bool,
) -> None:
    """Change the tenant ID: the attributes and limits given replace theirs, the others
    stay. A running guard sees the change within auth.cache_seconds."""
    if not (attrs or unset or limits):
        ctx.fail("nothing to change: give --attr, --unset or --limit")
    attributes, caps = _attributes(attrs), _limits(limits, removable=True)
    with _backend(config, server) as backend:
        view = backend.set_tenant(tenant_id, attributes, unset, caps)
    _echo_tenants([view], as_json=as_json, one=True)


# -- guard keys -----------------------------------------------------------------------


@click.group()
def keys() -> None:
    """Create, list and revoke API keys.

    A key is shown once, when made, and kept only as a salted hash, which no command
    prints. Tables are tab-separated under a header."""


@keys.command("create")
@config_option
@_server_option
@click.option(
    "--tenant",
    "tenant_id",
    default=None,
    metavar="ID",
    help="The tenant a client key acts for; without it, a client key acts for no tenant.",
)
@click.option(
    "--role",
    type=click.Choice([role.value for role in Role]),
    default=Role.CLIENT.value,
    show_default=True,
    help="client calls models; admin manages tenants, keys and policies; auditor reads "
    "the audit trail.",
)
@click.option("--name", default="", help="A label for people: who or what holds the key.")
@click.option(
    "--expires",
    default=None,
    metavar="DURATION|DATE",
    help="30d, 12h, 90m from now, or an ISO 8601 date or time (UTC unless it says).",
)
@_limit_option("A limit of this key's own; its tenant's limits apply as well.")
def keys_create(
    *,
    config: Path | None,
    server: str | None,
    tenant_id: str | None,
    role: str,
    name: str,
    expires: str | None,
    limits: tuple[str, ...],
) -> None:
    """Make a key. It alone goes to stdout, this once: KEY=$(guard keys create ...)."""
    expires_at, caps = _expiry(expires, datetime.now(UTC)), _limits(limits)
    with _backend(config, server) as backend:
        view, token = backend.create_key(
            tenant_id=tenant_id, role=role, name=name, expires_at=expires_at, limits=caps
        )
    click.echo(_created_note(view), err=True)
    click.echo(token)


@keys.command("list")
@config_option
@_server_option
@click.option("--tenant", "tenant_id", default=None, metavar="ID", help="Only this tenant's.")
@_json_option
def keys_list(
    config: Path | None, server: str | None, tenant_id: str | None, as_json: bool
) -> None:
    """Keys, oldest first, revoked and expired ones too (not those of the settings file)."""
    with _backend(config, server) as backend:
        views = backend.keys(tenant_id)
    if as_json:
        echo_json(views)
    else:
        _echo_views(_KEY_COLUMNS, _KEY_FIELDS, views)


@keys.command("revoke")
@config_option
@_server_option
@click.argument("key_id", metavar="ID")
def keys_revoke(config: Path | None, server: str | None, key_id: str) -> None:
    """Revoke the key ID for good. It stays listed, so that the audit trail's key ids
    keep their meaning; a running guard refuses it within auth.cache_seconds."""
    with _backend(config, server) as backend:
        view, revoked = backend.revoke_key(key_id)
    if revoked:
        click.echo(f"revoked {key_id}")
    else:
        # Nothing changed, so nothing was recorded.
        click.echo(f"already revoked {key_id} at {view['revoked_at']}")
