import socket

import httpx

from tests.conftest import make_settings


def test_healthz_and_readyz(guard, upstream):
    assert httpx.get(f"{guard.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{guard.url}/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["upstreams"]["fake"]["reachable"] is True
    assert body["upstreams"]["fake-ollama"]["status"] == 200
    probed = {r.path for r in upstream.requests}
    assert probed == {"/v1/models", "/api/version"}


def test_readyz_reports_an_unreachable_upstream(guard_at, upstream):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
        settings = make_settings(
            upstream.base_url,
            upstreams=[
                {"name": "fake", "base_url": upstream.base_url},
                {"name": "fake-ollama", "base_url": dead},
            ],
        )
        server = guard_at(settings)
        ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable"
    assert body["upstreams"]["fake"]["reachable"] is True
    assert body["upstreams"]["fake-ollama"] == {
        "reachable": False,
        "error": "The upstream 'fake-ollama' refused the connection",
    }
