"""The cluster registry's costs: etcd against SQLite, and failover time against the lease TTL.

- Get / List / Create / Mount+Unmount latency through the plugin's socket, with
  ``--registry sqlite:`` and with ``--registry etcd://`` (a real 3-member etcd cluster on
  loopback), same driver (``shared``), same number of volumes. Reads are answered from the local
  view either way; writes pay etcd's round trips and raft commit.
- Failover: a node holding a ``single-node`` volume is SIGKILLed; how long until another node's
  Mount succeeds, for several ``--lease-ttl`` values (expected: about the TTL, at most TTL plus
  one keep-alive period).
- Fencing: node a (``--driver block``) has a block volume mounted and a writer appending and
  fsyncing to it every 10 ms; a is cut off etcd (its etcd connections refused, the process keeps
  running). Measured from the cut: until the writer's first error (a fenced itself) and until
  node b's Mount (asked every 20 ms) succeeds; the margin is takeover minus fence (it must be
  positive: no moment with two writers). Over ``--fence-runs`` runs at ``--fence-ttl``.

No Docker engine needed: the calls are the engine's, shaped as it sends them. Prints JSON::

    python -m bench.cluster_bench [--volumes N] [--repeats N] [--ttls 2,3,5]
                                  [--fence-ttl 3] [--fence-runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from . import common, stats


def _call(plugin: Any, endpoint: str, body: dict[str, Any]) -> float:
    start = time.perf_counter()
    status, reply = plugin.call(endpoint, body, timeout=60)
    elapsed = time.perf_counter() - start
    if status != 200 or (reply or {}).get("Err"):
        raise RuntimeError(f"{endpoint} {body.get('Name')}: HTTP {status} {reply}")
    return elapsed


def _summary(samples: list[float]) -> dict[str, float]:
    return stats.summary(samples, digits=3)


def _start(base: Path, name: str, shared: Path, registry: str, *extra: str) -> Any:
    from tests.support.plugin import Plugin

    return Plugin.start(
        base / f"{name}.sock", shared, base / name / "state",
        "--driver", "shared", "--registry", registry, "--node", name,
        "--log-level", "warning", *extra,
    )  # fmt: skip


def latencies(registry: str, volumes: int, repeats: int) -> dict[str, Any]:
    base = common.tmpdir("dvcb")
    shared = base / "shared"
    shared.mkdir()
    p = _start(base, "n1", shared, registry)
    try:
        creates = [
            _call(p, "VolumeDriver.Create", {"Name": f"v{i}", "Opts": {}}) for i in range(volumes)
        ]
        gets = [
            _call(p, "VolumeDriver.Get", {"Name": f"v{i % volumes}"}) for i in range(repeats * 10)
        ]
        lists = [_call(p, "VolumeDriver.List", {}) for _ in range(repeats)]
        out: dict[str, Any] = {
            "create": _summary(creates),
            "get": _summary(gets),
            f"list_{volumes}": _summary(lists),
        }
        for access in ("multi", "single-node"):
            name = f"m-{access}"
            _call(p, "VolumeDriver.Create", {"Name": name, "Opts": {"access": access}})
            mounts, unmounts = [], []
            for _ in range(repeats):
                mid = uuid.uuid4().hex * 2
                mounts.append(_call(p, "VolumeDriver.Mount", {"Name": name, "ID": mid}))
                unmounts.append(_call(p, "VolumeDriver.Unmount", {"Name": name, "ID": mid}))
            out[f"mount_{access}"] = _summary(mounts)
            out[f"unmount_{access}"] = _summary(unmounts)
        return out
    finally:
        p.stop()
        shutil.rmtree(base, ignore_errors=True)


def failover(etcd_url: str, ttl: float) -> dict[str, Any]:
    """Seconds from a holder's SIGKILL until another node mounts its single-node volume."""
    base = common.tmpdir("dvcf")
    shared = base / "shared"
    shared.mkdir()
    prefix = "/bench" + uuid.uuid4().hex[:8]
    url = etcd_url + prefix
    a = _start(base, "a", shared, url, "--lease-ttl", str(ttl))
    b = _start(base, "b", shared, url, "--lease-ttl", str(ttl))
    try:
        _call(a, "VolumeDriver.Create", {"Name": "fo", "Opts": {"access": "single-node"}})
        _call(a, "VolumeDriver.Mount", {"Name": "fo", "ID": "a" * 64})
        deadline = time.monotonic() + 10
        while b.call("VolumeDriver.Get", {"Name": "fo"})[1].get("Volume") is None:
            if time.monotonic() > deadline:
                raise RuntimeError("b never saw the volume")
            time.sleep(0.01)
        killed = time.monotonic()
        a.kill()
        tries = 0
        while True:
            tries += 1
            _, reply = b.call("VolumeDriver.Mount", {"Name": "fo", "ID": "b" * 64}, timeout=60)
            if not reply.get("Err"):
                break
            if time.monotonic() - killed > ttl * 3 + 30:
                raise RuntimeError(f"no failover after {ttl * 3 + 30}s: {reply['Err']}")
            time.sleep(0.05)
        took = time.monotonic() - killed
        return {"ttl_s": ttl, "failover_s": round(took, 2), "ratio": round(took / ttl, 2)}
    finally:
        b.stop()
        if a.proc is not None:
            a.stop()
        shutil.rmtree(base, ignore_errors=True)


