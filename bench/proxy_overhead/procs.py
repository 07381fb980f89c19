"""Starting, checking and stopping the processes under test: nginx, the SSE mock, guard and
the minimal client forwarders (``clients.py``)."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"
_STOP_GRACE_S = 5.0
_READY_POLL_S = 0.1

# The fixed answer of the mock upstream: a typical small non-streaming chat completion.
MOCK_BODY = (
    '{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,'
    '"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant",'
    '"content":"Hello! How can I help you today?"},"logprobs":null,'
    '"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":9,'
    '"total_tokens":33}}'
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def venv_bin(name: str) -> str:
    """A console script installed next to this interpreter (the project's venv)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(f"bench: {path} not found; install the bench extras into the venv")
    return str(path)


def system_bin(name: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()), None
    )
    if found is None:
        raise SystemExit(f"bench: {name} not found; apt-get install nginx-light wrk")
    return found


@dataclass
class Proc:
    """A child process in its own session, so that it and its children stop together."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    _ps: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self._ps = psutil.Process(self.popen.pid)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU of the process and all its live descendants."""
        total = 0.0
        procs = [self._ps]
        with contextlib.suppress(psutil.Error):
            procs += self._ps.children(recursive=True)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        return total

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=_STOP_GRACE_S)


class Procs:
    """Everything the bench started; ``stop_all`` in a finally block ends it all."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._procs: list[Proc] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=self.workdir,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self._procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self._procs):
            with contextlib.suppress(Exception):
                proc.stop()
        self._procs.clear()


def wait_ready(
    proc: Proc, port: int, path: str, body: bytes, *, expect: bytes | None, timeout_s: float = 30.0
) -> None:
    """Poll with a real POST until it answers 200 (and ``expect``, if given), or fail loudly."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    headers = {"content-type": "application/json"}
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log_tail()}")
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=2.0)
        try:
            conn.request("POST", path, body=body, headers=headers)
            reply = conn.getresponse()
            content = reply.read()
        except (OSError, http.client.HTTPException) as exc:
            last = type(exc).__name__
        else:
            if reply.status == 200 and (expect is None or content == expect):
                return
            last = f"HTTP {reply.status}: {content[:300].decode(errors='replace')}"
        finally:
            conn.close()
        time.sleep(_READY_POLL_S)
    raise RuntimeError(
        f"{proc.name} not ready on port {port} after {timeout_s} s ({last})\n{proc.log_tail()}"
    )


# -- nginx -----------------------------------------------------------------------------------

_NGINX_MAIN = """\
daemon off;
master_process on;
worker_processes 1;
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
{body}
}}
"""

_NGINX_MOCK = """\
    server {{
        listen {host}:{port} reuseport backlog=4096;
        location = /v1/chat/completions {{
            default_type application/json;
            return 200 '{json}';
        }}
        location / {{ return 404; }}
    }}
"""

_NGINX_PROXY = """\
    upstream mock {{
        server {host}:{mock_port};
        keepalive 128;
        keepalive_requests 10000000;
        keepalive_timeout 120s;
    }}
    upstream sse {{
        server {host}:{sse_port};
        keepalive 32;
    }}
    server {{
        listen {host}:{port} reuseport backlog=4096;
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
    server {{
        listen {host}:{stream_port} reuseport backlog=4096;
        location / {{
            proxy_pass http://sse;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
"""


def _nginx_user() -> str:
    # As root, nginx would switch its worker to 'nobody', which cannot use our temp dirs.
    if os.geteuid() != 0:
        return ""
    return "user root root;"


def _nginx_conf(directory: Path, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / sub).mkdir(exist_ok=True)
    conf = directory / "nginx.conf"
    conf.write_text(_NGINX_MAIN.format(user=_nginx_user(), dir=directory, body=body))
    return conf


