"""A test driver whose Mount blocks until the test lets it go (``-o slow=true`` volumes).

``mount`` of a slow volume creates ``<root>/.entered`` and then blocks reading the FIFO
``<root>/.gate`` until the test writes a byte to it: the test controls exactly when the mount
ends, with no timing involved. Serve it with ``--driver tests.engine.slowdriver:SlowDriver``
(the repository root on PYTHONPATH).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from dockvol import Option, Volume
from dockvol.drivers.local import LocalDriver

ENTERED = ".entered"
GATE = ".gate"


class SlowDriver(LocalDriver):
    options: ClassVar[Mapping[str, Option]] = {
        **LocalDriver.options,
        "slow": Option.boolean(help="block mount until the test opens the gate"),
    }

    def setup(self) -> None:
        super().setup()
        gate = self.root / GATE
        if not gate.exists():
            os.mkfifo(gate, 0o600)

    def mount(self, volume: Volume) -> Path:
        if volume.options["slow"]:
            (self.root / ENTERED).write_text(volume.name)
            with open(self.root / GATE, "rb") as gate:  # blocks until a writer opens it
                gate.read(1)
        return super().mount(volume)


def open_gate(root: Path) -> bool:
    """Let a blocked slow mount finish; False if no mount is waiting on the gate."""
    try:
        fd = os.open(root / GATE, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: nobody reads the FIFO
        return False
    with contextlib.closing(os.fdopen(fd, "wb")) as f:
        f.write(b"x")
    return True
