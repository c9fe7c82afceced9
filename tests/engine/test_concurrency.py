"""A slow Mount of one volume does not hold up requests for other volumes.

Served by the real ``dockvol serve`` with a test driver whose Mount blocks on a FIFO until the
test opens it (tests/engine/slowdriver.py). The order of events proves the point: the other
requests complete while the slow Mount is provably still inside the driver.
"""

from __future__ import annotations

import threading
from typing import Any

from tests.support.plugin import Plugin, call

from . import slowdriver
from ._util import wait_until


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
