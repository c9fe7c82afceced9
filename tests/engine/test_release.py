"""A mount record the engine gave up on can be released by an operator, then the volume removed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.engine._util import run_detached, status
from tests.support.engine import Engine
from tests.support.plugin import Plugin

pytestmark = pytest.mark.engine


def release(plugin: Plugin, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dockvol", "volume", "release", "--socket", str(plugin.sock), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_record_the_engine_gave_up_on_is_released_by_hand(
    engine: Engine, plugin: Plugin, names, containers: list[str]
) -> None:
    vol = names("v")
    engine.docker("volume", "create", "-d", "dockvol", vol)
    c = run_detached(engine, containers, names("c"), vol)
    mount_id = status(engine, vol)["mount_ids"][0]

    # The plugin stays down for all of the engine's Unmount retries (~15 s): the engine gives
    # up, and the plugin, back later, still holds the record.
    plugin.kill()
    engine.docker("stop", "-t", "0", c, check=False, timeout=120)
    engine.docker("rm", c)
    plugin.launch()
    assert status(engine, vol)["mount_ids"] == [mount_id]
    refused = engine.docker("volume", "rm", vol, check=False)
    assert refused.returncode != 0 and mount_id[:12] in refused.stderr

    wrong = release(plugin, vol, "f" * 64)
    assert wrong.returncode == 1 and mount_id in wrong.stderr  # says which IDs exist
    assert release(plugin, vol).returncode == 2  # neither IDs nor --all: refused

    done = release(plugin, vol, "--all")
    assert done.returncode == 0, done.stderr
    assert "released 1 mount ID" in done.stdout
    assert status(engine, vol)["mounts"] == 0
    engine.docker("volume", "rm", vol)
