"""The engine restarts (as at a reboot) while the plugin keeps running."""

from __future__ import annotations

import pytest

from tests.support.engine import BUSYBOX_IMAGE, Engine
from tests.support.plugin import Plugin

from ._util import run_detached, run_once, status, volume_names

pytestmark = pytest.mark.engine


def test_volume_created_implicitly_by_run(engine: Engine, plugin: Plugin, names) -> None:
    vol = names("v")
    engine.docker(
        "run", "--rm", "--network", "none", "--volume-driver", "dockvol",
        "-v", f"{vol}:/data", BUSYBOX_IMAGE, "sh", "-c", "echo implicit > /data/f",
    )  # fmt: skip
    assert vol in volume_names(engine)
    st = status(engine, vol)
    assert st["options"] == {} and st["mounts"] == 0
    assert run_once(engine, vol, "cat /data/f") == "implicit\n"


def test_engine_restart_keeps_volumes_and_accounts_stopped_containers(
    engine: Engine, plugin: Plugin, names, containers: list[str]
) -> None:
    vol = names("v")
    engine.docker("volume", "create", "-d", "dockvol", "-o", "mode=0770", vol)
    # sleep ignores SIGTERM as PID 1: a short stop timeout keeps the engine's shutdown quick.
    c = run_detached(engine, containers, names("c"), vol, extra=("--stop-timeout", "1"))
    engine.docker("exec", c, "sh", "-c", "echo before-restart > /data/f")
    assert status(engine, vol)["mounts"] == 1

    engine.restart()  # stops the container on the way down (no live-restore)

    assert vol in volume_names(engine)
    st = status(engine, vol)
    assert st["options"] == {"mode": "0770"}
    assert st["mounts"] == 0 and st["mount_ids"] == [], st

    engine.docker("start", c)
    assert status(engine, vol)["mounts"] == 1
    assert engine.docker("exec", c, "cat", "/data/f").stdout == "before-restart\n"
    engine.docker("rm", "-f", c)
    assert status(engine, vol)["mounts"] == 0
    engine.docker("volume", "rm", vol)
    assert vol not in volume_names(engine)
