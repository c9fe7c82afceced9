"""dockvol's own requests to a running plugin (status, resize, release), via the wire client."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def post(sock: str | Path, endpoint: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    """POST ``body`` to ``endpoint`` over the plugin's unix socket; the reply as a JSON object.

    A reply that is not one becomes ``{"Err": ...}``; a connection failure raises ``OSError``.
    """
    from dockvol.testing.client import WireClient

    reply = WireClient(str(sock), timeout=timeout).call(endpoint, body)
    obj = reply.object()
    if obj is None:
        return {
            "Err": f"the plugin answered HTTP {reply.status} with a body that is not a JSON object"
        }
    if reply.status != 200 and not obj.get("Err"):
        obj["Err"] = f"the plugin answered HTTP {reply.status}"
    return obj
