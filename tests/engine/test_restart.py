"""The plugin process: crash and restart under a running container, SIGTERM, stale and live sockets."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.engine import Engine
from tests.support.plugin import Plugin

from ._util import run_detached, status, volume_names

pytestmark = pytest.mark.engine


def test_sigkill_while_mounted_then_restart_keeps_everything(
    engine: Engine, plugin: Plugin, names, containers: list[str]
) -> None:
    vol = names("v")
    engine.docker("volume", "create", "-d", "dockvol", "-o", "mode=0770", vol)
    c = run_detached(engine, containers, names("c"), vol)
    engine.docker("exec", c, "sh", "-c", "echo before-crash > /data/f")
    (mid,) = status(engine, vol)["mount_ids"]

    plugin.kill()
    assert plugin.sock.exists(), "a SIGKILLed process cannot remove its socket"
    plugin.launch()  # replaces the stale socket

    assert vol in volume_names(engine)
    st = status(engine, vol)
    assert st["mounts"] == 1 and st["mount_ids"] == [mid], st
    assert st["options"] == {"mode": "0770"}
    # The running container kept working across the crash and its data is intact.
    assert engine.docker("exec", c, "cat", "/data/f").stdout == "before-crash\n"
    engine.docker("exec", c, "sh", "-c", "echo after-restart >> /data/f")

    # Its stop, after the restart, is accounted: the engine's Unmount finds the durable record.
    engine.docker("stop", "-t", "0", c)
    st = status(engine, vol)
    assert st["mounts"] == 0 and st["mount_ids"] == [], st
    code, reply = plugin.call("VolumeDriver.Mount", {"Name": vol, "ID": "f" * 64})
    assert code == 200 and "Err" not in reply, reply
    vdir = Path(reply["Mountpoint"])
    assert (vdir / "f").read_text() == "before-crash\nafter-restart\n"
    assert plugin.call("VolumeDriver.Unmount", {"Name": vol, "ID": "f" * 64}) == (200, {})

    engine.docker("rm", c)
    engine.docker("volume", "rm", vol)
    assert vol not in volume_names(engine)
    assert not vdir.exists()


def test_container_stopped_while_plugin_is_down_is_accounted_after_restart(
    engine: Engine, plugin: Plugin, names, containers: list[str]
) -> None:
    """The engine retries a failed call for about 15 s (1, 2, 4, 8 s apart): a plugin that is
    back within that window receives the Unmount of a container stopped while it was down."""
    vol = names("v")
    engine.docker("volume", "create", "-d", "dockvol", vol)
    c = run_detached(engine, containers, names("c"), vol)
    assert status(engine, vol)["mounts"] == 1

    plugin.kill()
    done: list[subprocess.CompletedProcess[str]] = []
    stopping = threading.Thread(
        target=lambda: done.append(engine.docker("stop", "-t", "0", c, check=False)), daemon=True
    )
    stopping.start()
    plugin.launch()
    stopping.join(60)
    assert done and done[0].returncode == 0, done

    st = status(engine, vol)
    assert st["mounts"] == 0 and st["mount_ids"] == [], st
    engine.docker("rm", c)
    engine.docker("volume", "rm", vol)


@pytest.fixture(scope="module")
def _dvlife(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plugin]:
    base = tmp_path_factory.mktemp("dvlife")
    p = Plugin.start(
        engine.plugins_dir / "dvlife.sock", base / "root", base / "state" / "db", name="dvlife"
    )
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def second_plugin(_dvlife: Plugin) -> Plugin:
    """Another plugin the engine finds, ``dvlife``, serving when each test starts.

    Once used, the engine keeps asking it on every ``docker volume ls`` (a dead one stalls that
    for ~15 s), so the tests leave it serving.
    """
    if _dvlife.proc is None or _dvlife.proc.poll() is not None:
        _dvlife.launch()
    return _dvlife


def test_sigterm_exits_zero_and_removes_socket(engine: Engine, second_plugin: Plugin) -> None:
    engine.docker("volume", "create", "-d", "dvlife", "life1")
    engine.docker("volume", "rm", "life1")

    assert second_plugin.stop() == 0
    assert not second_plugin.sock.exists(), "the socket was left behind after SIGTERM"
    assert "removed" in second_plugin.output()

    second_plugin.launch()
    engine.docker("volume", "create", "-d", "dvlife", "life2")
    assert "life2" in volume_names(engine, "dvlife")
    engine.docker("volume", "rm", "life2")


def test_stale_socket_is_replaced_at_restart(engine: Engine, second_plugin: Plugin) -> None:
    engine.docker("volume", "create", "-d", "dvlife", "life3")
    second_plugin.kill()
    assert second_plugin.sock.is_socket()  # stale: nobody listens
    second_plugin.launch()
    assert "life3" in volume_names(engine, "dvlife")
    engine.docker("volume", "rm", "life3")


def test_second_serve_on_a_live_socket_refuses(
    engine: Engine, second_plugin: Plugin, tmp_path: Path
) -> None:
    r = subprocess.run(
        [
            sys.executable, "-m", "dockvol", "serve", "--name", "dvlife",
            "--socket", str(second_plugin.sock),
            "--root", str(tmp_path / "root"), "--state", str(tmp_path / "state"),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode != 0
    assert "another process is serving" in r.stderr and str(second_plugin.sock) in r.stderr
    assert "Traceback" not in r.stderr
    # The first plugin still owns its socket and serves the engine.
    assert second_plugin.sock.is_socket()
    engine.docker("volume", "create", "-d", "dvlife", "life4")
    assert "life4" in volume_names(engine, "dvlife")
    engine.docker("volume", "rm", "life4")
