"""The guard arms, each started from ``bench.proxy_overhead``'s config (one uvicorn worker,
telemetry off, an empty policy bundle, the same nginx mock) with its own ``auth``,
``tenants`` and ``limits`` sections, and checked before any load:

  open        auth.required false, no keys, no limits: the baseline
  keys        auth.required true; a settings key (auth.keys, its value in an environment
              variable) of a settings tenant, both with limits that never refuse,
              counted in memory
  redis       as keys, the limits counted in Redis (limits.redis_url)
  open-audit  as open, the audit trail on (SQLite in the temp dir): keys-db's baseline
  keys-db     auth.required true; a key made with ``guard keys create`` in the arm's audit
              database (the key store), of a tenant made there, with the same limits

Every arm's requests carry ``Authorization: Bearer <key>``: open and open-audit get the
settings key, which they do not know and, with auth.required false, let pass unnoticed.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bench.proxy_overhead import load
from bench.proxy_overhead import procs as px
from bench.proxy_overhead.load import PATH, Sample, request_body
from guard.tenancy import keys

OPEN, KEYS, REDIS, OPEN_AUDIT, KEYS_DB = "open", "keys", "redis", "open-audit", "keys-db"
KEY_ENV = "BENCH_AUTH_KEY"  # where the keys and redis arms read their settings key
# Limits that are counted on every request but never refuse one: 10 M requests a minute is
# a GCRA interval of 6 µs, far under what one worker serves. Streams are not sent here.
LIMITS = {"requests_per_minute": 10_000_000, "concurrent_streams": 1000}
_READY_TIMEOUT_S = 60.0
_CLI_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Arm:
    name: str
    baseline: str | None  # the arm its added latency is measured against
    key: Literal["none", "settings", "database"]
    audit: bool = False
    redis: bool = False


ARMS = {
    arm.name: arm
    for arm in (
        Arm(OPEN, None, "none"),
        Arm(KEYS, OPEN, "settings"),
        Arm(REDIS, OPEN, "settings", redis=True),
        # The key store is the audit database, so keys-db records the audit trail, which
        # costs CPU of its own: its baseline records it too.
        Arm(OPEN_AUDIT, OPEN, "none", audit=True),
        Arm(KEYS_DB, OPEN_AUDIT, "database", audit=True),
    )
}
# One round's order: each arm next to its baseline (open between keys and redis). Every
# other round runs it backwards, so each arm runs just before its baseline in half the
# rounds and just after it in the others, and a drift in the machine's speed cancels.
ORDER = (KEYS, OPEN, REDIS, OPEN_AUDIT, KEYS_DB)


@dataclass(frozen=True)
class Ids:
    """New for every run: Redis keeps its counts by key and tenant id, so no count left
    by an earlier run meets this one."""

    key: str
    tenant: str
    token: str  # the settings key's value

    @classmethod
    def new(cls) -> Ids:
        run = secrets.token_hex(4)
        return cls(f"bench-{run}", f"bench-{run}", f"bench-{secrets.token_urlsafe(24)}")


@dataclass(frozen=True)
class Check:
    """One request sent before the load, and what the arm answered."""

    what: str
    status: int
    expected: int


@dataclass
class Target:
    arm: Arm
    port: int
    proc: px.Proc
    token: str  # the key its requests carry
    script: Path  # its wrk script: post.lua with the Authorization header
    checks: list[Check] = field(default_factory=list)
    samples: dict[int, list[Sample]] = field(default_factory=dict)  # by concurrency
    redis_us: dict[int, list[float]] = field(default_factory=dict)  # Redis CPU µs/req
    answered: int = 0  # requests answered 200: wrk's (warm-ups included) and the checks
    slack: int = 0  # requests that may have been in flight when a wrk run stopped

    @property
    def name(self) -> str:
        return self.arm.name


# -- settings ---------------------------------------------------------------------------------


def _audit(arm: Arm, workdir: Path) -> str:
    """As bench.audit's SQLite arm: guard's embedded default, in the temp dir."""
    if not arm.audit:
        return px.AUDIT_OFF
    audit = {
        "enabled": True,
        "database_url": f"sqlite:///{workdir / f'{arm.name}.sqlite3'}",
        "spool_dir": str(workdir / f"{arm.name}-spool"),
        "auto_migrate": True,
    }
    return json.dumps(audit)


def _tenancy(arm: Arm, ids: Ids, redis_url: str) -> str:
    """The arm's auth, tenants and limits sections (JSON is YAML's flow style)."""
    auth: dict[str, object] = {"required": arm.key != "none"}
    tenants: list[dict[str, object]] = []
    if arm.key == "settings":
        key = {"id": ids.key, "key_env": KEY_ENV, "tenant": ids.tenant, "limits": LIMITS}
        auth["keys"] = [key]
        tenants.append({"id": ids.tenant, "limits": LIMITS})
    # refuse: were Redis unreachable, guard would answer 503, which fails the run, instead
    # of serving uncounted requests that would make the arm look cheap.
    limits: dict[str, object] = {"on_store_error": "refuse"}
    if arm.redis:
        limits["redis_url"] = redis_url
    sections = {"auth": auth, "tenants": tenants, "limits": limits}
    return "".join(f"{name}: {json.dumps(value)}\n" for name, value in sections.items())


def _guard_cli(*argv: str) -> str:
    done = subprocess.run(
        [px.venv_bin("guard"), *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=_CLI_TIMEOUT_S,
    )
    if done.returncode != 0:
        raise RuntimeError(f"guard {' '.join(argv[:2])} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def database_key(config: Path, ids: Ids) -> str:
    """A key made as an operator makes one: the database migrated, a tenant and a key
    (both with ``LIMITS``) created by guard's command line; the key as it prints it."""
    limits = [arg for name, n in LIMITS.items() for arg in ("--limit", f"{name}={n}")]
    at = ("--config", str(config))
    _guard_cli("db", "upgrade", *at)
    _guard_cli("tenants", "create", *at, ids.tenant, *limits)
    token = _guard_cli("keys", "create", *at, "--tenant", ids.tenant, "--name", "bench", *limits)
    token = token.strip()
    if keys.parse(token) is None:
        raise RuntimeError("guard keys create printed no key")
    return token