def start_nginx(procs: Procs, name: str, body: str) -> Proc:
    directory = procs.workdir / name
    conf = _nginx_conf(directory, body)
    nginx = system_bin("nginx")
    check = subprocess.run(
        [
            nginx,
            "-t",
            "-q",
            "-p",
            str(directory),
            "-e",
            str(directory / "error.log"),
            "-c",
            str(conf),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if check.returncode != 0:
        raise RuntimeError(f"nginx config for {name} is invalid:\n{check.stderr}")
    return procs.start(
        name, [nginx, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf)]
    )


def nginx_mock_block(port: int) -> str:
    return _NGINX_MOCK.format(host=LOOPBACK, port=port, json=MOCK_BODY)


def nginx_proxy_block(port: int, stream_port: int, mock_port: int, sse_port: int) -> str:
    return _NGINX_PROXY.format(
        host=LOOPBACK, port=port, stream_port=stream_port, mock_port=mock_port, sse_port=sse_port
    )


# -- guard -----------------------------------------------------------------------------------

GUARD_CONFIG = """\
server: {{host: {host}, port: {port}, log_level: warning}}
upstreams:
  - name: mock
    base_url: http://{host}:{mock_port}
    kind: openai
    pool: {{max_connections: 512}}
  - name: sse
    base_url: http://{host}:{sse_port}
    kind: openai
    pool: {{max_connections: 512}}
models:
  - name: bench-model
    upstream: mock
    licence: {{id: apache-2.0, commercial_use: true}}
  - name: bench-stream
    upstream: sse
    licence: {{id: apache-2.0, commercial_use: true}}
audit: {audit}
policy: {{dir: {policies}, watch: false}}
"""
# The proxy alone; what the audit trail adds is measured by bench.audit, what the
# policies cost by bench.policy, what traces and metrics add by bench.telemetry.
AUDIT_OFF = "{enabled: false}"
TELEMETRY_OFF = "{traces: {exporters: []}, metrics: {enabled: false}}"


def guard_config(
    procs: Procs,
    name: str,
    port: int,
    *,
    mock_port: int,
    sse_port: int,
    audit: str = AUDIT_OFF,
    telemetry: str = TELEMETRY_OFF,
) -> Path:
    """``audit`` and ``telemetry``: YAML flow mappings for those sections; by default both
    off, so that a bench measures one thing."""
    path = procs.workdir / f"{name}.yaml"
    policies = procs.workdir / "no-policies"  # an empty bundle: nothing is scanned
    policies.mkdir(exist_ok=True)
    text = GUARD_CONFIG.format(
        host=LOOPBACK,
        port=port,
        mock_port=mock_port,
        sse_port=sse_port,
        audit=audit,
        policies=policies,
    )
    text += f"telemetry: {telemetry}\n"
    path.write_text(text)
    return path


def start_guard(procs: Procs, name: str, server: str, config: Path, port: int) -> Proc:
    """guard with one worker, on uvicorn (``guard serve``, the default) or granian."""
    env = {"GUARD_CONFIG_FILE": str(config), "PYTHONUNBUFFERED": "1"}
    if server == "uvicorn":
        argv = [
            venv_bin("guard"),
            "serve",
            "--config",
            str(config),
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--workers",
            "1",
        ]
    elif server == "granian":
        argv = [
            venv_bin("granian"),
            "--interface",
            "asgi",
            "--factory",
            "--loop",
            "uvloop",
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-ws",
            "--no-access-log",
            "--log-level",
            "warning",
            "--backlog",
            "4096",
            "guard.app:app_factory",
        ]
    else:
        raise ValueError(server)
    return procs.start(name, argv, env)


# -- minimal client forwarders (clients.py) ---------------------------------------------------

# target name -> factory in bench.proxy_overhead.clients. Only those processes import httpx
# and httpx-aiohttp, so the bench itself runs without them.
CLIENT_FACTORIES = {
    "client-aiohttp": "aiohttp_app",
    "client-httpx": "httpx_app",
    "client-httpx-aiohttp": "httpx_aiohttp_app",
}


def _repo_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def start_client(procs: Procs, name: str, port: int, mock_port: int) -> Proc:
    """One minimal forwarder on uvicorn with one worker, run the way ``guard serve`` runs guard."""
    argv = [
        venv_bin("uvicorn"),
        "--factory",
        f"bench.proxy_overhead.clients:{CLIENT_FACTORIES[name]}",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--workers",
        "1",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--no-server-header",
        "--log-level",
        "warning",
    ]
    env = {
        "BENCH_UPSTREAM_URL": f"http://{LOOPBACK}:{mock_port}",
        "PYTHONPATH": _repo_root(),
        "PYTHONUNBUFFERED": "1",
    }
    return procs.start(name, argv, env)


def start_sse_mock(procs: Procs, port: int, chunks: int, gap_ms: float) -> Proc:
    return procs.start(
        "sse-mock",
        [
            sys.executable,
            "-m",
            "bench.proxy_overhead.sse_mock",
            "--port",
            str(port),
            "--chunks",
            str(chunks),
            "--gap-ms",
            str(gap_ms),
        ],
        {"PYTHONPATH": _repo_root()},
    )
