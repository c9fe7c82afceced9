"""Serving CSI on a unix socket beside (or instead of) the Docker plugin socket.

``dockvol serve --csi-endpoint unix:///path/csi.sock`` enters :func:`serve_csi` as one of its
side servers: the gRPC server runs on serve's own event loop, over the same volume service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from .._service.service import VolumeService
from . import csi_pb2_grpc as pb_grpc
from .access import Access
from .capacity import CapacityRecords
from .controller import Controller
from .endpoint import parse_endpoint
from .identity import Identity
from .node import Node, restore_binds
from .plugin import CsiPlugin
from .secrets import RequestSecrets

log = logging.getLogger("dockvol.csi")
#: Seconds in-flight calls get to finish at stop.
GRACE = 10.0


def make_plugin(service: VolumeService, node_id: str = "", name: str = "") -> CsiPlugin:
    """The shared state of the CSI services. Makes the service's secret store one that also
    sees the secrets a CSI request carries (never stored)."""
    driver = service.driver
    node = node_id or driver.context.node or os.uname().nodename
    if not isinstance(service.secrets, RequestSecrets):
        service.secrets = RequestSecrets(service.secrets)
    return CsiPlugin(
        service=service,
        name=name or driver.context.plugin or "dockvol",
        node_id=node,
        access=Access(driver, node),
        secrets=service.secrets,
        capacities=CapacityRecords(driver.context.local_dir),
    )


@contextlib.asynccontextmanager
async def serve_csi(
    service: VolumeService,
    endpoint: str | None = None,
    *,
    node_id: str = "",
    name: str = "",
) -> AsyncIterator[Path]:
    """Serve CSI Identity, Controller and Node on ``endpoint`` (``unix:///path`` or a bare path;
    ``$CSI_ENDPOINT`` when empty) while the context is entered; yields the socket path.

    Call it after ``service.reconcile()``: staged and published paths whose mounts are gone are
    bound again first, then Probe answers ready."""
    path = parse_endpoint(endpoint)
    plugin = make_plugin(service, node_id, name)
    problems = await asyncio.to_thread(restore_binds, plugin)
    for p in problems:
        log.warning("CSI restore: %s", p)
    service.health.problems.extend(problems)
    server = grpc.aio.server()
    pb_grpc.add_IdentityServicer_to_server(Identity(plugin), server)  # type: ignore[no-untyped-call]
    pb_grpc.add_ControllerServicer_to_server(Controller(plugin), server)  # type: ignore[no-untyped-call]
    pb_grpc.add_NodeServicer_to_server(Node(plugin), server)  # type: ignore[no-untyped-call]
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a socket left by a killed plugin: nobody listens on it
    if server.add_insecure_port(f"unix://{path}") == 0:
        raise OSError(f"cannot listen on CSI endpoint {path}")
    await server.start()
    log.info("serving CSI as %r on %s (node %s)", plugin.name, path, plugin.node_id)
    try:
        yield path
    finally:
        await server.stop(GRACE)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        log.info("CSI endpoint %s closed", path)


def run_csi(
    service: VolumeService, endpoint: str | None = None, *, node_id: str = "", name: str = ""
) -> None:
    """Serve CSI alone until SIGTERM or SIGINT (blocking): for a process that speaks only CSI."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with serve_csi(service, endpoint, node_id=node_id, name=name):
            await stop.wait()

    asyncio.run(main())
