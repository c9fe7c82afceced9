"""Tools for volume plugin authors: a wire client and a conformance and fault-injection kit.

It speaks only the Docker volume plugin protocol, so it tests plugins written in any language::

    from dockvol.testing import WireClient, run, report

    results = run("/run/docker/plugins/myplugin.sock")
    print(report.table(results))

In a pytest run: ``pytest -p dockvol.testing --dockvol-socket PATH`` (the hooks below load
:mod:`dockvol.testing.pytest_plugin` only when pytest calls them), or two lines in a test module
(see :func:`conformance_tests`). Every check is documented in
docs/conformance.md.
"""

from typing import Any

from . import report
from ._http import Address
from .catalog import CHECKS, SUITE, select
from .client import Reply, WireClient, find_plugin, peer_pid, resolve_endpoint
from .faults import ShellFaults, kill_listener, wait_ready
from .leftovers import Leftovers
from .suite import Config, Faults, Runner, run
from .verdict import Check, CheckFailed, Hang, Result, Skipped

__all__ = [
    "CHECKS",
    "SUITE",
    "Address",
    "Check",
    "CheckFailed",
    "Config",
    "Faults",
    "Hang",
    "Leftovers",
    "Reply",
    "Result",
    "Runner",
    "ShellFaults",
    "Skipped",
    "WireClient",
    "conformance_tests",
    "find_plugin",
    "kill_listener",
    "peer_pid",
    "report",
    "resolve_endpoint",
    "run",
    "select",
    "wait_ready",
]


# ``pytest -p dockvol.testing``: pytest finds these hooks on this module. They import pytest
# (through the plugin module) only when called, so the CLI tools never need pytest.
def pytest_addoption(parser: Any) -> None:
    from . import pytest_plugin

    pytest_plugin.pytest_addoption(parser)


def pytest_configure(config: Any) -> None:
    from . import pytest_plugin

    pytest_plugin.pytest_configure(config)


def pytest_collection_modifyitems(session: Any, config: Any, items: Any) -> None:
    from . import pytest_plugin

    pytest_plugin.pytest_collection_modifyitems(session, config, items)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: Any, config: Any) -> None:
    from . import pytest_plugin

    pytest_plugin.pytest_terminal_summary(terminalreporter, exitstatus, config)


def pytest_unconfigure(config: Any) -> None:
    from . import pytest_plugin

    pytest_plugin.pytest_unconfigure(config)


def __getattr__(name: str) -> object:
    # pytest is imported only by those who ask for the test-class factory.
    if name == "conformance_tests":
        from .pytest_plugin import conformance_tests

        return conformance_tests
    raise AttributeError(name)
