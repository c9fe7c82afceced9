"""Host-service mode: socket activation (LISTEN_FDS) and readiness (sd_notify), through the real
``dockvol serve`` and through the helpers, plus the shipped unit files."""

from __future__ import annotations

import configparser
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockvol._transport import systemd
from tests.support.plugin import call

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "packaging" / "systemd"


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # Unix socket paths are limited to 107 bytes: pytest's tmp_path can be longer.
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="dvsd", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _receive(
    sock: socket.socket, want: str, deadline: float, proc: subprocess.Popen[bytes]
) -> list[str]:
    """Notifications until ``want`` arrives, the deadline passes or the process dies."""
    got: list[str] = []
    while want not in got and time.monotonic() < deadline:
        sock.settimeout(0.2)
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            if proc.poll() is not None:
                break
    return got


def test_serve_answers_on_inherited_fd3_and_notifies_ready_and_stopping(short_tmp: Path) -> None:
    path = short_tmp / "act.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    notify_path = short_tmp / "notify"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    fd = listener.fileno()

    def as_fd3() -> None:
        os.dup2(fd, 3)  # dup2 clears close-on-exec: fd 3 reaches dockvol

    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKVOL_")}
    env.update(LISTEN_FDS="1", NOTIFY_SOCKET=str(notify_path))
    log = open(short_tmp / "serve.log", "wb")  # noqa: SIM115 (closed in finally)
    # LISTEN_PID must be the pid of dockvol itself: sh sets it and execs (same pid).
    proc = subprocess.Popen(
        [
            "sh",
            "-c",
            'LISTEN_PID=$$ exec "$0" -m dockvol serve "$@"',
            sys.executable,
            "--root",
            str(short_tmp / "root"),
            "--state",
            str(short_tmp / "state"),
            "--socket",
            str(short_tmp / "unused.sock"),
        ],
        env=env,
        preexec_fn=as_fd3,
        pass_fds=(3,),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    listener.close()  # dockvol holds the only copy now
    try:
        got = _receive(notify, "READY=1", time.monotonic() + 30, proc)
        assert "READY=1" in got, (got, (short_tmp / "serve.log").read_text())
        status, body = call(path, "VolumeDriver.Capabilities", {})
        assert (status, body) == (200, {"Capabilities": {"Scope": "local"}})
        status, body = call(path, "VolumeDriver.Create", {"Name": "sa", "Opts": None})
        assert (status, body) == (200, {})
        # It served the inherited socket and never bound its own.
        assert not (short_tmp / "unused.sock").exists()
        proc.send_signal(signal.SIGTERM)
        got = _receive(notify, "STOPPING=1", time.monotonic() + 30, proc)
        assert "STOPPING=1" in got
        assert proc.wait(30) == 0
        # systemd owns the socket file: dockvol leaves it for the next activation.
        assert path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
        log.close()


def test_inherited_socket_none_without_listen_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    monkeypatch.delenv("LISTEN_PID", raising=False)
    assert systemd.inherited_socket() is None


def test_inherited_socket_ignores_another_process_fds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    assert systemd.inherited_socket() is None
    # The variables are consumed, so children never see them.
    assert "LISTEN_FDS" not in os.environ and "LISTEN_PID" not in os.environ


def test_inherited_socket_refuses_several_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_FDS", "2")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    with pytest.raises(RuntimeError, match="ListenStream"):
        systemd.inherited_socket()


def test_notify_without_notify_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False


def test_notify_reaches_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"dockvol-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("READY=1") is True
        s.settimeout(5)
        assert s.recv(64) == b"READY=1"


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def test_socket_unit_listens_where_the_engine_looks() -> None:
    unit = _unit("dockvol.socket")
    assert unit["Socket"]["ListenStream"] == "/run/docker/plugins/dockvol.sock"
    assert unit["Socket"]["SocketMode"] == "0660"
    assert "docker.service" in unit["Unit"]["Before"]


def test_service_unit_is_notify_type_and_runs_serve() -> None:
    unit = _unit("dockvol.service")
    assert unit["Service"]["Type"] == "notify"
    assert unit["Service"]["ExecStart"].split()[1:] == ["serve"]
    assert unit["Unit"]["Requires"] == "dockvol.socket"
