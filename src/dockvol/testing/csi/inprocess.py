"""Serve a dockvol ``Driver`` over CSI in this process, on a unix socket, for the CSI kit.

The kit still talks to it only through gRPC on the socket; this module builds what
``dockvol serve --csi-endpoint`` builds (a volume service over a sqlite registry, reconciled)
and runs dockvol's CSI server on an event loop of its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from ..inprocess import DriverFactory


class InProcessCsi:
    """``driver`` served over CSI at ``directory/csi.sock``; volumes in ``directory/root``,
    state in ``directory/state``."""

    def __init__(
        self,
        driver: DriverFactory,
        directory: Path,
        node: str = "dvcsi-node",
        timeout: float = 30.0,
    ) -> None:
        self.factory = driver
        self.dir = Path(directory)
        self.node = node
        self.timeout = timeout
        self.sock = self.dir / "csi.sock"
        if len(str(self.sock)) > 100:  # unix socket paths are limited to 107 bytes
            self.sock = Path(tempfile.mkdtemp(prefix="dvcsi", dir="/tmp")) / "csi.sock"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def endpoint(self) -> str:
        return f"unix://{self.sock}"

    def _driver(self) -> Any:
        from dockvol._sdk.context import HostContext
        from dockvol._sdk.driver import Driver

        root, state = self.dir / "root", self.dir / "state"
        factory: Any = self.factory
        if isinstance(factory, type) and issubclass(factory, Driver):
            context = HostContext(plugin="dvcsi", node=self.node, local_dir=state)
            return factory(root, context)
        return self.factory(root)

    def start(self) -> InProcessCsi:
        from dockvol._registry.sqlite import SqliteRegistry
        from dockvol._service.service import VolumeService

        (self.dir / "root").mkdir(parents=True, exist_ok=True)
        (self.dir / "state").mkdir(parents=True, exist_ok=True)
        driver = self._driver()
        setup = getattr(driver, "setup", None)
        if callable(setup):
            setup()
        service = VolumeService(driver, SqliteRegistry(self.dir / "state"))
        service.reconcile()
        ready = threading.Event()

        async def main() -> None:
            from dockvol._csi.server import serve_csi

            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                async with serve_csi(service, self.endpoint, node_id=self.node, name="dvcsi.test"):
                    ready.set()
                    await self._stop.wait()
            except BaseException as e:
                self._error = e
                raise
            finally:
                ready.set()
                service.close()

        self._thread = threading.Thread(
            target=lambda: asyncio.run(main()), name="dockvol-csi-inprocess", daemon=True
        )
        self._thread.start()
        if not ready.wait(self.timeout) or self._error is not None:
            raise RuntimeError(f"the in-process CSI server did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(self.timeout)
        self._loop = self._stop = self._thread = None
        if self.sock.parent != self.dir:
            shutil.rmtree(self.sock.parent, ignore_errors=True)

    def __enter__(self) -> InProcessCsi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
