"""Run the conformance suite inside pytest: one test per check.

Against a running plugin, from the command line::

    pytest -p dockvol.testing.pytest_plugin --dockvol-socket /run/docker/plugins/x.sock

Against a driver class, in process, in a test module (two lines)::

    from dockvol.testing import conformance_tests
    TestMyDriver = conformance_tests(driver=MyDriver)
"""

from __future__ import annotations

import importlib
import shlex
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from . import report
from .catalog import select
from .client import WireClient
from .faults import ShellFaults
from .inprocess import DriverFactory, InProcessPlugin
from .suite import Config, Context, Faults, Runner
from .verdict import Check, Result


class ConformanceFailure(Exception):
    def __init__(self, result: Result) -> None:
        super().__init__(result.message)
        self.result = result


class ConformanceWarning(UserWarning):
    """The engine tolerates what the plugin did; the text says when it would bite."""


def as_test_outcome(res: Result) -> None:
    """The same verdicts as ``dockvol conformance``, for both kits: fail and error fail the
    test, skip skips it, warn passes with a warning in pytest's warnings summary."""
    if res.outcome in ("fail", "error"):
        raise ConformanceFailure(res)
    if res.outcome == "skip":
        pytest.skip(res.message)
    if res.outcome == "warn":
        for text in [res.message, *res.notes]:
            warnings.warn(ConformanceWarning(f"{res.check.name}: {text}"), stacklevel=1)


def _load(spec: str) -> DriverFactory:
    mod, _, attr = spec.partition(":")
    if not attr:
        raise pytest.UsageError(f"--dockvol-driver {spec!r}: write it as package.module:Class")
    factory: DriverFactory = getattr(importlib.import_module(mod), attr)
    return factory


