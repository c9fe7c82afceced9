"""Through Swarm: ``docker service create`` to a running task, cluster volume vs named volume.

One private engine (Debian sid's: 28.2 or later can address a managed CSI plugin), a one-node
swarm on loopback, the managed CSI plugin ``dvcsi:1`` (the ``shared`` driver) that
``dockvol plugin build --csi`` makes. Both volumes are made beforehand: a ``--scope multi
--sharing all`` cluster volume, and a named volume of the engine's built-in ``local`` driver.
Each repetition creates a one-task service on each (alternating which goes first) and times
from the CLI's start to the task being seen ``running`` in the engine's API (polled every
``POLL_S``: the resolution), then removes the service and waits until its task is gone and the
cluster volume is unpublished. One unmeasured warm-up of each comes first.
Run it: ``python -m bench.swarm_bench [--n N]`` (root; needs ``./dev`` to have unpacked the
sid engine).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from tests.csi.managed import PLUGIN, build_csi_plugin
from tests.support.engine import BUSYBOX_IMAGE, Engine
from tests.support.swarm import leave_swarm, reports_csi, swarm_init

from . import common, stats
from .engine_bench import EngineAPI, ratio_interval

POLL_S = 0.02
KINDS = ("cluster", "local")
T = TypeVar("T")


def _wait(cond: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)  # polling a condition, not timing
    return value


def _epoch(ts: str) -> float:
    """Seconds since the epoch of an engine timestamp (RFC 3339, nanoseconds, UTC)."""
    head, _, frac = ts.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float("0." + (frac or "0"))


class Bench:
    def __init__(self, eng: Engine) -> None:
        self.eng = eng
        self.api = EngineAPI(eng.sock)

    def tasks(self, service_id: str) -> list[dict[str, Any]]:
        # All tasks, filtered here: a removed service's name or ID no longer resolves.
        return [t for t in self.api.ok("GET", "/tasks") if t["ServiceID"] == service_id]

    def volume(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self.api.ok("GET", f"/volumes/{urllib.parse.quote(name)}")
        return out

    def start_service(self, mount: str) -> tuple[str, float, float]:
        """Service ID, seconds to the task seen running (polled), seconds to the engine's own
        timestamp of the task's running state (no poll in it)."""
        wall, t0 = time.time(), time.perf_counter()
        sid = self.eng.docker(
            "service", "create", "--detach", "--no-resolve-image", "--stop-grace-period", "1s",
            "--mount", mount, BUSYBOX_IMAGE, "sleep", "300",
        ).stdout.strip()  # fmt: skip
        deadline = t0 + 120
        while True:
            tasks = self.tasks(sid)
            running = [t for t in tasks if t["Status"]["State"] == "running"]
            if running:
                polled = time.perf_counter() - t0
                return sid, polled, _epoch(running[0]["Status"]["Timestamp"]) - wall
            failed = [t["Status"] for t in tasks if t["Status"]["State"] in ("failed", "rejected")]
            if failed or time.perf_counter() > deadline:
                raise RuntimeError(f"service on {mount} not running: {failed or tasks}")
            time.sleep(POLL_S)  # the poll interval: the measurement's resolution

    def remove_service(self, sid: str, cluster_volume: str) -> None:
        self.eng.docker("service", "rm", sid)
        _wait(lambda: not self.tasks(sid), 120, f"service {sid}'s task gone")
        _wait(
            lambda: not self.volume(cluster_volume)["ClusterVolume"].get("PublishStatus"),
            120,
            f"{cluster_volume} unpublished",
        )


def measure(b: Bench, n: int) -> dict[str, Any]:
    cvol, lvol = "bench-cluster", "bench-local"
    b.eng.docker(
        "volume", "create", "--driver", PLUGIN, "--type", "mount", "--scope", "multi",
        "--sharing", "all", cvol,
    )  # fmt: skip
    _wait(
        lambda: (b.volume(cvol).get("ClusterVolume") or {}).get("Info", {}).get("VolumeID"),
        90,
        f"{cvol} created by the CSI controller",
    )
    b.eng.docker("volume", "create", lvol)
    mounts = {
        "cluster": f"type=cluster,source={cvol},target=/d",
        "local": f"type=volume,source={lvol},target=/d",
    }
    polled: dict[str, list[float]] = {k: [] for k in KINDS}
    stamped: dict[str, list[float]] = {k: [] for k in KINDS}
    for rep in range(-1, n):  # rep -1: the warm-up, not counted
        for kind in KINDS if rep % 2 == 0 else KINDS[::-1]:
            sid, p, s = b.start_service(mounts[kind])
            b.remove_service(sid, cvol)
            if rep >= 0:
                polled[kind].append(p)
                stamped[kind].append(s)
    c, lo = stats.median(polled["cluster"]), stats.median(polled["local"])
    lo95, hi95 = ratio_interval(polled["cluster"], polled["local"])
    return {
        "n": n,
        "poll_ms": POLL_S * 1000,
        "rows": {
            "cluster volume (dvcsi:1, shared driver, --scope multi --sharing all)": {
                **stats.summary(polled["cluster"], 1),
                "stamped_median_ms": round(stats.ms(stats.median(stamped["cluster"])), 1),
            },
            "named volume (built-in local driver)": {
                **stats.summary(polled["local"], 1),
                "stamped_median_ms": round(stats.ms(stats.median(stamped["local"])), 1),
            },
        },
        "ratio": c / lo,
        "ratio_lo": lo95,
        "ratio_hi": hi95,
    }


def run(quick: bool, n: int | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    shared = common.tmpdir("dvswb")
    eng = Engine.start(version="sid")
    try:
        build_csi_plugin(eng, shared, DOCKVOL_NODE="bench-node")
        swarm_init(eng)
        _wait(
            lambda: reports_csi(eng, "self", PLUGIN),
            90,
            f"the node reporting {PLUGIN} to the swarm (engine {eng.version}: 28.2 or later "
            f"can address a managed CSI plugin)\n{eng.tail_log(40)}",
        )
        setup = time.perf_counter() - t0
        b = Bench(eng)
        try:
            out = measure(b, n or (3 if quick else 10))
        finally:
            b.api.close()
        return {
            "engine_version": eng.version,
            **out,
            "setup_s": round(setup, 1),
            "seconds": round(time.perf_counter() - t0, 1),
            "load": stats.load_average(),
        }
    finally:
        try:
            leave_swarm(eng)
        finally:
            eng.stop()
            shutil.rmtree(shared, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.swarm_bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="3 repetitions (default 10)")
    p.add_argument("--n", type=int, help="repetitions of each kind")
    a = p.parse_args()
    print(json.dumps(run(a.quick, a.n), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
