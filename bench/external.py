"""Other benchmarks in bench/ (block driver, cluster) run as subprocesses, each in its own
section. A missing script is noted; a failing one is recorded without failing the run.

Contract for those scripts: ``python bench/NAME.py --json PATH [--quick]`` writes one JSON
object to PATH (printing it on stdout instead is accepted too). Best rendered as::

    {"title": "...", "rows": [{"column": value, ...}, ...], "notes": ["...", ...]}

Any other JSON object is shown as it is.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent


def run(script: str, quick: bool, timeout: float) -> dict[str, Any]:
    path = BENCH_DIR / script
    if not path.exists():
        return {"status": "absent", "script": script}
    with tempfile.TemporaryDirectory(prefix="dvext") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(path), "--json", str(out), *(["--quick"] if quick else [])]
        t0 = time.perf_counter()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {
                "status": "failed",
                "script": script,
                "error": f"timed out after {timeout:.0f} s",
            }
        seconds = time.perf_counter() - t0
        if r.returncode != 0:
            tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-15:])
            return {
                "status": "failed",
                "script": script,
                "error": f"exit status {r.returncode}",
                "output": tail,
                "seconds": seconds,
            }
        text = out.read_text() if out.exists() else r.stdout
        try:
            data = json.loads(text)
        except ValueError as exc:
            return {
                "status": "failed",
                "script": script,
                "error": f"output is not JSON ({exc})",
                "output": text[-2000:],
                "seconds": seconds,
            }
    return {"status": "ok", "script": script, "result": data, "seconds": seconds}
