"""Fixtures shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockvol.drivers.local import LocalDriver


@pytest.fixture
def driver(tmp_path: Path) -> LocalDriver:
    """A local driver, set up, on ``tmp_path/root``."""
    d = LocalDriver(tmp_path / "root")
    d.setup()
    return d
