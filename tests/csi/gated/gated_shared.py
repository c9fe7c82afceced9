"""A driver of a test's own, shipped as a managed CSI plugin (``--driver
gated_shared:GatedSharedDriver``, built from this directory): the ``shared`` driver whose first
mount after the test arms it waits, so that the test can kill the plugin in the middle of a
NodePublish (tests/csi/test_swarm.py).

Armed by a file ``.gate`` in the shared root: the first mount on any node after it appears creates
``.entered`` (holding that node's name) and waits for ``.gate`` to go, at most two minutes. One
shot: while ``.entered`` exists nothing waits, so the plugin the engine restarts runs freely.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from dockvol import Volume
from dockvol.drivers.shared import SharedDriver

GATE = ".gate"
ENTERED = ".entered"


class GatedSharedDriver(SharedDriver):
    """The shared driver, with a gate in its first mount (for kill -9 tests)."""

    def mount(self, volume: Volume) -> Path:
        if (self.root / GATE).exists():
            try:
                fd = os.open(self.root / ENTERED, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pass  # fired once already: run freely
            else:
                os.write(fd, self.context.node.encode())
                os.close(fd)
                deadline = time.monotonic() + 120
                # The plugin waits here for the test's kill -9 (the test never waits on time).
                while (self.root / GATE).exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
        return super().mount(volume)
