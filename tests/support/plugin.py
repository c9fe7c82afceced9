"""Run ``dockvol serve`` as a user would (a subprocess of the real CLI) for tests."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str | Path, timeout: float = 30.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = str(path)

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def call(
    sock: str | Path,
    endpoint: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    timeout: float = 30.0,
) -> tuple[int, Any]:
    """POST one request shaped like the engine's (no Content-Type, trailing newline)."""
    if raw is None:
        raw = b"" if body is None else json.dumps(body).encode() + b"\n"
    conn = UnixHTTPConnection(sock, timeout)
    try:
        conn.putrequest("POST", "/" + endpoint, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", "")
        conn.putheader("Accept", "application/vnd.docker.plugins.v1.2+json")
        conn.putheader("Content-Length", str(len(raw)))
        conn.endheaders(raw)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else None
    finally:
        conn.close()


class Plugin:
    """A ``dockvol serve`` process. Use ``Plugin.start(...)``; ``kill()`` is SIGKILL."""

    def __init__(
        self,
        sock: Path,
        root: Path,
        state: Path,
        args: Sequence[str],
        log: Path,
        wrap: Sequence[str] = (),
        cwd: Path | None = None,
    ) -> None:
        self.cwd = cwd
        self.sock, self.root, self.state, self.args, self.log = sock, root, state, list(args), log
        #: A command prefix, e.g. ``engine.enter_args()`` to run the plugin in the engine's mount
        #: namespace (drivers that mount filesystems: the engine must see their mounts).
        self.wrap = list(wrap)
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(
        cls,
        sock: Path,
        root: Path,
        state: Path,
        *extra: str,
        name: str | None = None,
        timeout: float = 20.0,
        env: dict[str, str] | None = None,
        wrap: Sequence[str] = (),
        cwd: Path | None = None,
    ) -> Plugin:
        args = ["--socket", str(sock), "--root", str(root), "--state", str(state), *extra]
        if name:
            args += ["--name", name]
        p = cls(sock, root, state, args, state.parent / f"{sock.stem}.log", wrap, cwd)
        p.launch(timeout, env)
        return p

    def launch(self, timeout: float = 20.0, env: dict[str, str] | None = None) -> None:
        self.state.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.wrap, sys.executable, "-m", "dockvol", "serve", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=self.cwd,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"dockvol serve exited ({self.proc.returncode}):\n{self.output()}"
                )
            try:
                status, _ = call(self.sock, "VolumeDriver.Capabilities", {}, timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)  # polling for readiness
        self.stop()
        raise RuntimeError(f"dockvol serve did not answer within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def call(self, endpoint: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return call(self.sock, endpoint, body, **kw)

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        return rc
