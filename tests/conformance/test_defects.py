"""The kit against the stub plugin: correct, it passes everything; with one known defect,
exactly the checks named for that defect fail and every other check passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockvol.testing import CHECKS, Config, Runner, ShellFaults, select
from dockvol.testing.suite import Result

from .conftest import Stub
from .stubplugin import DEFECTS

# Small enough to keep the suite quick, large enough for the budgets to matter to slow-get.
# Budgets are generous for a busy CI host: the slow-get defect is far slower (0.5 s per Get).
CONFIG = Config(volumes=100, get_p99_ms=250, idle_seconds=2.5, restart_timeout=20)


def run_suite(stub: Stub, destructive: bool) -> dict[str, Result]:
    shell = ShellFaults(stub.client, stub.command, timeout=20, log_dir=stub.dir)
    faults = shell.faults() if destructive else None
    runner = Runner(stub.client, CONFIG, faults)
    runner.run(select(destructive=destructive))
    return runner.results


def failing(results: dict[str, Result]) -> set[str]:
    return {n for n, r in results.items() if r.outcome in ("fail", "error")}


def test_every_check_has_a_defect_that_trips_it() -> None:
    covered = set().union(*DEFECTS.values())
    assert covered == set(CHECKS), f"checks without a broken plugin: {set(CHECKS) - covered}"


def test_correct_stub_passes_everything_including_crashes(short_dir: Path) -> None:
    stub = Stub(short_dir).start()
    try:
        results = run_suite(stub, destructive=True)
    finally:
        stub.stop()
    assert set(results) == set(CHECKS)
    bad = {n: r.message for n, r in results.items() if r.outcome != "pass"}
    assert bad == {}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_defect_is_reported_by_its_check_only(short_dir: Path, defect: str) -> None:
    expected = DEFECTS[defect]
    destructive = any(CHECKS[n].destructive for n in expected)
    stub = Stub(short_dir, defect).start()
    try:
        results = run_suite(stub, destructive)
    finally:
        stub.stop()
    assert failing(results) == expected, {
        n: r.message for n, r in results.items() if r.outcome != "pass"
    }
    for name in expected:  # the report says why, what to fix and where the engine does it
        r = results[name]
        assert r.message and r.check.why and r.check.fix and r.check.engine
    # Dependants of a failed check are skipped, never failed; everything else passes.
    others = {n: r.outcome for n, r in results.items() if n not in expected}
    assert set(others.values()) <= {"pass", "skip"}, others
    skipped = {n for n, o in others.items() if o == "skip"}
    assert skipped <= {"mount-same-id-counted"}, skipped


def test_kit_leaves_no_volumes_behind(stub: Stub) -> None:
    Runner(stub.client, CONFIG).run(select())
    reply = stub.client.call("list", {})
    assert reply.status == 200
    assert [v["Name"] for v in reply.json["Volumes"]] == []
