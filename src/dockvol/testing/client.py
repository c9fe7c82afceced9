"""A wire client for any volume plugin: one request, shaped exactly as the engine sends it."""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import godecode
from ._http import Address, Connection, RawReply

# Short names accepted by ``dockvol call`` and ``WireClient.call``, case-insensitive.
_SHORT = {
    "activate": "Plugin.Activate",
    "capabilities": "VolumeDriver.Capabilities",
    "caps": "VolumeDriver.Capabilities",
    "create": "VolumeDriver.Create",
    "get": "VolumeDriver.Get",
    "inspect": "VolumeDriver.Get",
    "list": "VolumeDriver.List",
    "ls": "VolumeDriver.List",
    "mount": "VolumeDriver.Mount",
    "unmount": "VolumeDriver.Unmount",
    "umount": "VolumeDriver.Unmount",
    "path": "VolumeDriver.Path",
    "remove": "VolumeDriver.Remove",
    "rm": "VolumeDriver.Remove",
}
ENDPOINTS = tuple(dict.fromkeys(_SHORT.values()))


def resolve_endpoint(name: str) -> str:
    """``get`` -> ``VolumeDriver.Get``; full names (with or without ``/``) pass through."""
    name = name.lstrip("/")
    low = name.lower()
    if low in _SHORT:
        return _SHORT[low]
    for full in ENDPOINTS:
        if full.lower() == low:
            return full
    if "." in name:
        return name
    raise ValueError(
        f"unknown endpoint {name!r}: use one of {', '.join(sorted(_SHORT))} "
        f"or a full name such as VolumeDriver.Get"
    )


def engine_body(endpoint: str, body: Any) -> bytes:
    """The bytes the engine writes: nothing for Activate, else Go's JSON encoding plus newline."""
    if body is None:
        if endpoint == "Plugin.Activate":
            return b""
        body = {}
    # Go's encoder escapes <, > and & and keeps other unicode as UTF-8.
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.encode() + b"\n"


@dataclass
class Reply:
    """A plugin's reply, with helpers that read it as the engine does."""

    endpoint: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    request_body: bytes = b""
    seconds: float = 0.0

    @classmethod
    def from_raw(cls, endpoint: str, raw: RawReply, sent: bytes, seconds: float) -> Reply:
        return cls(
            endpoint,
            raw.status,
            raw.reason,
            raw.headers,
            raw.body,
            raw.request_headers,
            sent,
            seconds,
        )

    @property
    def json(self) -> Any:
        """The body parsed as JSON; raises ``ValueError`` when it is not JSON."""
        return json.loads(self.body)

    def object(self) -> dict[str, Any] | None:
        """The body as a JSON object, or ``None`` when it is anything else."""
        try:
            v = self.json
        except ValueError:
            return None
        return v if isinstance(v, dict) else None

    @property
    def err(self) -> str:
        """The ``Err`` field as the engine reads it ("" when absent or not an object)."""
        obj = self.object()
        v = godecode.field(obj, "Err") if obj is not None else None
        return v if isinstance(v, str) else ""

    def describe(self) -> str:
        """A short text for messages: status and the start of the body."""
        text = self.body[:200].decode("utf-8", "replace")
        more = "..." if len(self.body) > 200 else ""
        return (
            f"HTTP {self.status}, body {text!r}{more}"
            if text
            else f"HTTP {self.status}, empty body"
        )


class WireClient:
    """Talks to one plugin. Each call opens a connection unless given a ``Connection``."""

    def __init__(self, address: Address | str, *, timeout: float = 120.0) -> None:
        self.address = address if isinstance(address, Address) else Address.parse(address)
        self.timeout = timeout

    def connection(self) -> Connection:
        """A keep-alive connection, as the engine holds one."""
        return Connection(self.address, self.timeout)

    def call(
        self,
        endpoint: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        host: str | None = None,
        headers: Sequence[tuple[str, str]] | None = None,
        conn: Connection | None = None,
        timeout: float | None = None,
    ) -> Reply:
        """POST one request. ``raw`` sends those exact bytes instead of encoding ``body``."""
        ep = resolve_endpoint(endpoint)
        data = engine_body(ep, body) if raw is None else raw
        own = conn is None
        c = self.connection() if conn is None else conn
        t0 = time.perf_counter()
        try:
            rr = c.request("/" + ep, data, host=host, headers=headers, timeout=timeout)
        finally:
            if own:
                c.close()
        return Reply.from_raw(ep, rr, data, time.perf_counter() - t0)


def peer_pid(socket_path: str | Path) -> int:
    """The pid of the process listening on a unix socket (SO_PEERCRED; Linux)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(5)
        s.connect(str(socket_path))
        creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    finally:
        s.close()
    pid, _uid, _gid = struct.unpack("3i", creds)
    if pid <= 0:
        raise OSError(f"no process credentials on {socket_path}")
    return int(pid)


def find_plugin(
    name: str,
    sockets_dir: str = "/run/docker/plugins",
    spec_dirs: Sequence[str] = ("/etc/docker/plugins", "/usr/lib/docker/plugins"),
) -> Address:
    """Where the engine would find legacy plugin ``name`` (sockets, then spec files)."""
    for sock in (f"{sockets_dir}/{name}.sock", f"{sockets_dir}/{name}/{name}.sock"):
        if os.path.exists(sock):
            return Address(unix=sock)
    for d in spec_dirs:
        spec = Path(d, f"{name}.spec")
        if spec.exists():
            return Address.parse(spec.read_text().strip())
        js = Path(d, f"{name}.json")
        if js.exists():
            data = json.loads(js.read_text())
            tls = godecode.field(data, "TLSConfig") or {}
            return Address.parse(
                godecode.field(data, "Addr"),
                tls_ca=godecode.field(tls, "CAFile") or None,
                tls_cert=godecode.field(tls, "CertFile") or None,
                tls_key=godecode.field(tls, "KeyFile") or None,
            )
    raise FileNotFoundError(
        f"no plugin {name!r}: no socket in {sockets_dir} and no spec file in "
        f"{' or '.join(spec_dirs)}"
    )
