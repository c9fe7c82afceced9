"""The ASGI application: routes Docker's requests to the volume service.

It is a plain ASGI callable (no framework): routing is a dict lookup, bodies are bounded, every
reply is a JSON object, and no exception ever reaches the wire as a stack trace. Get, List,
Capabilities and Path are answered on the event loop from memory; the service moves blocking
work to threads.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._registry.base import Registry
from .._sdk.driver import Driver
from .._sdk.errors import DockvolError, NotFound
from .._sdk.secrets import SecretStore
from .._service.service import VolumeInfo, VolumeService
from . import protocol as p

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
#: (endpoint, volume name, mount id, seconds, outcome, error message) -> None
Observer = Callable[[str, str, str, float, str, str], None]

MAX_BODY = 1 << 20  # the largest real request (Create with options) is a few KiB
GET_REPLIES = 512  # encoded Get replies kept (the engine Gets a few volumes often)

access_log = logging.getLogger("dockvol.access")
_HEADERS = [(b"content-type", p.CONTENT_TYPE)]


class PluginApp:
    """ASGI app serving one driver. Build it with :func:`create_app`."""

    def __init__(self, service: VolumeService, *, max_body: int = MAX_BODY) -> None:
        self.service = service
        self.max_body = max_body
        self.observers: list[Observer] = [_log_request]
        # Encoded replies, reused while what they were made from is unchanged.
        self._list_reply: tuple[int, bytes] | None = None
        self._get_replies: OrderedDict[str, tuple[VolumeInfo, bytes]] = OrderedDict()
        self._routes: dict[str, Callable[[dict[str, Any]], Awaitable[bytes]]] = {
            p.ACTIVATE: self._activate,
            p.CAPABILITIES: self._capabilities,
            p.CREATE: self._create,
            p.REMOVE: self._remove,
            p.MOUNT: self._mount,
            p.UNMOUNT: self._unmount,
            p.PATH: self._path,
            p.GET: self._get,
            p.LIST: self._list,
            p.RESIZE: self._resize,
            p.STATUS: self._status,
            p.RELEASE: self._release,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                if not self.service.health.ready:  # embedded in another server: start here
                    self.service.driver.setup()
                    self.service.reconcile()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        path: str = scope["path"]
        status, name, mount_id, err, outcome = 200, "", "", "", "ok"
        handler = self._routes.get(path)
        try:
            if handler is None:
                raise p.BadRequest(
                    f"unknown endpoint {path!r}; this is a Docker volume plugin "
                    "(POST /VolumeDriver.Get, /VolumeDriver.List, ...)"
                )
            if scope["method"] != "POST":
                raise p.BadRequest(f"use POST for {path}")
            body = await self._read_body(scope, receive)
            if body is None:
                status = 413
                raise p.BadRequest(f"request body larger than {self.max_body} bytes")
            data = p.decode(body)
            if data:
                name = _str(p.field(data, "Name"))
                mount_id = _str(p.field(data, "ID"))
            reply = await handler(data)
        except (DockvolError, p.BadRequest) as exc:
            err = str(exc)
            reply = p.error(err)
            outcome = _outcome(exc, status)
        except Exception as exc:  # never a stack trace on the wire
            logging.getLogger("dockvol").exception("internal error on %s", path)
            err = f"internal error in the plugin ({type(exc).__name__}); see the plugin log"
            reply = p.error(err)
            outcome = "internal"
        headers = [*_HEADERS, (b"content-length", str(len(reply)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": reply})
        elapsed = time.perf_counter() - start
        for observe in self.observers:
            observe(path, name, mount_id, elapsed, outcome, err)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    if int(v) > self.max_body:
                        return None
                except ValueError:
                    pass
                break
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not msg.get("more_body", False):
                return b"".join(chunks)

    # -- endpoints ------------------------------------------------------------------------------
    async def _activate(self, data: dict[str, Any]) -> bytes:
        return b'{"Implements":["VolumeDriver"]}'

    async def _capabilities(self, data: dict[str, Any]) -> bytes:
        return p.encode({"Capabilities": {"Scope": self.service.scope}})

    async def _create(self, data: dict[str, Any]) -> bytes:
        await self.service.create(p.name_of(data), p.opts_of(data))
        return p.EMPTY

    async def _remove(self, data: dict[str, Any]) -> bytes:
        await self.service.remove(p.name_of(data))
        return p.EMPTY

    async def _mount(self, data: dict[str, Any]) -> bytes:
        mp = await self.service.mount(p.name_of(data), p.mount_id_of(data))
        return p.encode({"Mountpoint": mp})

    async def _unmount(self, data: dict[str, Any]) -> bytes:
        await self.service.unmount(p.name_of(data), p.mount_id_of(data))
        return p.EMPTY

    async def _path(self, data: dict[str, Any]) -> bytes:
        return p.encode({"Mountpoint": self.service.path(p.name_of(data))})

    async def _get(self, data: dict[str, Any]) -> bytes:
        name = p.name_of(data)
        info = self.service.get(name)
        if info is None:
            self._get_replies.pop(name, None)
            raise NotFound(f"volume {name!r} not found")
        cached = self._get_replies.get(name)
        if cached is not None and cached[0] is info:  # unchanged, and no per-Get status fields
            self._get_replies.move_to_end(name)
            return cached[1]
        reply = p.encode({"Volume": _volume_reply(info)})
        self._get_replies[name] = (info, reply)
        if len(self._get_replies) > GET_REPLIES:
            self._get_replies.popitem(last=False)
        return reply

    async def _list(self, data: dict[str, Any]) -> bytes:
        # `docker volume ls` and engine start ask for every volume: with thousands, building
        # the reply is the cost, so it is kept until any volume changes.
        gen = self.service.generation
        if self._list_reply is None or self._list_reply[0] != gen:
            vols = [
                {"Name": v.name, "Mountpoint": v.mountpoint} if v.mountpoint else {"Name": v.name}
                for v in self.service.list_volumes()
            ]
            self._list_reply = (gen, p.encode({"Volumes": vols}))
        return self._list_reply[1]

    async def _resize(self, data: dict[str, Any]) -> bytes:
        size = p.field(data, "Size")
        if not isinstance(size, str):
            raise p.BadRequest('the request needs "Size": a string like "10G"')
        new = await self.service.resize(p.name_of(data), size)
        return p.encode({"Size": new})

    async def _release(self, data: dict[str, Any]) -> bytes:
        ids = p.field(data, "IDs")
        if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
            raise p.BadRequest('"IDs" must be a list of mount ID strings (or absent: all of them)')
        released = await self.service.release(p.name_of(data), ids)
        return p.encode({"Released": released})

    async def _status(self, data: dict[str, Any]) -> bytes:
        return p.encode(self.service.summary())


def _volume_reply(info: VolumeInfo) -> dict[str, Any]:
    """Docker's Volume object: Status carries dockvol's view (mounts, options, driver fields)."""
    out: dict[str, Any] = {"Name": info.name, "CreatedAt": _rfc3339(info.created_at)}
    if info.mountpoint:
        out["Mountpoint"] = info.mountpoint
    out["Status"] = {
        "mounts": info.mounts,
        "mount_ids": list(info.mount_ids),
        "options": dict(info.options),
        **info.status,
    }
    return out


def _rfc3339(t: datetime) -> str:
    # The engine parses CreatedAt as RFC 3339; an empty or other format breaks `inspect`.
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _outcome(exc: Exception, status: int) -> str:
    """The outcome label of a refused request, for logs and metrics."""
    if isinstance(exc, NotFound):
        return "not_found"
    if isinstance(exc, p.BadRequest):
        return "too_large" if status == 413 else "bad_request"
    return "error"


def _str(v: object) -> str:
    return v if isinstance(v, str) else ""


def _log_request(
    endpoint: str, name: str, mount_id: str, seconds: float, outcome: str, err: str
) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    access_log.info(
        "%s volume=%r id=%s %.3fms %s%s",
        endpoint.lstrip("/"),
        name,
        mount_id[:12],
        seconds * 1000,
        outcome,
        f": {err}" if err else "",
        extra={
            "endpoint": endpoint.lstrip("/"),
            "volume": name,
            "mount_id": mount_id,
            "duration_ms": round(seconds * 1000, 3),
            "outcome": outcome,
            "error": err,
        },
    )


def create_app(
    driver: Driver,
    *,
    registry: Registry | None = None,
    state_dir: Path | None = None,
    secrets_dir: Path | None = None,
) -> PluginApp:
    """An ASGI app serving ``driver``: embed it in any ASGI server.

    State is kept in ``registry``, or in a SQLite registry under ``state_dir``. The app
    reconciles the registry with the driver at ASGI startup unless that was done already.
    """
    if registry is None:
        if state_dir is None:
            raise ValueError("give create_app a registry or a state_dir for its SQLite registry")
        from .._registry.sqlite import SqliteRegistry

        registry = SqliteRegistry(state_dir)
    service = VolumeService(driver, registry, secrets=SecretStore(secrets_dir))
    return PluginApp(service)
