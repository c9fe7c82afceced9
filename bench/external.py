"""Other benchmarks in bench/ (block driver, cluster), each run as ``python -m bench.NAME``
in a subprocess and shown in its own section. A missing script is noted; a failing one is
recorded without failing the run.

Contract for those scripts: print one JSON object on stdout (or write it to the path given by
``--json PATH`` if they take that option). Arguments for a quick run are listed in ``QUICK_ARGS``;
if a script refuses them (argparse exit status 2) it is run again with its defaults.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent


#: Smaller runs for ``--quick`` (the scripts' own options).
QUICK_ARGS = {
    "block_bench.py": ["--repeats", "3"],
    "cluster_bench.py": ["--volumes", "20", "--repeats", "5", "--ttls", "2", "--fence-runs", "2"],
}


#: Full runs: the block driver's engine operations against the built-in driver too.
FULL_ARGS = {"block_bench.py": ["--engine"]}


def run(script: str, quick: bool, timeout: float) -> dict[str, Any]:
    path = BENCH_DIR / script
    if not path.exists():
        return {"status": "absent", "script": script}
    module = f"bench.{path.stem}"
    args = QUICK_ARGS.get(script, []) if quick else FULL_ARGS.get(script, [])
    t0 = time.perf_counter()
    try:
        r = _run(module, args, timeout)
        if r.returncode == 2 and args:  # the script's options changed: use its defaults
            r = _run(module, [], timeout - (time.perf_counter() - t0))
    except subprocess.TimeoutExpired:
        return {"status": "failed", "script": script, "error": f"timed out after {timeout:.0f} s"}
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
    try:
        data = json.loads(r.stdout)
    except ValueError as exc:
        return {
            "status": "failed",
            "script": script,
            "error": f"output is not JSON ({exc})",
            "output": r.stdout[-2000:],
            "seconds": seconds,
        }
    return {"status": "ok", "script": script, "result": data, "seconds": seconds}


def _run(module: str, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=BENCH_DIR.parent,
        capture_output=True,
        text=True,
        timeout=max(1.0, timeout),
    )


def records(data: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Flatten nested results into (name, {field: scalar}) records, for tables."""
    if isinstance(data, dict):
        scalars = {k: v for k, v in data.items() if _scalar(v)}
        out = [(path or "(top)", scalars)] if scalars else []
        for k, v in data.items():
            if not _scalar(v):
                out += records(v, f"{path} / {k}" if path else str(k))
        return out
    if isinstance(data, list):
        out = []
        for i, v in enumerate(data):
            out += records(v, f"{path} [{i}]")
        return out
    return [(path or "(top)", {"value": data})]


def _scalar(v: Any) -> bool:
    return (
        v is None
        or isinstance(v, str | int | float | bool)
        or (isinstance(v, list) and all(isinstance(x, str | int | float | bool) for x in v))
    )
