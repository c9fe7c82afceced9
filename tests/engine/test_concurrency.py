"""A slow Mount of one volume does not hold up requests for other volumes.

Served by the real ``dockvol serve`` with a test driver whose Mount blocks on a FIFO until the
test opens it (tests/engine/slowdriver.py). The order of events proves the point: the other
requests complete while the slow Mount is provably still inside the driver.
"""

from __future__ import annotations

import subprocess
import threading
from typing import Any

import pytest

from tests.support.engine import BUSYBOX_IMAGE, Engine
from tests.support.plugin import Plugin, call

from . import slowdriver
from ._util import run_once, status, volume_names, wait_until


def test_slow_mount_does_not_delay_other_volumes(slow_plugin: Plugin) -> None:
    p = slow_plugin
    for name, opts in (("slow", {"block": "mount"}), ("fast", {}), ("other", {})):
        assert p.call("VolumeDriver.Create", {"Name": name, "Opts": opts}) == (200, {})

    done = threading.Event()
    result: dict[str, Any] = {}

    def slow_mount() -> None:
        try:
            result["reply"] = call(p.sock, "VolumeDriver.Mount", {"Name": "slow", "ID": "a" * 64})
        except BaseException as exc:  # reported by the main thread
            result["error"] = exc
        finally:
            done.set()

    t = threading.Thread(target=slow_mount, daemon=True)
    t.start()
    entered = p.root / slowdriver.ENTERED
    wait_until("the slow mount to enter the driver", entered.exists)
    assert not done.is_set()

    # While the slow Mount is held inside the driver, other requests are answered.
    code, got = p.call("VolumeDriver.Get", {"Name": "other"}, timeout=10)
    assert code == 200 and got["Volume"]["Name"] == "other", got
    code, listed = p.call("VolumeDriver.List", {}, timeout=10)
    assert sorted(v["Name"] for v in listed["Volumes"]) == ["fast", "other", "slow"]
    assert p.call("VolumeDriver.Capabilities", {}, timeout=10) == (
        200,
        {"Capabilities": {"Scope": "local"}},
    )
    # Get of the slow volume itself is a read: it does not wait for the volume's lock.
    code, got = p.call("VolumeDriver.Get", {"Name": "slow"}, timeout=10)
    assert code == 200 and got["Volume"]["Status"]["mounts"] == 0, got
    # Mount and Unmount of another volume go through its own lock, not the slow one's.
    code, got = p.call("VolumeDriver.Mount", {"Name": "fast", "ID": "b" * 64}, timeout=10)
    assert code == 200 and "Mountpoint" in got, got
    assert p.call("VolumeDriver.Unmount", {"Name": "fast", "ID": "b" * 64}, timeout=10) == (200, {})
    assert not done.is_set(), "the slow mount ended before the gate was opened"

    assert slowdriver.open_gate(p.root), "the slow mount was not waiting on the gate"
    t.join(30)
    assert done.is_set()
    assert "error" not in result, result.get("error")
    code, got = result["reply"]
    assert code == 200 and "Mountpoint" in got, got
    code, got = p.call("VolumeDriver.Get", {"Name": "slow"})
    assert got["Volume"]["Status"]["mount_ids"] == ["a" * 64]


@pytest.mark.engine
def test_container_blocked_in_mount_does_not_delay_the_engine_on_other_volumes(
    engine: Engine, engine_slow_plugin: Plugin, containers: list[str]
) -> None:
    p = engine_slow_plugin
    engine.docker("volume", "create", "-d", "dvslow", "-o", "block=mount", "slowvol")
    engine.docker("volume", "create", "-d", "dvslow", "othervol")
    done: list[subprocess.CompletedProcess[str]] = []
    containers.append("blocked")
    run = ("run", "--name", "blocked", "--network", "none", "-v", "slowvol:/data", BUSYBOX_IMAGE)
    starting = threading.Thread(
        target=lambda: done.append(engine.docker(*run, "true", check=False)), daemon=True
    )
    starting.start()
    wait_until(
        "the container's Mount to block", lambda: slowdriver.entered(p.root) == "mount slowvol"
    )

    # The engine and the plugin keep serving everything else meanwhile.
    assert status(engine, "othervol")["mounts"] == 0
    assert {"slowvol", "othervol"} <= set(volume_names(engine, "dvslow"))
    assert run_once(engine, "othervol", "echo ok > /data/f && cat /data/f") == "ok\n"
    assert not done, "the blocked container finished before its Mount was released"

    assert slowdriver.open_gate(p.root)
    starting.join(120)
    assert done and done[0].returncode == 0, done
    engine.docker("rm", "blocked")
    for v in ("slowvol", "othervol"):
        engine.docker("volume", "rm", v)
