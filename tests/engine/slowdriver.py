"""A test driver that blocks inside one operation until the test lets it go.

``-o block=mount`` (or ``create``, ``unmount``, ``remove``): that driver method writes its name
to ``<root>/.entered`` and then blocks reading the FIFO ``<root>/.gate`` until the test writes a
byte to it (:func:`open_gate`). The test controls exactly when the operation ends, with no
timing involved, and can kill the plugin while it is inside the driver. Blocking is one-shot:
while ``.entered`` exists nothing blocks again (so recovery after a kill runs freely);
:func:`rearm` deletes it. Serve it with
``--driver tests.engine.slowdriver:SlowDriver`` (the repository root on PYTHONPATH).
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
        "block": Option.choice(
            *("none", "create", "mount", "unmount", "remove"),
            default="none",
            help="the operation that waits for the test's gate",
        ),
    }

    def setup(self) -> None:
        super().setup()
        gate = self.root / GATE
        if not gate.exists():
            os.mkfifo(gate, 0o600)

    def _wait(self, volume: Volume, op: str) -> None:
        if volume.options["block"] == op and not (self.root / ENTERED).exists():
            (self.root / ENTERED).write_text(f"{op} {volume.name}")
            with open(self.root / GATE, "rb") as gate:  # blocks until a writer opens it
                gate.read(1)

    def create(self, volume: Volume) -> None:
        self._wait(volume, "create")
        super().create(volume)

    def mount(self, volume: Volume) -> Path:
        self._wait(volume, "mount")
        return super().mount(volume)

    def unmount(self, volume: Volume) -> None:
        self._wait(volume, "unmount")
        super().unmount(volume)

    def remove(self, volume: Volume) -> None:
        self._wait(volume, "remove")
        super().remove(volume)


def entered(root: Path) -> str:
    """What is blocked at the gate now ("mount NAME"), or "" if nothing entered yet."""
    try:
        return (root / ENTERED).read_text()
    except FileNotFoundError:
        return ""


def rearm(root: Path) -> None:
    (root / ENTERED).unlink(missing_ok=True)


def open_gate(root: Path) -> bool:
    """Let a blocked operation finish; False if nothing is waiting on the gate."""
    try:
        fd = os.open(root / GATE, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: nobody reads the FIFO
        return False
    with contextlib.closing(os.fdopen(fd, "wb")) as f:
        f.write(b"x")
    return True
