"""A tiny blocking client for the few Docker engine API calls the healer needs.

Only a unix socket (``unix:///var/run/docker.sock``): the engine's API gives full control of the
host, so the plugin never offers to reach it over a network. Stdlib only; each call opens its
own connection (a few per minute, off the request path). Paths carry no API version prefix: the
engine answers unversioned paths with its own version, and the fields read here are the same on
every engine this project supports (20.10 and 26).
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit


class EngineUnavailable(Exception):
    """The engine's API did not answer (or answered with an error)."""


class BadDockerHost(OSError):
    """``--docker-host`` is not usable (an OSError: serve refuses to start with the message)."""


def parse_docker_host(url: str) -> str:
    """``unix:///path`` -> ``/path``; anything else is refused with what to use instead."""
    parts = urlsplit(url)
    if parts.scheme != "unix" or not parts.path or parts.netloc:
        raise BadDockerHost(
            f"--docker-host {url!r}: give the engine's unix socket, e.g. "
            "unix:///var/run/docker.sock (TCP is not supported)"
        )
    return parts.path


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self._path)
        except OSError:
            s.close()
            raise
        self.sock = s


@dataclass(frozen=True, slots=True)
class Container:
    id: str
    name: str
    state: str  # created, running, paused, restarting, removing, exited, dead
    volumes: tuple[str, ...] = ()  # names of the named volumes it mounts


class DockerAPI:
    def __init__(self, socket_path: str, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _get(self, path: str) -> Any:
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            raw = r.read()
        except (OSError, http.client.HTTPException) as exc:
            raise EngineUnavailable(f"engine at {self.socket_path}: {exc}") from None
        finally:
            conn.close()
        if r.status != 200:
            raise EngineUnavailable(f"engine GET {path}: HTTP {r.status}: {raw[:200]!r}")
        try:
            return json.loads(raw) if raw.strip().startswith((b"{", b"[")) else raw.decode()
        except ValueError:
            raise EngineUnavailable(f"engine GET {path}: not JSON: {raw[:200]!r}") from None

    def ping(self) -> bool:
        try:
            return bool(self._get("/_ping") == "OK")
        except EngineUnavailable:
            return False

    def containers(self) -> list[Container]:
        """Every container, in any state, with the volumes it mounts (one request)."""
        return self._list("/containers/json?all=1")

    def containers_using(self, volume: str) -> list[Container]:
        """Every container (any state) that mounts ``volume``."""
        filters = quote(json.dumps({"volume": [volume]}), safe="")
        return self._list(f"/containers/json?all=1&filters={filters}")

    def _list(self, path: str) -> list[Container]:
        reply = self._get(path)
        if not isinstance(reply, list):
            raise EngineUnavailable(f"engine /containers/json: unexpected reply {reply!r:.200}")
        return [_container(c) for c in reply if isinstance(c, dict)]


def _container(c: dict[str, Any]) -> Container:
    names: Sequence[str] = c.get("Names") or []
    return Container(
        id=str(c.get("Id", "")),
        name=str(names[0]).lstrip("/") if names else "",
        state=str(c.get("State", "")).lower(),
        volumes=tuple(
            str(m["Name"])
            for m in c.get("Mounts") or []
            if isinstance(m, dict) and m.get("Type") == "volume" and m.get("Name")
        ),
    )
