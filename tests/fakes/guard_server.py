"""guard's real app on a real uvicorn server, on a loopback port, in a thread of its own."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from typing import Any

import uvicorn
from litestar import Litestar

from guard.app import create_app
from guard.cli import server_options
from guard.settings import ServerSettings, Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GuardServer:
    """``app``: an app to serve again (one a server served and stopped), instead of a
    new one made from ``settings``."""

    def __init__(
        self, settings: Settings | None = None, *, app: Litestar | None = None, **app_kwargs: Any
    ) -> None:
        if app is None:
            if settings is None:
                raise TypeError("GuardServer takes settings or an app")
            app = create_app(settings, **app_kwargs)
        self.port = free_port()
        self.app = app
        # Served as `guard serve` serves it, but on a free loopback port, quietly.
        options = server_options(settings.server if settings is not None else ServerSettings())
        options.update(host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        config = uvicorn.Config(self.app, loop="asyncio", lifespan="on", **options)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        # uvicorn exits when the app's startup fails; __enter__ says so.
        with contextlib.suppress(SystemExit):
            asyncio.run(self._server.serve())

    def __enter__(self) -> GuardServer:
        self._thread.start()
        # The first start in a process imports Presidio and the built-in classifier:
        # seconds, more on a busy host.
        deadline = time.monotonic() + 60
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.__exit__()  # a server still starting must not outlive the test
                raise RuntimeError("guard did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
