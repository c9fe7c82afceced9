"""``python -m bench --quick`` runs end to end through a real engine and writes its report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECTIONS = (
    "# Benchmarks",
    "## Summary: targets",
    "## Engine operations",
    "### Through the docker CLI",
    "### Through the engine's API",
    "## On the plugin's socket",
    "### Start and memory",
    "## Block driver",
    "## Cluster",
    "## Method",
)


@pytest.mark.engine
def test_quick_bench_writes_report_with_all_sections(tmp_path: Path) -> None:
    out = tmp_path / "BENCH.md"
    r = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--only", "engine,socket"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    for heading in SECTIONS:
        assert heading in text, f"missing {heading!r} in:\n{text}"
    assert "This section failed" not in text, text
    for op in ("volume create", "volume inspect", "volume ls", "volume rm", "docker run"):
        assert op in text
    chart = tmp_path / "BENCH-ratios.png"
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "![ratios](BENCH-ratios.png)" in text
