"""Small helpers shared by the engine tests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.support.engine import BUSYBOX_IMAGE, Engine

T = TypeVar("T")


def inspect(engine: Engine, volume: str) -> dict[str, Any]:
    out = json.loads(engine.docker("volume", "inspect", volume).stdout)
    assert len(out) == 1, out
    return out[0]  # type: ignore[no-any-return]


def status(engine: Engine, volume: str) -> dict[str, Any]:
    st = inspect(engine, volume)["Status"]
    assert isinstance(st, dict), st
    return st


def volume_names(engine: Engine, driver: str = "dockvol") -> list[str]:
    out = engine.docker(
        "volume", "ls", "--filter", f"driver={driver}", "--format", "{{json .}}"
    ).stdout
    return [json.loads(line)["Name"] for line in out.splitlines() if line.strip()]


def run_detached(
    engine: Engine,
    containers: list[str],
    name: str,
    volume: str,
    target: str = "/data",
    extra: tuple[str, ...] = (),
) -> str:
    """A running container holding ``volume`` at ``target`` (``sleep``, no network)."""
    containers.append(name)
    engine.docker(
        "run", "-d", "--name", name, "--network", "none", "-v", f"{volume}:{target}",
        *extra, BUSYBOX_IMAGE, "sleep", "600",
    )  # fmt: skip
    return name


def run_once(engine: Engine, volume: str, script: str, target: str = "/data") -> str:
    """Run ``sh -c script`` in a throwaway container with ``volume`` mounted; its stdout."""
    return engine.docker(
        "run", "--rm", "--network", "none", "-v", f"{volume}:{target}",
        BUSYBOX_IMAGE, "sh", "-c", script,
    ).stdout  # fmt: skip


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    """Poll ``probe`` until it returns something truthy (a condition, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def tree(top: Path) -> set[tuple[str, str]]:
    """Every path below ``top`` (relative) with its kind, without following symlinks."""
    out: set[tuple[str, str]] = set()
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            kind = "link" if p.is_symlink() else "dir" if p.is_dir() else "file"
            out.add((str(p.relative_to(top)), kind))
    return out


class RequestSpy:
    """A unix socket the engine takes for a plugin, forwarding every byte to the real plugin's
    socket and keeping what the engine sent: proof of which requests reached the plugin."""

    def __init__(self, listen: Path, target: Path) -> None:
        self.listen, self.target = listen, target
        self._sent: list[bytearray] = []
        self._lock = threading.Lock()
        self._srv = socket.socket(socket.AF_UNIX)
        self._srv.bind(str(listen))
        self._srv.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                engine_side, _ = self._srv.accept()
            except OSError:
                return
            plugin_side = socket.socket(socket.AF_UNIX)
            plugin_side.connect(str(self.target))
            seen = bytearray()
            with self._lock:
                self._sent.append(seen)
            threading.Thread(target=self._pipe, args=(engine_side, plugin_side, seen)).start()
            threading.Thread(target=self._pipe, args=(plugin_side, engine_side, None)).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, keep: bytearray | None) -> None:
        try:
            while data := src.recv(65536):
                if keep is not None:
                    keep += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def requests(self) -> list[tuple[str, dict[str, Any]]]:
        """``(endpoint, body)`` of every request the engine sent so far, in order per
        connection."""
        with self._lock:
            raw = [bytes(b) for b in self._sent]
        out: list[tuple[str, dict[str, Any]]] = []
        for stream in raw:
            for m in re.finditer(rb"POST /([\w.]+) HTTP/1.1\r\n(.*?)\r\n\r\n", stream, re.S):
                length = re.search(rb"(?i)\r\nContent-Length: *(\d+)", b"\r\n" + m[2])
                body = stream[m.end() : m.end() + int(length[1])] if length else b""
                out.append((m[1].decode(), json.loads(body) if body.strip() else {}))
        return out

    def clear(self) -> None:
        with self._lock:
            for b in self._sent:
                b.clear()

    def close(self) -> None:
        self._srv.close()
        self.listen.unlink(missing_ok=True)
