"""Helpers of the local driver's unit tests: volumes as the service makes them, polling with a
deadline, data no remove may touch and a bind mount inside a volume."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from dockvol import Volume
from dockvol._sdk.options import parse_options
from dockvol._service.names import volume_key
from dockvol.drivers.local import LocalDriver


def make(name: str, **opts: str) -> Volume:
    values = parse_options(LocalDriver.options, opts)
    return Volume(name, volume_key(name), values, datetime.now(UTC), opts)


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)  # polling a condition with a deadline
    return cond()


def precious(path: Path) -> Path:
    """Make ``path`` a directory holding keep.txt ("data"), which no remove may touch."""
    path.mkdir()
    (path / "keep.txt").write_text("data")
    return path


def mount_inside(driver: LocalDriver, src: Path) -> tuple[Volume, Path]:
    """A new volume "v" with ``src`` (made here, holding keep.txt) bind-mounted at its sub/."""
    precious(src)
    vol = make("v")
    driver.create(vol)
    target = driver.mount(vol) / "sub"
    target.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(target)], check=True)
    return vol, target
