"""The conformance and fault-injection kit against the block driver (served in process)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockvol.drivers.block import BlockDriver
from dockvol.testing import Config, conformance_tests

from .conftest import BASE_PREFIX, cleanup_under

_roots: dict[Path, Path] = {}


def _block(kit_dir: Path) -> BlockDriver:
    # Volumes live under BASE_PREFIX so that ``loops_unchanged`` watches them too. A restart
    # (the kit's crash checks) must find the same root again, as a restarted plugin would.
    root = _roots.get(kit_dir)
    if root is None:
        root = _roots[kit_dir] = (
            Path(tempfile.mkdtemp(prefix=Path(BASE_PREFIX).name, dir="/tmp")) / "root"
        )
    return BlockDriver(root)


# 200 volumes for the latency check, not 1000: each Create makes a filesystem (~25 ms), and the
# check is about Get and List, which never touch the driver's storage.
TestBlockConformance = conformance_tests(
    driver=_block,
    destructive=True,
    # In process there is no plugin process to SIGTERM or SIGKILL: a "kill" there stops the
    # server, but driver work already in worker threads (a block Mount is slow enough to be
    # caught) still finishes after the restarted service has reconciled, so a burst can leave an
    # attachment no real crash would. The real cases run on real processes:
    # tests/engine/test_shutdown.py (graceful stop) and test_engine.py (kill -9 while attached).
    skip=("stop-removes-socket", "crash-during-burst"),
    config=Config(volumes=200),
)


@pytest.fixture(scope="module", autouse=True)
def _release_what_the_kit_left() -> Iterator[None]:
    """A stopped plugin keeps its volumes mounted (as a real one does): release them after."""
    yield
    for root in _roots.values():
        cleanup_under(root.parent)
        shutil.rmtree(root.parent, ignore_errors=True)