class _Writer(threading.Thread):
    """Appends a line and fsyncs every 10 ms (opening the file each time, as many short writes
    do); ``failed_at``: monotonic time of the first error."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.failed_at: float | None = None
        self.written = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, f"{self.written}\n".encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                self.failed_at = time.monotonic()
                return
            self.written += 1
            self._halt.wait(0.01)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def fence_run(etcd: Any, ttl: float) -> dict[str, float]:
    """One cut of a node holding a written block volume; seconds from the cut to each event."""
    from tests.cluster.etcd import CutProxy

    from dockvol.drivers.block import loop

    base = common.tmpdir("dvcx")
    shared = base / "shared"
    shared.mkdir()
    prefix = "/fence" + uuid.uuid4().hex[:8]
    proxies = [CutProxy(e) for e in etcd.endpoints]
    a_url = "etcd://" + ",".join(p.endpoint for p in proxies) + prefix
    block = ("--driver", "block", "--lease-ttl", str(ttl))
    a = _start(base, "a", shared, a_url, *block)
    b = _start(base, "b", shared, etcd.url + prefix, *block)
    writer = None
    try:
        _call(a, "VolumeDriver.Create", {"Name": "fv", "Opts": {"size": "32M"}})
        _, reply = a.call("VolumeDriver.Mount", {"Name": "fv", "ID": "a" * 64}, timeout=60)
        if reply.get("Err"):
            raise RuntimeError(f"a cannot mount: {reply['Err']}")
        writer = _Writer(Path(reply["Mountpoint"]) / "log")
        writer.start()
        # Cut at a random moment of the keep-alive period (it decides how much of the TTL is
        # left at the cut).
        time.sleep(0.5 + random.random() * ttl / 3)
        if writer.failed_at is not None or writer.written == 0:
            raise RuntimeError("the writer did not write before the cut")
        cut = time.monotonic()
        for p in proxies:
            p.cut()
        took_at = None
        while took_at is None:
            if time.monotonic() - cut > ttl * 3 + 30:
                raise RuntimeError("b never took the volume over")
            _, reply = b.call("VolumeDriver.Mount", {"Name": "fv", "ID": "b" * 64}, timeout=60)
            if not reply.get("Err"):
                took_at = time.monotonic()
            elif "in use on node 'a'" not in reply["Err"]:
                raise RuntimeError(f"b's Mount failed: {reply['Err']}")
            else:
                time.sleep(0.02)  # b asks again, as a restarting container would
        if writer.failed_at is None:
            raise RuntimeError("b mounted while a's writer still wrote: NOT fenced")
        return {
            "cut_to_fence_s": round(writer.failed_at - cut, 3),
            "cut_to_takeover_s": round(took_at - cut, 3),
            "margin_s": round(took_at - writer.failed_at, 3),
        }
    finally:
        if writer is not None:
            writer.stop()
        for p in proxies:
            p.heal()
        b.stop()
        a.stop()
        for p in proxies:
            p.close()
        for lp in loop.under(base):
            loop.detach(lp.device, lp.backing)
        shutil.rmtree(base, ignore_errors=True)


def fencing(etcd: Any, ttl: float, runs: int) -> dict[str, Any]:
    from dockvol._cluster.session import fence_margin

    samples = [fence_run(etcd, ttl) for _ in range(runs)]
    out: dict[str, Any] = {
        "ttl_s": ttl,
        "fence_margin_s": fence_margin(ttl),
        "runs": runs,
        "min_margin_s": min(s["margin_s"] for s in samples),
    }
    for field in samples[0]:
        values = sorted(s[field] for s in samples)
        out[field] = {
            "median": values[len(values) // 2],
            "min": values[0],
            "max": values[-1],
            "all": [s[field] for s in samples],
        }
    return out


def measure(
    volumes: int = 100,
    repeats: int = 50,
    ttls: tuple[float, ...] = (2, 3, 5),
    fence_ttl: float = 3.0,
    fence_runs: int = 5,
) -> Any:
    from tests.cluster.etcd import EtcdCluster

    etcd = EtcdCluster.start(3)
    try:
        out: dict[str, Any] = {"machine_load": stats.load_average()}
        if volumes:
            out["sqlite"] = latencies("sqlite:", volumes, repeats)
            url = etcd.url + "/lat" + uuid.uuid4().hex[:6]
            out["etcd_3_members"] = latencies(url, volumes, repeats)
        out["failover"] = [failover(etcd.url, t) for t in ttls]
        if fence_runs:
            out["fencing"] = fencing(etcd, fence_ttl, fence_runs)
        return out
    finally:
        etcd.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volumes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--ttls", default="2,3,5", help="lease TTLs to fail over with (seconds)")
    parser.add_argument("--fence-ttl", type=float, default=3.0, help="lease TTL for fencing")
    parser.add_argument("--fence-runs", type=int, default=5, help="cuts to measure (0: none)")
    args = parser.parse_args()
    ttls = tuple(float(t) for t in args.ttls.split(",") if t)
    result = measure(args.volumes, args.repeats, ttls, args.fence_ttl, args.fence_runs)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
