"""Reliability of the audit trail under the failures it exists for: the database
stopped mid-load, the process killed while events wait in the spool, and a flood of
bad requests. Each one counts events against requests exactly."""

import asyncio
import collections
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import make_settings
from tests.fakes.audit import stored, wait_until
from tests.fakes.guard_server import free_port
from tests.fakes.postgres import cluster, pg_running
from tests.fakes.tcp_relay import TcpRelay

pytestmark = pytest.mark.slow


@pytest.mark.timeout(180)
def test_postgres_stopped_mid_load_loses_nothing(guard_at, upstream, pg_url):
    audit = {"database_url": pg_url, "retry_interval": 0.2}
    server = guard_at(make_settings(upstream.base_url, audit=audit))
    recorder = server.app.state.recorder
    statuses = []
    stop = threading.Event()

    def load():
        body = {"model": "m1", "messages": [{"role": "user", "content": "hello"}]}
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                r = client.post(f"{server.url}/v1/chat/completions", json=body)
                statuses.append(r.status_code)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        assert wait_until(lambda: len(statuses) > 100, 30)
        cluster("stop")
        assert wait_until(lambda: not recorder.db_up, 30)
        spooled_before = recorder.stats.spooled
        assert wait_until(lambda: recorder.stats.spooled > spooled_before + 50, 30)
    finally:
        if not pg_running():
            cluster("start")
    assert wait_until(lambda: recorder.db_up and recorder.stats.replayed > 0, 60)
    time.sleep(0.5)
    stop.set()
    worker.join()
    assert recorder.flush(timeout=60)
    counts, reports = stored(pg_url)
    assert sum(counts.values()) == len(statuses)
    assert counts == collections.Counter(statuses)
    assert [r.problem for r in reports] == [None]
    assert recorder.stats.lost == 0


def _serve(tmp_path, env):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "guard", "serve", "--port", str(port)],
        env={**os.environ, **env},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def up():
        assert proc.poll() is None, "guard exited"
        try:
            return httpx.get(f"{url}/healthz").status_code == 200
        except httpx.TransportError:
            return False

    assert wait_until(up, 30)
    return proc, url


@pytest.mark.timeout(120)
def test_sigkill_while_the_spool_holds_events_replays_them_after_restart(
    upstream, pg_url, tmp_path
):
    with TcpRelay(5432) as relay:
        env = {
            "GUARD_UPSTREAMS": json.dumps([{"name": "local", "base_url": upstream.base_url}]),
            "GUARD_AUDIT__DATABASE_URL": pg_url.replace(":5432/", f":{relay.port}/"),
            "GUARD_AUDIT__SPOOL_DIR": str(tmp_path / "spool"),
            "GUARD_AUDIT__RETRY_INTERVAL": "0.2",
        }
        body = {"model": "qwen2.5-0.5b-instruct", "messages": [{"role": "user", "content": "hi"}]}
        first, url = _serve(tmp_path, env)
        try:
            for _ in range(5):
                assert httpx.post(f"{url}/v1/chat/completions", json=body).status_code == 200
            assert wait_until(
                # five exchanges, and the policy bundle put in force at start
                lambda: httpx.get(f"{url}/readyz").json()["audit"]["written"] == 6,
                10,
            )
            relay.cut()
            for _ in range(30):
                assert httpx.post(f"{url}/v1/chat/completions", json=body).status_code == 200

            def all_spooled():
                audit = httpx.get(f"{url}/readyz").json()["audit"]
                return audit["spooled"] == 30 and audit["queued"] == 0

            assert wait_until(all_spooled, 20)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        assert stored(pg_url)[0].total() == 5
        relay.restore()
        second, url = _serve(tmp_path, env)
        try:
            assert wait_until(lambda: stored(pg_url)[0].total() == 35, 30)
            assert httpx.get(f"{url}/readyz").json()["audit"]["replayed"] == 30
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
    counts, reports = stored(pg_url)
    assert counts == {200: 35}
    assert [r.problem for r in reports] == [None, None]
    # the first process's chain: its bundle load and 35 exchanges; the second's: its load
    assert sorted(r.checked for r in reports) == [1, 36]


def _bad_request(rng):
    """A request body and route that guard must refuse (or serve) without losing track."""
    route = rng.choice(["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/api/chat"])
    hi = [{"role": "user", "content": "hi"}]

    def body(**fields):
        return json.dumps({"model": "m1", **fields}).encode()

    choices = [
        lambda: b"",
        lambda: b"{",
        lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))),
        lambda: b'{"model": "m1", "messages": "\xff\xfe"}',
        lambda: b"[" * 5000 + b"]" * 5000,
        lambda: json.dumps(rng.choice([[], 1, "s", None, True])).encode(),
        lambda: json.dumps({"model": rng.choice([None, 1, [], "nope", "m1" * 300])}).encode(),
        lambda: body(messages=rng.choice([1, "x", [1], [{"content": 2}]])),
        lambda: body(prompt=[1, 2, 3], input=[[1, 2]]),
        lambda: body(messages=hi, stream="yes"),
        lambda: body(messages=hi, x="y" * 5000),
        lambda: body(messages=hi, n=10**400),
        lambda: (
            b'{"model": "m1", "model": "olm", "messages": [{"role": "user", '
            b'"content": "\\u0000\\ud800"}]}'
        ),
        lambda: body(messages=hi, prompt="p", input="i"),
    ]
    return route, rng.choice(choices)()


@pytest.mark.timeout(300)
def test_ten_thousand_bad_requests_make_exactly_ten_thousand_events(guard_at, upstream, pg_url):
    audit = {"database_url": pg_url}
    server = guard_at(
        make_settings(upstream.base_url, server={"max_body_bytes": 4096}, audit=audit)
    )
    rng = random.Random(20261128)  # noqa: S311  # reproducible inputs, not secrets
    requests = [_bad_request(rng) for _ in range(10_000)]

    async def send_all():
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:
            gate = asyncio.Semaphore(32)

            async def one(route, body):
                async with gate:
                    r = await client.post(route, content=body)
                    return r.status_code

            return await asyncio.gather(*(one(route, body) for route, body in requests))

    statuses = asyncio.run(send_all())
    assert 500 not in statuses
    assert server.app.state.recorder.flush(timeout=60)
    counts, reports = stored(pg_url)
    assert counts.total() == 10_000
    assert counts == collections.Counter(statuses)
    assert [r.problem for r in reports] == [None]