class _Target:
    """What the suite runs against, started on first use and stopped at the end."""

    def __init__(
        self,
        *,
        socket: str | None,
        driver: DriverFactory | None,
        destructive: bool,
        restart_cmd: str | None,
        kill_cmd: str | None,
        config: Config,
        log_dir: str | None = None,
    ) -> None:
        if (socket is None) == (driver is None):
            raise ValueError("give exactly one of socket (an address) or driver (a class)")
        if destructive and socket is not None and not restart_cmd:
            raise ValueError("destructive checks against a socket need a restart command")
        self.socket, self.driver = socket, driver
        self.destructive, self.restart_cmd, self.kill_cmd = destructive, restart_cmd, kill_cmd
        self.config = config
        self.log_dir = log_dir
        self.plugin: InProcessPlugin | None = None
        self.runner: Runner | None = None
        self._scratch: Path | None = None

    def start(self, tmp: Path) -> Runner:
        if self.runner is not None:
            return self.runner
        faults: Faults | None = None
        if self.driver is not None:
            self.plugin = InProcessPlugin(self.driver, tmp).start()
            client = self.plugin.client
            faults = self.plugin.faults() if self.destructive else None
        else:
            assert self.socket is not None
            client = WireClient(self.socket)
            if self.destructive:
                assert self.restart_cmd is not None
                shell = ShellFaults(client, self.restart_cmd, self.kill_cmd)
                if self.log_dir:
                    shell.log_dir = Path(self.log_dir)
                faults = shell.faults()
        self.runner = Runner(client, self.config, faults)
        return self.runner

    def left_behind(self) -> str:
        """The leftovers section once the run is over ("" when nothing was run)."""
        if self.runner is None:
            return ""
        self.runner.finish()
        return self.runner.leftovers.render()

    def scratch(self) -> Path:
        """A temporary directory for an in-process driver, removed by ``stop``."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="dvconf"))
        return self._scratch

    def stop(self) -> None:
        if self.plugin is not None:
            self.plugin.stop()
            self.plugin = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def conformance_tests(
    *,
    socket: str | None = None,
    driver: DriverFactory | None = None,
    destructive: bool = False,
    restart_cmd: str | None = None,
    kill_cmd: str | None = None,
    only: Sequence[str] = (),
    skip: Sequence[str] = (),
    config: Config | None = None,
) -> type:
    """A pytest test class with one test per check, against ``socket`` (a running plugin's
    address) or ``driver`` (a Driver class, or a callable building one from a root path,
    served in process). Assign it to a module-level name starting with ``Test``."""
    target = _Target(
        socket=socket,
        driver=driver,
        destructive=destructive,
        restart_cmd=restart_cmd,
        kill_cmd=kill_cmd,
        config=config or Config(),
    )
    checks = {c.name: c for c in select(only, skip, destructive=destructive)}

    class TestConformance:
        @pytest.fixture(scope="class")
        @classmethod
        def dockvol_runner(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
            try:
                yield target.start(tmp_path_factory.mktemp("dockvol-conformance"))
            finally:
                left = target.left_behind()
                target.stop()
                target.runner = None
                if left and not left.endswith("nothing"):
                    warnings.warn(ConformanceWarning(left), stacklevel=1)

        @pytest.mark.parametrize("check", list(checks))
        def test_conformance(self, dockvol_runner: Runner, check: str) -> None:
            as_test_outcome(dockvol_runner.run_one(checks[check]))

    return TestConformance


# -- the ``-p dockvol.testing.pytest_plugin`` command-line plugin ---------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("dockvol", "dockvol volume plugin conformance")
    g.addoption("--dockvol-socket", help="run the conformance suite against this plugin socket")
    g.addoption("--dockvol-url", help="... or against this address (unix://, tcp://, https://)")
    g.addoption("--dockvol-driver", help="... or against this Driver class (module:Class)")
    g.addoption("--dockvol-destructive", action="store_true", help="add the crash checks")
    g.addoption("--dockvol-restart-cmd", help="shell command that restarts the plugin")
    g.addoption("--dockvol-kill-cmd", help="shell command that kills the plugin")
    g.addoption("--dockvol-only", default="", help="comma-separated checks to run")
    g.addoption("--dockvol-skip", default="", help="comma-separated checks to skip")
    g.addoption("--dockvol-volumes", type=int, default=1000, help="volumes for the latency check")
    g.addoption("--dockvol-budget", type=float, default=90.0, help="the run's total seconds (90)")
    g.addoption(
        "--dockvol-call-timeout",
        type=float,
        default=10.0,
        help="seconds before a call that does not answer is a hang (10)",
    )
    g.addoption("--dockvol-log-dir", help="where the restarted plugin's output goes")
    g.addoption(
        "--dockvol-opt",
        action="append",
        default=[],
        metavar="K=V",
        help="an option for every volume the kit creates; {name} is replaced by the volume's "
        "name (repeatable)",
    )


_KEY = pytest.StashKey[_Target]()


def _opts(values: list[str]) -> dict[str, str]:
    out = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not sep or not k:
            raise ValueError(f"--dockvol-opt {v!r}: write it as key=value")
        out[k] = val
    return out


def _names(text: str) -> list[str]:
    return [n for part in shlex.split(text.replace(",", " ")) for n in [part.strip()] if n]


def pytest_configure(config: pytest.Config) -> None:
    opt = config.getoption
    addr = opt("--dockvol-socket") or opt("--dockvol-url")
    spec = opt("--dockvol-driver")
    if not addr and not spec:
        return
    try:
        config.stash[_KEY] = _Target(
            socket=addr,
            driver=_load(spec) if spec else None,
            destructive=opt("--dockvol-destructive"),
            restart_cmd=opt("--dockvol-restart-cmd"),
            kill_cmd=opt("--dockvol-kill-cmd"),
            config=Config(
                volumes=opt("--dockvol-volumes"),
                opts=_opts(opt("--dockvol-opt")) or None,
                budget=opt("--dockvol-budget"),
                call_timeout=opt("--dockvol-call-timeout"),
            ),
            log_dir=opt("--dockvol-log-dir"),
        )
    except ValueError as e:
        raise pytest.UsageError(f"dockvol conformance: {e}") from e


class ConformanceItem(pytest.Item):
    def __init__(self, *, check: Check[Context], target: _Target, **kw: Any) -> None:
        super().__init__(**kw)
        self.check = check
        self.target = target

    def runtest(self) -> None:
        as_test_outcome(self.target.start(self.target.scratch()).run_one(self.check))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ConformanceFailure):
            return report.row(excinfo.value.result)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[str, int, str]:
        return "dockvol-conformance", 0, f"conformance: {self.check.name}"


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    target = config.stash.get(_KEY, None)
    if target is None:
        return
    opt = config.getoption
    try:
        checks = select(
            _names(opt("--dockvol-only")),
            _names(opt("--dockvol-skip")),
            destructive=target.destructive,
        )
    except KeyError as e:
        raise pytest.UsageError(str(e.args[0])) from e
    for chk in checks:
        items.append(
            ConformanceItem.from_parent(
                session, name=f"conformance[{chk.name}]", check=chk, target=target
            )
        )


def pytest_terminal_summary(terminalreporter: Any, exitstatus: Any, config: pytest.Config) -> None:
    target = config.stash.get(_KEY, None)
    if target is not None:
        left = target.left_behind()
        if left:
            terminalreporter.write_sep("-", "dockvol conformance")
            terminalreporter.write_line(left)


def pytest_unconfigure(config: pytest.Config) -> None:
    target = config.stash.get(_KEY, None)
    if target is not None:
        target.stop()
