"""Where the CSI server listens: ``unix:///path/csi.sock`` or a bare path (``CSI_ENDPOINT``)."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "CSI_ENDPOINT"
#: Unix socket paths are limited to 107 bytes by the kernel (sun_path).
MAX_SOCKET_PATH = 107


class EndpointError(OSError):
    """The endpoint cannot be listened on (an OSError: serve reports it like an address in use)."""


def parse_endpoint(text: str | None) -> Path:
    """The socket path of ``text`` (or of ``$CSI_ENDPOINT`` when ``text`` is empty)."""
    value = text or os.environ.get(ENV, "")
    if not value:
        raise EndpointError(
            f"no CSI endpoint: give --csi-endpoint unix:///path/csi.sock or set {ENV}"
        )
    if value.startswith("unix://"):
        path = value.removeprefix("unix://")
    elif "://" in value:
        raise EndpointError(
            f"CSI endpoint {value!r}: only unix sockets are served; use unix:///path/csi.sock"
        )
    else:
        path = value
    if not path.startswith("/"):
        raise EndpointError(
            f"CSI endpoint {value!r}: the socket path must be absolute, like unix:///run/csi/csi.sock"
        )
    if len(path.encode()) > MAX_SOCKET_PATH:
        raise EndpointError(
            f"CSI endpoint {value!r}: the socket path is longer than {MAX_SOCKET_PATH} bytes"
        )
    return Path(path)