def wrk_script(workdir: Path, name: str, token: str) -> Path:
    """proxy_overhead's post.lua (its body, its summary) with the Authorization header."""
    script = workdir / f"{name}.lua"
    header = f'wrk.headers["Authorization"] = "Bearer {token}"\n'
    script.write_text(load.LUA.read_text() + header)
    return script


# -- starting and checking --------------------------------------------------------------------


def start(procs: px.Procs, redis_url: str) -> list[Target]:
    ids = Ids.new()
    os.environ[KEY_ENV] = ids.token  # the guards inherit it (procs.start passes os.environ)
    mock_port = px.free_port()
    px.start_nginx(procs, "nginx-mock", px.nginx_mock_block(mock_port))
    targets = []
    for arm in ARMS.values():
        port = px.free_port()
        # The stream upstream is never called here; the mock's port stands in for it.
        config = px.guard_config(
            procs,
            arm.name,
            port,
            mock_port=mock_port,
            sse_port=mock_port,
            audit=_audit(arm, procs.workdir),
        )
        with config.open("a") as out:
            out.write(_tenancy(arm, ids, redis_url))
        token = database_key(config, ids) if arm.key == "database" else ids.token
        proc = px.start_guard(procs, arm.name, "uvicorn", config, port)
        script = wrk_script(procs.workdir, arm.name, token)
        targets.append(Target(arm, port, proc, token, script))
    for target in targets:
        _wait_up(target)
        target.checks = check(target)
        target.answered += 1  # the check with its key
    return targets


def _wait_up(target: Target) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not target.proc.alive():
            raise RuntimeError(f"{target.name} exited early:\n{target.proc.log_tail()}")
        conn = http.client.HTTPConnection(px.LOOPBACK, target.port, timeout=2.0)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    raise RuntimeError(f"{target.name} not up after {_READY_TIMEOUT_S} s\n{target.proc.log_tail()}")


def post(port: int, authorization: str | None) -> tuple[int, bytes]:
    """The request wrk sends, once."""
    headers = {"content-type": "application/json"}
    if authorization is not None:
        headers["authorization"] = authorization
    conn = http.client.HTTPConnection(px.LOOPBACK, port, timeout=10.0)
    try:
        conn.request("POST", PATH, body=request_body(), headers=headers)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def _wrong_key(token: str) -> str:
    """For a database key, its id with another secret (the database is read and the key
    refused); for a settings key, another value."""
    parsed = keys.parse(token)
    if parsed is not None:
        return f"{keys.PREFIX}_{parsed[0]}_{'A' * 43}"
    return f"bench-wrong-{secrets.token_urlsafe(24)}"


def check(target: Target) -> list[Check]:
    """Its key must get the mock's answer; where keys are required, no key and a wrong key
    must get 401, so that the arm is known to check them."""
    keyed = target.arm.key != "none"
    refused = 401 if keyed else 200
    cases = (
        ("its key", f"Bearer {target.token}", 200),
        ("no key", None, refused),
        ("a wrong key", f"Bearer {_wrong_key(target.token)}", refused),
    )
    checks = []
    for what, authorization, expected in cases:
        status, body = post(target.port, authorization)
        bad_body = status == 200 and body != px.MOCK_BODY.encode()
        if status != expected or bad_body:
            raise RuntimeError(
                f"{target.name}, {what}: HTTP {status}, expected {expected} "
                f"{'(and the mock body)' if expected == 200 else ''}: {body[:300]!r}\n"
                f"{target.proc.log_tail()}"
            )
        checks.append(Check(what, status, expected))
    return checks
