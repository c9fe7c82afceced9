"""Stopping ``dockvol serve``: in-flight requests drain, the socket goes, state is kept."""

from __future__ import annotations

import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support.plugin import Plugin, call

from . import slowdriver
from ._util import wait_until


def _refuses_connections(sock: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(sock))
    except (ConnectionRefusedError, FileNotFoundError):
        return True
    finally:
        s.close()
    return False


def test_sigterm_drains_an_in_flight_mount(slow_plugin: Plugin) -> None:
    p = slow_plugin
    assert p.proc is not None
    mid = "c" * 64
    assert p.call("VolumeDriver.Create", {"Name": "slow", "Opts": {"block": "mount"}}) == (200, {})
    result: dict[str, Any] = {}

    def mount() -> None:
        try:
            result["reply"] = call(p.sock, "VolumeDriver.Mount", {"Name": "slow", "ID": mid})
        except BaseException as exc:
            result["error"] = exc

    t = threading.Thread(target=mount, daemon=True)
    t.start()
    wait_until("the mount to enter the driver", (p.root / slowdriver.ENTERED).exists)

    p.proc.send_signal(signal.SIGTERM)
    wait_until("the server to stop accepting", lambda: _refuses_connections(p.sock))
    assert p.proc.poll() is None, "the plugin exited with a request in flight"

    assert slowdriver.open_gate(p.root)
    t.join(30)
    assert "error" not in result, result.get("error")
    code, reply = result["reply"]
    assert code == 200 and "Mountpoint" in reply, reply
    assert p.proc.wait(30) == 0
    assert not p.sock.exists()

    # The mount that completed during shutdown was recorded durably.
    p.launch()
    code, reply = p.call("VolumeDriver.Get", {"Name": "slow"})
    assert reply["Volume"]["Status"]["mount_ids"] == [mid], reply


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_zero_and_removes_socket(tmp_path: Path, sig: signal.Signals) -> None:
    base = Path(tmp_path)
    p = Plugin.start(Path(f"/tmp/dvsig-{sig.name}-{id(base)}.sock"), base / "r", base / "s")
    try:
        assert p.proc is not None
        p.proc.send_signal(sig)
        # 130 is the shell's convention for a Ctrl-C'd command; the cleanup must happen anyway.
        assert p.proc.wait(30) in ((0,) if sig == signal.SIGTERM else (0, 130))
        assert not p.sock.exists()
        assert "Traceback" not in p.output()
    finally:
        p.stop()
        p.sock.unlink(missing_ok=True)


def test_socket_is_created_0660(slow_plugin: Plugin) -> None:
    st = slow_plugin.sock.stat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660


def test_a_non_socket_file_at_the_socket_path_is_refused(tmp_path: Path) -> None:
    sock = Path(f"/tmp/dvnotsock-{id(tmp_path)}")
    sock.write_text("not mine\n")
    try:
        r = subprocess.run(
            [
                sys.executable, "-m", "dockvol", "serve", "--socket", str(sock),
                "--root", str(tmp_path / "r"), "--state", str(tmp_path / "s"),
            ],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode != 0
        assert "is not a socket" in r.stderr and str(sock) in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert sock.read_text() == "not mine\n"  # left alone
    finally:
        sock.unlink(missing_ok=True)
