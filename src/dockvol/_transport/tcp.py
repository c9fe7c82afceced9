"""``serve --tcp``: the app over TCP (mutual TLS unless explicitly plaintext on loopback), plus the
engine's spec file, written once listening and removed on exit."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from .side import bind_tcp, serve_beside
from .tls import TCPPlan, remove_spec, write_spec

log = logging.getLogger("dockvol.tcp")


@contextlib.asynccontextmanager
async def serve_tcp(
    plan: TCPPlan,
    app: Callable[..., Awaitable[None]],
    *,
    name: str,
    spec_dir: Path | None,
) -> AsyncIterator[str]:
    """Serve ``app`` as ``plan`` says while the block runs; yields the spec's ``Addr``.

    ``spec_dir=None`` writes no spec (an engine on another host: ``dockvol tls spec``).
    """
    from . import server

    sock = bind_tcp(plan.host, plan.port, "the engine")
    srv = server.make_server(app, ssl_context=plan.context)
    spec: Path | None = None
    try:
        addr = plan.addr_for(sock.getsockname()[1])
        async with serve_beside(srv, sock, f"TCP listener on {addr}"):
            if spec_dir is not None:
                if plan.context is not None and plan.client is None:
                    log.warning(
                        "no client certificate for the engine is known (own PKI): not writing a "
                        "spec file; create it with 'dockvol tls spec --name %s --addr %s:%d "
                        "--ca CA --cert CERT --key KEY > %s/%s.json'",
                        name, plan.host, sock.getsockname()[1], spec_dir, name,
                    )  # fmt: skip
                else:
                    spec = write_spec(spec_dir, name, addr, plan.client)
            tls_note = "mutual TLS" if plan.context is not None else "PLAINTEXT (loopback only)"
            log.info(
                "serving %s on %s with %s%s",
                name, addr, tls_note, f"; spec {spec}" if spec else "",
            )  # fmt: skip
            yield addr
    finally:
        remove_spec(spec)
        sock.close()
