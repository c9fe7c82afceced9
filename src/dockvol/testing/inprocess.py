"""Serve a dockvol ``Driver`` in this process on a unix socket, so the kit can test it.

The kit still talks to it only through the socket; this module is the one place that uses
dockvol's public server API (``dockvol.create_app``), served by dockvol's own HTTP server.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from .client import WireClient
from .faults import wait_ready
from .suite import Faults

#: A Driver class or any callable that builds a driver from its root directory.
DriverFactory = Callable[[Path], Any]


class InProcessPlugin:
    """``driver`` served at ``directory/plugin.sock``, state in ``directory/state``.

    ``kill()`` stops serving without a graceful drain and drops the driver; ``restart()``
    builds a fresh driver and app over the same state, as a restarted process would. It is an
    emulation: calls in flight are answered with errors rather than cut off, and driver work
    already running in threads finishes after the "kill". A real crash (``kill -9`` of a
    ``dockvol serve`` process, ``dockvol conformance --destructive``) is the stronger test.
    """

    def __init__(self, driver: DriverFactory, directory: Path, timeout: float = 30.0) -> None:
        self.factory = driver
        self.dir = Path(directory)
        self.sock = self.dir / "plugin.sock"
        if len(str(self.sock)) > 100:  # unix socket paths are limited to 107 bytes
            self.sock = Path(tempfile.mkdtemp(prefix="dvc", dir="/tmp")) / "plugin.sock"
        self.timeout = timeout
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def client(self) -> WireClient:
        return WireClient(str(self.sock))

    def start(self) -> InProcessPlugin:
        import dockvol
        from dockvol._transport import server as http

        create_app = cast(Callable[..., Any], dockvol.create_app)
        (self.dir / "root").mkdir(parents=True, exist_ok=True)
        (self.dir / "state").mkdir(parents=True, exist_ok=True)
        driver = self.factory(self.dir / "root")
        # As `dockvol serve` does before serving (create_app leaves it to the embedder).
        setup = getattr(driver, "setup", None)
        if callable(setup):
            setup()
        app = create_app(driver, state_dir=self.dir / "state")
        self.sock.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.sock))
        listener.listen(128)
        listener.setblocking(False)
        # Lifespan on: the app reconciles at startup, as under any ASGI server. Idle
        # connections stay open (the engine expects that); no signal handlers (not our thread).
        server = http.HTTPServer(app, lifespan=True)
        self._server = server

        def serve() -> None:
            try:
                asyncio.run(server.serve([listener]))
            finally:
                listener.close()

        self._thread = threading.Thread(target=serve, name="dockvol-inprocess", daemon=True)
        self._thread.start()
        wait_ready(self.client, self.timeout)
        return self

    def _halt(self, force: bool) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.stop_threadsafe(force=force)
        self._thread.join(self.timeout)
        self._server = self._thread = None

    def kill(self) -> None:
        self._halt(force=True)

    def restart(self) -> None:
        self.start()

    def stop(self) -> None:
        self._halt(force=False)
        self.sock.unlink(missing_ok=True)
        if self.sock.parent != self.dir:
            shutil.rmtree(self.sock.parent, ignore_errors=True)

    def faults(self) -> Faults:
        return Faults(kill=self.kill, restart=self.restart)

    def __enter__(self) -> InProcessPlugin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
