"""What a user of Debian 13's engine 26.1.5 sees with a dockvol CSI plugin in a swarm.

Engines 26.0 to 28.1 cannot address any managed CSI plugin: their adapter between the plugin
store and swarmkit does not pass the plugin's socket address on, so the manager never creates a
cluster volume (moby/moby#49961, fixed in 28.2.0). The Swarm tests run on Debian sid's engine
(test_swarm.py); this one checks, on 26.1.5, that the failure is exactly that one, so the
README's statement stays true and a backported fix is noticed.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.csi.managed import PLUGIN, build_csi_plugin
from tests.csi.test_swarm import _pluginaddr_bug, wait_for
from tests.support.engine import Engine
from tests.support.swarm import leave_swarm, swarm_init

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def engine26() -> Iterator[Engine]:
    d = Path(tempfile.mkdtemp(prefix="dvcsi26", dir="/tmp"))
    eng = Engine.start(version="26")
    try:
        build_csi_plugin(eng, d, DOCKVOL_NODE="node-26")
        swarm_init(eng)
        yield eng
    finally:
        leave_swarm(eng)
        eng.stop()
        shutil.rmtree(d, ignore_errors=True)


def test_engine26_cannot_address_csi_plugins(engine26: Engine) -> None:
    eng = engine26
    assert _pluginaddr_bug(eng.version), f"engine {eng.version} should have moby/moby#49961"
    vol = f"v{uuid.uuid4().hex[:6]}"
    eng.docker(
        "volume", "create", "--driver", PLUGIN, "--type", "mount", "--scope", "multi",
        "--sharing", "all", vol,
    )  # fmt: skip
    # The manager says why, and the volume never gets a CSI volume ID.
    wait_for(
        lambda: "does not implement PluginAddr" in eng.log.read_text(errors="replace"),
        timeout=90,
        what="the manager's PluginAddr error in the engine log",
    )
    info = eng.docker("volume", "inspect", "-f", "{{.ClusterVolume.Info}}", vol).stdout.strip()
    assert info in ("<nil>", ""), info
    eng.docker("volume", "rm", "-f", vol, check=False)
