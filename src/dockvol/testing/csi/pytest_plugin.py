"""The CSI suite inside pytest: one test per check, the same verdicts as the CLI.

A dockvol driver author adds two lines to a test module; the driver is served over CSI in
process on a temporary socket and tested through it::

    from dockvol.testing.csi import csi_conformance_tests
    TestMyDriverCsi = csi_conformance_tests(driver=MyDriver)     # or endpoint="unix:///..."
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from ..inprocess import DriverFactory
from ..pytest_plugin import ConformanceWarning, as_test_outcome
from .checks import select
from .client import CsiClient
from .inprocess import InProcessCsi
from .runner import Config, CsiRunner, remove_unmounted


def csi_conformance_tests(
    *,
    endpoint: str | None = None,
    driver: DriverFactory | None = None,
    only: Sequence[str] = (),
    skip: Sequence[str] = (),
    config: Config | None = None,
) -> type:
    """A pytest test class with one test per CSI check, against ``endpoint`` (a running CSI
    plugin, ``unix:///path``) or ``driver`` (a Driver class served over CSI in process).
    Assign it to a module-level name starting with ``Test``."""
    if (endpoint is None) == (driver is None):
        raise ValueError("give exactly one of endpoint (a CSI socket) or driver (a class)")
    checks = {c.name: c for c in select(list(only), list(skip))}
    cfg = config or Config()

    class TestCsiConformance:
        @pytest.fixture(scope="class")
        @classmethod
        def dockvol_csi_runner(cls) -> Iterator[CsiRunner]:
            plugin: InProcessCsi | None = None
            scratch = None
            if driver is not None:
                scratch = Path(tempfile.mkdtemp(prefix="dvcsi-"))
                plugin = InProcessCsi(driver, scratch).start()
            runner = CsiRunner(CsiClient(plugin.endpoint if plugin else str(endpoint)), cfg)
            try:
                yield runner
            finally:
                runner.finish()
                runner.close()
                if plugin is not None:
                    plugin.stop()
                if scratch is not None:
                    remove_unmounted(scratch)  # never through a mount left behind
                if not runner.leftovers.empty:
                    warnings.warn(ConformanceWarning(runner.leftovers.render()), stacklevel=1)

        @pytest.mark.parametrize("check", list(checks))
        def test_csi_conformance(self, dockvol_csi_runner: CsiRunner, check: str) -> None:
            as_test_outcome(dockvol_csi_runner.run_one(checks[check]))

    return TestCsiConformance
