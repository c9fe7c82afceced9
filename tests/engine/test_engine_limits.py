"""What the engine does not tell the plugin (docs/protocol.md), seen through a real engine.

The engine reaches dockvol through a spy socket that forwards every byte and keeps what the
engine sent, so each test can show which requests reached the plugin and which never did.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.engine import BUSYBOX_IMAGE, Engine
from tests.support.plugin import Plugin, UnixHTTPConnection

from ._util import RequestSpy, inspect, run_detached, status, volume_names

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def spied(engine: Engine, plugin_base: Path) -> Iterator[tuple[Plugin, RequestSpy]]:
    """dockvol on a socket the engine does not know, and the spy as the engine's ``dockvol``."""
    real = plugin_base / "real.sock"
    p = Plugin.start(real, plugin_base / "root", plugin_base / "state" / "db", name="dockvol")
    spy = RequestSpy(engine.plugins_dir / "dockvol.sock", real)
    try:
        yield p, spy
    finally:
        for cid in engine.docker("ps", "-aq", check=False).stdout.split():
            engine.docker("rm", "-f", cid, check=False)
        spy.close()
        p.stop()


def endpoints(spy: RequestSpy) -> list[str]:
    return [ep for ep, _ in spy.requests()]


def test_recreating_a_name_with_other_options_never_reaches_the_plugin(
    engine: Engine, spied: tuple[Plugin, RequestSpy], names: Callable[[str], str]
) -> None:
    plugin, spy = spied
    vol = names("v")
    engine.docker("volume", "create", "-d", "dockvol", "-o", "mode=0750", vol)
    assert ("VolumeDriver.Create", {"Name": vol, "Opts": {"mode": "0750"}}) in spy.requests()

    spy.clear()
    again = engine.docker("volume", "create", "-d", "dockvol", "-o", "mode=0700", vol)
    assert again.stdout.strip() == vol  # success, though the options differ
    assert endpoints(spy) == ["VolumeDriver.Get"]  # the engine found it and stopped there
    assert status(engine, vol)["options"] == {"mode": "0750"}

    # Only a Create sent straight to the plugin shows the conflict.
    direct = subprocess.run(
        [sys.executable, "-m", "dockvol", "call", "--socket", str(plugin.sock),
         "create", vol, "-o", "mode=0700"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert direct.returncode == 1, direct
    assert "mode" in direct.stdout + direct.stderr, direct
    engine.docker("volume", "rm", vol)


def test_rm_of_a_volume_in_use_is_refused_by_the_engine_before_the_plugin_is_asked(
    engine: Engine,
    spied: tuple[Plugin, RequestSpy],
    names: Callable[[str], str],
    containers: list[str],
) -> None:
    _, spy = spied
    vol = names("v")
    engine.docker("volume", "create", "-d", "dockvol", vol)
    cid = engine.docker(
        "inspect", "--format", "{{.Id}}", run_detached(engine, containers, names("c"), vol)
    ).stdout.strip()

    for force in ((), ("-f",)):
        spy.clear()
        r = engine.docker("volume", "rm", *force, vol, check=False)
        assert r.returncode != 0
        assert "volume is in use" in r.stderr and cid in r.stderr, r.stderr
        assert "VolumeDriver.Remove" not in endpoints(spy), spy.requests()
    assert vol in volume_names(engine)

    engine.docker("rm", "-f", containers.pop())
    spy.clear()
    engine.docker("volume", "rm", vol)
    assert ("VolumeDriver.Remove", {"Name": vol}) in spy.requests()


def _anonymous_volume(engine: Engine, containers: list[str], name: str, *extra: str) -> str:
    """An anonymous volume left behind by a removed container (``docker rm`` without ``-v``)."""
    containers.append(name)
    engine.docker("run", "--name", name, "--network", "none", *extra, "-v", "/anon",
                  BUSYBOX_IMAGE, "true")  # fmt: skip
    mounts = json.loads(engine.docker("inspect", "--format", "{{json .Mounts}}", name).stdout)
    engine.docker("rm", containers.pop())
    return str(mounts[0]["Name"])


def test_prune_only_ever_removes_the_local_drivers_volumes(
    engine: Engine,
    spied: tuple[Plugin, RequestSpy],
    names: Callable[[str], str],
    containers: list[str],
) -> None:
    _, spy = spied
    mine = names("dv")
    engine.docker("volume", "create", "-d", "dockvol", mine)
    mine_anon = _anonymous_volume(engine, containers, names("c1"), "--volume-driver", "dockvol")
    local = names("lv")
    engine.docker("volume", "create", local)
    local_anon = _anonymous_volume(engine, containers, names("c2"))
    assert inspect(engine, mine_anon)["Driver"] == "dockvol"

    spy.clear()
    pruned = engine.docker("volume", "prune", "-f").stdout
    assert endpoints(spy) == []  # prune never asks the plugin anything
    assert local_anon in pruned
    if engine.release == "20.10":
        assert local in pruned  # 20.10 prunes every unused local volume, named ones too
    else:
        assert local not in pruned  # API 1.42+: only anonymous ones, unless --all
        spy.clear()
        pruned = engine.docker("volume", "prune", "--all", "-f").stdout
        assert local in pruned
        assert endpoints(spy) == []
    assert mine not in pruned and mine_anon not in pruned
    left = volume_names(engine)
    assert mine in left and mine_anon in left
    for v in (mine, mine_anon):
        engine.docker("volume", "rm", v)


def _engine_get(engine: Engine, path: str) -> Any:
    conn = UnixHTTPConnection(engine.sock, timeout=60)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        return json.loads(resp.read())
    finally:
        conn.close()


def test_system_df_only_ever_sees_the_local_drivers_volumes(
    engine: Engine,
    spied: tuple[Plugin, RequestSpy],
    names: Callable[[str], str],
    containers: list[str],
) -> None:
    _, spy = spied
    mine, local = names("dv"), names("lv")
    engine.docker("volume", "create", "-d", "dockvol", mine)
    engine.docker("volume", "create", local)
    run_detached(engine, containers, names("c"), mine)  # in use: still not counted

    spy.clear()
    df = _engine_get(engine, "/system/df")
    listed = {v["Name"]: v["Driver"] for v in df["Volumes"] or []}
    assert listed.get(local) == "local"
    assert mine not in listed
    assert set(listed.values()) == {"local"}
    assert endpoints(spy) == []  # the plugin is never asked for a size either
    text = engine.docker("system", "df", "-v").stdout
    assert local in text and mine not in text

    engine.docker("rm", "-f", containers.pop())
    for v in (mine, local):
        engine.docker("volume", "rm", v)
