"""Fixtures for engine tests: one private engine per test module, with busybox and dockvol.

The engine discovers the plugin as ``dockvol`` (its socket is ``engine.plugins_dir /
"dockvol.sock"``). If the engine cannot start, the fixture raises: the tests fail, never skip.

The ``engine`` fixture is parametrized over both engines (ids ``20.10`` and ``26``): every test
that uses it runs on each, one module at a time per engine. A test whose engine behaves
differently asserts each engine's own behaviour (``engine.release``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.engine import ENGINE_VERSIONS, Engine
from tests.support.plugin import Plugin

PLUGIN = "dockvol"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=ENGINE_VERSIONS)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    eng = Engine.start(version=request.param)
    try:
        eng.ensure_busybox()
        yield eng
    finally:
        eng.stop()


@pytest.fixture(scope="module")
def plugin_base(engine: Engine) -> Iterator[Path]:
    """Where the module's plugin keeps its files: ``vols/root`` (--root), ``state/`` (--state).

    One per engine (it depends on ``engine``): each engine's run starts from an empty plugin."""
    base = Path(tempfile.mkdtemp(prefix="dvp", dir="/tmp"))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def plugin(engine: Engine, plugin_base: Path) -> Iterator[Plugin]:
    root = plugin_base / "vols" / "root"
    state = plugin_base / "state" / "db"
    p = Plugin.start(engine.plugins_dir / f"{PLUGIN}.sock", root, state, name=PLUGIN)
    try:
        yield p
    finally:
        # A test may have left the plugin dead: bring it back so the engine can unmount
        # (a dead plugin's socket makes every engine call to it retry for ~15 s).
        if p.proc is None or p.proc.poll() is not None:
            with contextlib.suppress(RuntimeError):
                p.launch()
        for cid in engine.docker("ps", "-aq", check=False).stdout.split():
            engine.docker("rm", "-f", cid, check=False)
        p.stop()


@pytest.fixture
def names(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Unique, readable volume/container names for one test."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40].strip("-")

    def make(suffix: str) -> str:
        return f"{base}-{suffix}"

    return make


@pytest.fixture
def containers(engine: Engine) -> Iterator[list[str]]:
    """Names appended here are force-removed after the test, whatever happened."""
    made: list[str] = []
    yield made
    for name in reversed(made):
        engine.docker("rm", "-f", name, check=False)


def start_slow_plugin(sock: Path, base: Path, name: str | None = None) -> Plugin:
    """``dockvol serve`` with tests/engine/slowdriver.py: the operation named by a volume's
    ``-o block=OP`` waits until ``slowdriver.open_gate(plugin.root)``."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return Plugin.start(
        sock, base / "root", base / "state" / "db",
        "--driver", "tests.engine.slowdriver:SlowDriver", name=name, env={"PYTHONPATH": path},
    )  # fmt: skip


@contextlib.contextmanager
def _stopping(p: Plugin) -> Iterator[Plugin]:
    from . import slowdriver

    try:
        yield p
    finally:
        slowdriver.open_gate(p.root)  # never leave an operation blocked, whatever failed
        p.stop()


@pytest.fixture
def slow_plugin() -> Iterator[Plugin]:
    """The slow test driver on a socket no engine knows."""
    base = Path(tempfile.mkdtemp(prefix="dvs", dir="/tmp"))  # short: socket path limit
    try:
        with _stopping(start_slow_plugin(base / "slow.sock", base)) as p:
            yield p
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def engine_slow_plugin(engine: Engine, plugin_base: Path) -> Iterator[Plugin]:
    """The slow test driver as plugin ``dvslow`` of the module's engine."""
    sock = engine.plugins_dir / "dvslow.sock"
    with _stopping(start_slow_plugin(sock, plugin_base / "dvslow", name="dvslow")) as p:
        yield p
