"""The kit against the stub plugin: correct, it passes everything; with one known defect,
exactly the checks named for that defect fail; with a quirk the engine tolerates, the named
checks warn, nothing fails and the run passes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dockvol.testing import CHECKS, Config, Runner, ShellFaults, select
from dockvol.testing.verdict import Result

from .conftest import Stub
from .stubplugin import DEFECTS, QUIRKS, SKIPS

# Small enough to keep the suite quick, large enough for the budgets to matter to slow-get.
# Budgets are generous for a busy CI host: the slow-get defect is far slower (0.5 s per Get).
CONFIG = Config(
    volumes=100, get_p99_ms=250, idle_seconds=2.5, restart_timeout=20, call_timeout=4, budget=120
)


def runner_for(stub: Stub, destructive: bool, config: Config = CONFIG) -> Runner:
    shell = ShellFaults(stub.client, stub.command, timeout=20, log_dir=stub.dir)
    return Runner(stub.client, config, shell.faults() if destructive else None)


def run_suite(stub: Stub, destructive: bool, config: Config = CONFIG) -> dict[str, Result]:
    runner = runner_for(stub, destructive, config)
    runner.run(select(destructive=destructive))
    return runner.results


def with_outcome(results: dict[str, Result], *outcomes: str) -> set[str]:
    return {n for n, r in results.items() if r.outcome in outcomes}


def details(results: dict[str, Result]) -> dict[str, str]:
    return {n: f"{r.outcome}: {r.message}" for n, r in results.items() if r.outcome != "pass"}


def test_every_check_has_a_plugin_that_trips_it() -> None:
    covered = set().union(*DEFECTS.values(), *QUIRKS.values())
    assert covered == set(CHECKS), f"checks without a broken plugin: {set(CHECKS) - covered}"


def test_correct_stub_passes_everything_including_crashes(short_dir: Path) -> None:
    stub = Stub(short_dir).start()
    try:
        results = run_suite(stub, destructive=True)
    finally:
        stub.stop()
    assert set(results) == set(CHECKS)
    assert details(results) == {}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_defect_is_reported_by_its_check_only(short_dir: Path, defect: str) -> None:
    expected = DEFECTS[defect]
    destructive = any(CHECKS[n].destructive for n in expected)
    stub = Stub(short_dir, defect).start()
    try:
        results = run_suite(stub, destructive)
    finally:
        stub.stop()
    assert with_outcome(results, "fail", "error") == expected, details(results)
    for name in expected:  # the report says why, what to fix and where the engine does it
        r = results[name]
        assert r.message and r.check.why and r.check.fix and r.check.engine
    # No warnings: a defect is a failure, not a quirk. What cannot be observed is skipped.
    others = {n: r.outcome for n, r in results.items() if n not in expected}
    assert set(others.values()) <= {"pass", "skip"}, details(results)
    assert with_outcome(results, "skip") <= SKIPS.get(defect, set()), details(results)


@pytest.mark.parametrize("quirk", sorted(QUIRKS))
def test_tolerated_quirk_warns_and_the_run_passes(short_dir: Path, quirk: str) -> None:
    stub = Stub(short_dir, quirk).start()
    try:
        results = run_suite(stub, destructive=False)
    finally:
        stub.stop()
    assert with_outcome(results, "fail", "error") == set(), details(results)
    assert with_outcome(results, "warn") == QUIRKS[quirk], details(results)
    assert all(r.ok for r in results.values())
    for name in QUIRKS[quirk]:  # each warning says when it would bite
        assert "it bites" in results[name].message, results[name].message
    assert with_outcome(results, "skip") <= SKIPS.get(quirk, set()), details(results)


def test_a_deadlock_is_named_fast_and_the_run_stops_cleanly(short_dir: Path) -> None:
    stub = Stub(short_dir, "deadlock-mounts").start()
    try:
        runner = runner_for(stub, destructive=False)
        t0 = time.monotonic()
        runner.run(select(only=["answers-while-mounting", "list-consistency", "latency"]))
        elapsed = time.monotonic() - t0
        caps = stub.client.call("caps", timeout=5)
    finally:
        stub.stop()
    res = runner.results["answers-while-mounting"]
    assert res.outcome == "fail"
    assert res.message.startswith("hang: "), res.message
    assert "while 4 different volumes were mounted at once" in res.message
    assert "still answering: Capabilities" in res.message
    assert "not answering: List, Get" in res.message
    assert runner.results["list-consistency"].outcome == "pass"  # it ran before the hang
    latency = runner.results["latency"]
    assert latency.outcome == "skip" and "hung in answers-while-mounting" in latency.message
    assert caps.status == 200  # the kit did not confuse a deadlock with a dead plugin
    # Named within a few call timeouts, not the engine's minutes.
    assert elapsed < 6 * CONFIG.call_timeout + 10, elapsed
    # What the kit could not undo is listed, with how to undo it.
    left = runner.leftovers.render()
    assert "volume 'dvconf-" in left and "the plugin stopped answering" in left
    assert f"dockvol call --socket {stub.sock} rm " in left


def test_a_slow_list_is_reported_within_the_time_budget(short_dir: Path) -> None:
    config = Config(volumes=100, idle_seconds=1, call_timeout=4, budget=25)
    stub = Stub(short_dir, "slow-list").start()
    try:
        runner = runner_for(stub, destructive=False, config=config)
        t0 = time.monotonic()
        runner.run(select(destructive=False))
        elapsed = time.monotonic() - t0
    finally:
        stub.stop()
    assert elapsed < config.budget + 10, elapsed
    latency = runner.results["latency"]
    assert latency.outcome == "fail", latency.message
    assert latency.message.startswith("List p99"), latency.message
    budget_skips = [
        r for n, r in runner.results.items() if "time budget" in r.message and n != "latency"
    ]
    assert budget_skips, "a run this slow must run out of budget"
    assert all(r.outcome == "skip" for r in budget_skips), details(runner.results)


def test_default_budget_reports_a_badly_slow_plugin_within_90_seconds() -> None:
    c = Config()
    assert c.budget <= 90 and c.call_timeout < c.budget


def test_colliding_names_are_reported(short_dir: Path) -> None:
    stub = Stub(short_dir, "paths-from-names").start()
    try:
        results = run_suite(stub, destructive=False)
    finally:
        stub.stop()
    msg = results["names"].message
    assert "x/../" in msg and "mounted at one path" in msg, msg


def test_names_merged_by_a_restart_are_reported(short_dir: Path) -> None:
    stub = Stub(short_dir, "names-from-paths").start()
    try:
        runner = runner_for(stub, destructive=True)
        runner.run(select(only=["names-restart"], destructive=True))
    finally:
        stub.stop()
    res = runner.results["names-restart"]
    assert res.outcome == "fail" and "after a restart" in res.message, res.message


def test_a_name_run_by_a_shell_is_reported(short_dir: Path) -> None:
    stub = Stub(short_dir, "shell-names").start()
    try:
        runner = runner_for(stub, destructive=False)
        runner.run(select(only=["names-shell"]))
    finally:
        stub.stop()
    res = runner.results["names-shell"]
    assert res.outcome == "fail", res.message
    assert "ran a shell command hidden in a volume name ($(...))" in res.message
    assert not list(Path("/tmp").glob("dvconf-inj-*/m*")), "the kit removes its markers"


def test_a_volume_the_plugin_cannot_remove_is_left_behind_with_how_to_remove_it(
    short_dir: Path,
) -> None:
    stub = Stub(short_dir, "remove-space-fails").start()
    try:
        runner = runner_for(stub, destructive=False)
        runner.run(select(only=["names"]))
        listed = [v["Name"] for v in stub.client.call("list", {}).json["Volumes"]]
    finally:
        stub.stop()
    res = runner.results["names"]
    assert res.outcome == "fail" and "docker volume rm cannot remove it" in res.message
    assert listed and all(" " in n for n in listed), listed  # only what could not be removed
    left = runner.leftovers
    assert set(left.volumes) == set(listed)
    assert "Remove failed" in left.render() and "rm 'dvconf-" in left.render()


def test_per_volume_options_carry_the_volume_name(short_dir: Path) -> None:
    stub = Stub(short_dir)
    stub.args += ["--require-opt", "remote=/srv/{name}"]
    stub.start()
    try:
        only = ["reply-shape", "names", "create-idempotent", "list-consistency"]
        fixed = Runner(stub.client, Config(opts={"remote": "/srv/same"}))
        fixed.run(select(only=only))
        per_volume = Runner(stub.client, Config(opts={"remote": "/srv/{name}"}))
        per_volume.run(select(only=only))
    finally:
        stub.stop()
    assert fixed.results["reply-shape"].outcome == "fail"
    assert "this volume needs" in fixed.results["reply-shape"].message
    assert {n: r.outcome for n, r in per_volume.results.items()} == dict.fromkeys(only, "pass")


def test_kit_leaves_no_volumes_behind(stub: Stub) -> None:
    runner = Runner(stub.client, CONFIG)
    runner.run(select())
    reply = stub.client.call("list", {})
    assert reply.status == 200
    assert [v["Name"] for v in reply.json["Volumes"]] == []
    assert runner.leftovers.empty, runner.leftovers.render()
