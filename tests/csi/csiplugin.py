"""A CSI-only plugin process for the tests: the local driver, a sqlite registry, serve_csi.

``python -m tests.csi.csiplugin ROOT STATE ENDPOINT NODE``. With ``CSI_TEST_GATE=DIR`` and
``CSI_TEST_GATE_AT=in-mount`` (the driver's mount) or ``in-bind`` (a bind, after the service
recorded the mount), that step touches ``DIR/<where>`` and waits until ``DIR/go`` exists: a
test kills the process there.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from dockvol._csi import mounts
from dockvol._csi.server import run_csi
from dockvol._registry.sqlite import SqliteRegistry
from dockvol._sdk.context import HostContext
from dockvol._service.service import VolumeService
from dockvol.drivers.local import LocalDriver

GATE = os.environ.get("CSI_TEST_GATE")
GATE_AT = os.environ.get("CSI_TEST_GATE_AT")


def _hold(where: str) -> None:
    if not GATE or where != GATE_AT:
        return
    gate = Path(GATE)
    (gate / where).touch()
    deadline = time.monotonic() + 60
    while not (gate / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)


class GatedLocal(LocalDriver):
    def mount(self, volume: Any) -> Path:
        _hold("in-mount")
        return super().mount(volume)


def main() -> None:
    root, state, endpoint, node = sys.argv[1:5]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    if GATE:
        real_bind = mounts.bind

        def gated_bind(source: Path, target: Path, *, readonly: bool) -> None:
            _hold("in-bind")
            real_bind(source, target, readonly=readonly)

        mounts.bind = gated_bind  # type: ignore[assignment]
    driver = GatedLocal(
        Path(root), HostContext(plugin="dockvol-test", node=node, local_dir=Path(state))
    )
    driver.setup()
    service = VolumeService(driver, SqliteRegistry(Path(state)))
    service.reconcile()
    try:
        run_csi(service, endpoint, node_id=node, name="dockvol.test")
    finally:
        service.close()


if __name__ == "__main__":
    main()
