"""The conformance kit for CSI plugins (any language): ``dockvol conformance --csi-endpoint``.

It speaks CSI v1 over gRPC on the plugin's unix socket and judges what the CSI spec v1.9.0
requires of the calls the plugin implements, with the Docker-protocol kit's verdicts and
reports::

    from dockvol.testing.csi import run
    from dockvol.testing import report

    results, runner = run("unix:///run/csi/csi.sock")
    print(report.table(results))

In pytest, against a dockvol driver class served in process::

    from dockvol.testing.csi import csi_conformance_tests
    TestMyDriverCsi = csi_conformance_tests(driver=MyDriver)
"""

from __future__ import annotations

from collections.abc import Iterable

from ..verdict import Result
from .checks import CHECKS, SUITE, select
from .client import CsiClient
from .runner import Config, CsiContext, CsiLeftovers, CsiRunner

__all__ = [
    "CHECKS",
    "SUITE",
    "Config",
    "CsiClient",
    "CsiContext",
    "CsiLeftovers",
    "CsiRunner",
    "csi_conformance_tests",
    "run",
    "select",
]


def run(
    endpoint: str | CsiClient,
    *,
    only: Iterable[str] = (),
    skip: Iterable[str] = (),
    config: Config | None = None,
) -> tuple[list[Result], CsiRunner]:
    """Run the CSI suite against the plugin at ``endpoint``; the results and the runner (its
    ``leftovers`` say what could not be undone)."""
    client = endpoint if isinstance(endpoint, CsiClient) else CsiClient(endpoint)
    runner = CsiRunner(client, config)
    try:
        return runner.run(select(list(only), list(skip))), runner
    finally:
        runner.close()


def __getattr__(name: str) -> object:
    # pytest is imported only by those who ask for the test-class factory.
    if name == "csi_conformance_tests":
        from .pytest_plugin import csi_conformance_tests

        return csi_conformance_tests
    raise AttributeError(name)
