"""``python -m bench``: measure dockvol against the engine's built-in driver; write BENCHMARKS.md.

One run, about ten minutes in full; ``--quick`` is a smoke run of a minute or two (small
sizes, few repetitions: its numbers are not comparable with the targets).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from . import common, engine_bench, external, report, socket_bench, stats

SECTIONS = ("engine", "socket", "csi", "swarm", "block", "cluster")
EXTERNAL = {"block": "block_bench.py", "cluster": "cluster_bench.py"}


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("dockvol", "uvloop", "msgspec", "grpcio"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    commit = subprocess.run(
        ["git", "-C", str(common.REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "commit": commit or "unknown",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument(
        "--quick", action="store_true", help="a smoke run: small sizes, few repetitions"
    )
    ap.add_argument("--out", type=Path, default=common.REPO / "BENCHMARKS.md")
    ap.add_argument(
        "--chart",
        type=Path,
        help="PNG of the ratios (default: bench/ratios.png "
        "beside the default --out, else OUT's name with -ratios.png)",
    )
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="only write the report from saved --json results",
    )
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"sections: {','.join(SECTIONS)}")
    ap.add_argument(
        "--external-timeout",
        type=float,
        default=None,
        help="seconds for each of bench/block_bench.py, bench/cluster_bench.py",
    )
    a = ap.parse_args(argv)
    only = [s for s in a.only.split(",") if s]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    out: Path = a.out.absolute()
    chart: Path = a.chart or (
        common.REPO / "bench" / "ratios.png"
        if out == (common.REPO / "BENCHMARKS.md")
        else out.with_name(out.stem + "-ratios.png")
    )
    ext_timeout = a.external_timeout or (240.0 if a.quick else 300.0)
    if a.render:
        out.write_text(report.markdown(json.loads(a.render.read_text()), out, chart))
        print(f"bench: wrote {out} and {chart} from {a.render}", file=sys.stderr)
        return 0

    t0 = time.perf_counter()
    results: dict[str, Any] = {
        "quick": a.quick,
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "load_before": stats.load_average(),
        "sections": only,
    }
    for name in only:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        s0 = time.perf_counter()
        try:
            if name == "engine":
                results[name] = engine_bench.run(a.quick)
            elif name == "socket":
                results[name] = socket_bench.run(a.quick)
            elif name == "csi":
                from . import csi_bench  # needs grpcio (the csi extra)

                results[name] = csi_bench.run(20 if a.quick else 200)
            elif name == "swarm":
                from . import swarm_bench  # needs Debian sid's engine (./dev unpacks it)

                results[name] = swarm_bench.run(a.quick)
            else:
                results[name] = external.run(EXTERNAL[name], a.quick, ext_timeout)
        except Exception as exc:  # record it and go on: one broken section must not hide the rest
            traceback.print_exc()
            results[name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        results.setdefault("section_load", {})[name] = stats.load_average()[0]
        print(f"bench: {name} took {time.perf_counter() - s0:.0f} s", file=sys.stderr)
    results["load_after"] = stats.load_average()
    results["seconds"] = time.perf_counter() - t0

    out.write_text(report.markdown(results, out, chart))
    if a.json:
        a.json.write_text(json.dumps(results, indent=2, default=str))
    print(f"bench: wrote {out} and {chart} in {results['seconds']:.0f} s", file=sys.stderr)
    failed = [n for n in only if results[n].get("status") == "failed" and n in ("engine", "socket")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
