"""Client connections stay open while idle for ``server.keep_alive_timeout``: longer
than the clients and load balancers in front keep theirs, so that none of them sends a
request on a connection at the moment guard closes it (a reset, and a POST cannot be
safely sent again)."""

import socket
import time

import httpx

from guard.settings import ServerSettings
from tests.conftest import make_settings
from tests.security.conftest import read_response, status_of

HEALTH = b"GET /healthz HTTP/1.1\r\nHost: guard\r\n\r\n"


def test_an_idle_connection_is_kept_for_the_keep_alive_timeout_then_closed(guard_at, upstream):
    server = guard_at(make_settings(upstream.base_url, server={"keep_alive_timeout": 0.5}))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(HEALTH)
        assert status_of(read_response(sock)) == 200
        time.sleep(0.25)  # idle, but under the timeout: the same connection is served
        sock.sendall(HEALTH)
        assert status_of(read_response(sock)) == 200
        started = time.monotonic()
        assert sock.recv(1) == b""  # then, idle for the timeout, guard closes it
        assert 0.4 < time.monotonic() - started < 3


def test_by_default_guard_keeps_an_idle_connection_longer_than_clients_and_balancers():
    # httpx, and the OpenAI SDKs built on it, drop an idle connection after 5 s; load
    # balancers commonly after 60 s. The side that closes first must be theirs.
    assert ServerSettings().keep_alive_timeout > max(httpx.Limits().keepalive_expiry or 0, 60)
