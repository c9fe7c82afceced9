"""The pytest integration: ``-p dockvol.testing`` (or ``.pytest_plugin``) against a socket, and the
two-line test class against a Driver in process (crashes included)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import Stub


def inner_pytest(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A separate pytest run, as a driver author would start it, outside this repo's config."""
    (where / "pytest.ini").write_text("[pytest]\n")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_plugin_runs_selected_checks_against_a_socket(stub: Stub, tmp_path: Path) -> None:
    r = inner_pytest(
        tmp_path,
        "-p",
        "dockvol.testing",
        "--dockvol-socket",
        str(stub.sock),
        "--dockvol-only",
        "activate,capabilities,get-not-found",
    )
    assert r.returncode == 0, r.stdout
    assert "3 passed" in r.stdout
    assert "conformance[get-not-found]" in r.stdout


def test_plugin_failure_explains_the_defect(short_dir: Path, tmp_path: Path) -> None:
    stub = Stub(short_dir, "activate-network").start()
    try:
        r = inner_pytest(
            tmp_path,
            "-p",
            "dockvol.testing.pytest_plugin",
            "--dockvol-socket",
            str(stub.sock),
            "--dockvol-only",
            "activate,capabilities",
        )
    finally:
        stub.stop()
    assert r.returncode == 1, r.stdout
    assert "1 failed, 1 passed" in r.stdout
    assert "Implements is ['NetworkDriver']" in r.stdout and "fix:" in r.stdout


def test_plugin_gives_the_same_verdicts_a_tolerated_quirk_passes_with_a_warning(
    short_dir: Path, tmp_path: Path
) -> None:
    stub = Stub(short_dir, "tolerated-quirks").start()
    try:
        r = inner_pytest(
            tmp_path,
            "-p",
            "dockvol.testing",
            "--dockvol-socket",
            str(stub.sock),
            "--dockvol-only",
            "error-replies,unmount-unknown-id,create-idempotent,empty-body",
        )
    finally:
        stub.stop()
    assert r.returncode == 0, r.stdout
    assert "4 passed" in r.stdout
    assert "ConformanceWarning: unmount-unknown-id: Unmount of an unknown ID fails" in r.stdout
    assert "it bites with callers that are not the engine" in r.stdout
    assert "left behind: nothing" in r.stdout


def test_plugin_serves_a_driver_class_in_process(tmp_path: Path) -> None:
    r = inner_pytest(
        tmp_path,
        "-p",
        "dockvol.testing.pytest_plugin",
        "--dockvol-driver",
        "dockvol.drivers.local:LocalDriver",
        "--dockvol-only",
        "reply-shape,remove-while-mounted,mount-concurrent",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 passed" in r.stdout


def test_two_lines_run_the_whole_suite_on_a_driver_in_process(tmp_path: Path) -> None:
    (tmp_path / "test_mydriver.py").write_text(
        "from dockvol.testing import Config, conformance_tests\n"
        "from dockvol.drivers.local import LocalDriver\n"
        "TestLocal = conformance_tests(driver=LocalDriver, destructive=True,\n"
        "                              config=Config(volumes=200, idle_seconds=1))\n"
    )
    r = inner_pytest(tmp_path, "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    from dockvol.testing import CHECKS

    assert f"{len(CHECKS) - 1} passed, 1 skipped" in r.stdout  # no graceful stop in process
    assert "test_conformance[crash-during-burst]" in r.stdout
