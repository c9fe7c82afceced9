"""The CSI conformance kit: dockvol's CSI front end (local, shared, block) passes it with no
warning; a small CSI plugin of our own (csistub.py) passes it correct, and fails exactly the
check written for each defect; the CLI and the pytest entry point give the same verdicts."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from dockvol.drivers.local import LocalDriver
from dockvol.testing import report
from dockvol.testing.csi import SUITE, Config, csi_conformance_tests, run
from dockvol.testing.csi.docs import COMMAND, updated
from dockvol.testing.verdict import Result
from tests.conformance.csistub import DEFECTS, QUIRKS, StubServer
from tests.csi.conftest import unmount_all_under
from tests.support.plugin import Plugin

REPO = Path(__file__).resolve().parents[2]
ALL = [c.name for c in SUITE]
#: What dockvol's CSI front end does not offer, by driver: those checks skip, with the reason.
DOCKVOL_SKIPS = {
    "local": {"csi-expand-volume", "csi-stage-idempotent"},
    "shared": {"csi-expand-volume", "csi-stage-idempotent"},
    "block": {"csi-stage-idempotent"},
}
#: The check each stub defect must fail (every other check passes).
FAILS = {
    "create-not-idempotent": {"csi-create-idempotent"},
    "delete-unknown-not-found": {"csi-delete-idempotent"},
    "publish-no-mount": {"csi-publish-mounts"},
    "unpublish-leaves-mount": {"csi-unpublish"},
    "list-hangs": {"csi-list-volumes", "csi-lifecycle"},
    "delete-refuses": {"csi-delete-idempotent", "csi-lifecycle"},
}
#: Checks whose key observation needs what the defect breaks: they skip, saying why.
SKIPS = {"publish-no-mount": {"csi-publish-readonly", "csi-unpublish"}}


def outcomes(results: list[Result]) -> dict[str, str]:
    return {r.check.name: r.outcome for r in results}


@pytest.fixture
def kit_dir() -> Iterator[Path]:
    # Short (unix socket paths are limited to 107 bytes); every mount under it undone after.
    base = Path(tempfile.mkdtemp(prefix="dvk", dir="/tmp"))
    yield base
    unmount_all_under(base)
    subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)


def _detach_loops(base: Path) -> None:
    out = subprocess.run(["losetup", "-l", "-n", "-O", "NAME,BACK-FILE"],
                         capture_output=True, text=True).stdout  # fmt: skip
    for line in out.splitlines():
        dev, _, back = line.strip().partition(" ")
        if back.strip().startswith(str(base)):
            subprocess.run(["losetup", "-d", dev], check=False)


@pytest.mark.parametrize("driver", ["local", "shared", "block"])
def test_dockvol_csi_front_end_passes_with_no_warning(kit_dir: Path, driver: str) -> None:
    (kit_dir / "root").mkdir()  # shared never creates its root: a plain directory here
    sock = kit_dir / "csi.sock"
    plugin = Plugin.start(
        kit_dir / "p.sock", kit_dir / "root", kit_dir / "state",
        "--driver", driver, "--csi-endpoint", f"unix://{sock}", name=f"dvk-{driver}",
    )  # fmt: skip
    work = kit_dir / "kit"
    try:
        t0 = time.monotonic()
        results, runner = run(f"unix://{sock}", config=Config(staging_dir=work, target_dir=work))
        seconds = time.monotonic() - t0
        text = report.table(results, leftovers=runner.leftovers)  # type: ignore[arg-type]
        got = outcomes(results)
        assert {n for n, o in got.items() if o != "pass"} == DOCKVOL_SKIPS[driver], text
        assert all(o == "skip" for n, o in got.items() if n in DOCKVOL_SKIPS[driver]), text
        assert runner.leftovers.empty, text
        # What the kit made it deleted: the service (seen through the Docker front end) has
        # no volume left.
        status, reply = plugin.call("VolumeDriver.List", {})
        assert status == 200 and reply["Volumes"] == [], reply
        print(f"{driver}: {len(results)} checks in {seconds:.2f} s")
    finally:
        assert plugin.stop() == 0
        if driver == "block":
            _detach_loops(kit_dir)


def test_correct_stub_passes_every_check(kit_dir: Path) -> None:
    with StubServer(kit_dir) as stub:
        results, runner = run(
            stub.endpoint, config=Config(staging_dir=kit_dir / "kit", target_dir=kit_dir / "kit")
        )
    text = report.table(results, leftovers=runner.leftovers)  # type: ignore[arg-type]
    assert set(outcomes(results).values()) == {"pass"}, text
    assert runner.leftovers.empty, text
    assert list((kit_dir / "root").iterdir()) == []  # every volume deleted


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_each_stub_defect_fails_exactly_its_check(kit_dir: Path, defect: str) -> None:
    config = Config(staging_dir=kit_dir / "kit", target_dir=kit_dir / "kit", call_timeout=1.0)
    with StubServer(kit_dir, defect) as stub:
        results, runner = run(stub.endpoint, config=config)
        text = report.table(results, leftovers=runner.leftovers)  # type: ignore[arg-type]
    got = outcomes(results)
    assert {n for n, o in got.items() if o == "fail"} == FAILS[defect], text
    assert {n for n, o in got.items() if o == "skip"} == SKIPS.get(defect, set()), text
    assert not [n for n, o in got.items() if o in ("warn", "error")], text
    by_name = {r.check.name: r for r in results}
    if defect == "list-hangs":  # named as a hang of that RPC; the other calls still answer
        msg = by_name["csi-list-volumes"].message
        assert "hang: csi.v1.ListVolumes did not answer within 1s" in msg, msg
        assert "still answering: GetPluginInfo, Probe, NodeGetInfo" in msg, msg
    if defect == "unpublish-leaves-mount":  # the mount it left is listed, with the command
        assert runner.leftovers.mounts, text
        assert "umount " in runner.leftovers.render()
        assert all(p.startswith(str(kit_dir / "kit")) for p in runner.leftovers.mounts)
    if defect == "delete-refuses":  # every volume the kit made is listed, with the command
        assert set(runner.leftovers.volumes) == set(stub.plugin.capacity), text
        assert len(runner.leftovers.volumes) >= 10, text
        assert "csi.v1.Controller/DeleteVolume" in runner.leftovers.render()
    if defect == "delete-unknown-not-found":
        assert "expected OK, got NOT_FOUND" in by_name["csi-delete-idempotent"].message


@pytest.mark.parametrize("quirk", sorted(QUIRKS))
def test_a_tolerated_quirk_warns_and_the_run_is_conformant(kit_dir: Path, quirk: str) -> None:
    with StubServer(kit_dir, quirk) as stub:
        results, _ = run(
            stub.endpoint, config=Config(staging_dir=kit_dir / "kit", target_dir=kit_dir / "kit")
        )
    got = outcomes(results)
    assert {n for n, o in got.items() if o != "pass"} == {"csi-create-no-name"}
    (warned,) = [r for r in results if r.outcome == "warn"]
    assert "INTERNAL" in warned.message and "it bites" in warned.message, warned.message
    assert "conformant" in report.summary(results) and all(r.ok for r in results)


def test_the_time_budget_skips_what_does_not_fit(kit_dir: Path) -> None:
    # ListVolumes never answers; the budget ends before its call deadline would: the check is
    # cut short by the budget (a skip that says so), not reported as the plugin's hang.
    config = Config(
        staging_dir=kit_dir / "kit", target_dir=kit_dir / "kit", call_timeout=30.0, budget=1.0
    )
    t0 = time.monotonic()
    with StubServer(kit_dir, "list-hangs") as stub:
        results, runner = run(stub.endpoint, config=config)
    assert time.monotonic() - t0 < 10  # far below one call deadline
    got = outcomes(results)
    assert got["csi-list-volumes"] == "skip" and "fail" not in got.values()
    late = [r for r in results if r.outcome == "skip"]
    assert all("time budget of 1s is used up" in r.message for r in late), late
    assert runner.leftovers.empty


def test_a_plugin_that_goes_away_stops_the_run(kit_dir: Path) -> None:
    with StubServer(kit_dir) as stub:
        endpoint = stub.endpoint
    results, _ = run(
        endpoint,
        config=Config(staging_dir=kit_dir / "kit", target_dir=kit_dir / "kit", call_timeout=2.0),
    )
    first, *rest = results
    assert first.outcome == "fail" and "unreachable" in first.message, first.message
    assert rest and all(r.outcome == "skip" and "unreachable" in r.message for r in rest)


def test_cli_reports_a_defect_in_text_json_and_junit(kit_dir: Path) -> None:
    with StubServer(kit_dir, "delete-unknown-not-found") as stub:
        out = subprocess.run(
            [sys.executable, "-m", "dockvol", "conformance", "--csi-endpoint", stub.endpoint,
             "--csi-staging-dir", str(kit_dir / "kit"), "--csi-target-dir", str(kit_dir / "kit"),
             "--json", str(kit_dir / "r.json"), "--junit", str(kit_dir / "r.xml")],
            capture_output=True, text=True, timeout=120, cwd=REPO,
        )  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    assert "csi-delete-idempotent    FAIL" in out.stdout
    assert "docs/conformance.md#csi-delete-idempotent" in out.stdout
    assert "left behind: nothing" in out.stdout
    data = json.loads((kit_dir / "r.json").read_text())
    assert data["ok"] is False and data["summary"]["fail"] == 1
    failed = ET.parse(kit_dir / "r.xml").getroot().findall("testcase/failure/..")
    assert [c.get("name") for c in failed] == ["csi-delete-idempotent"]


def test_cli_unreachable_plugin_is_exit_3(kit_dir: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dockvol", "conformance", "--csi-endpoint",
         f"unix://{kit_dir}/none.sock", "--call-timeout", "2"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 3, out.stderr
    assert "cannot reach the CSI plugin" in out.stderr and "Traceback" not in out.stderr


def test_docs_csi_section_is_current() -> None:
    page = (REPO / "docs" / "conformance.md").read_text()
    assert updated(page, SUITE) == page, f"docs/conformance.md is not current: run {COMMAND}"


# The pytest entry point, as a driver author writes it: one test per CSI check, in process.
# The local driver neither stages nor resizes: those two checks would only skip.
TestLocalDriverCsi = csi_conformance_tests(
    driver=LocalDriver, skip=("csi-expand-volume", "csi-stage-idempotent")
)
