"""The cluster registry's costs: etcd against SQLite, and failover time against the lease TTL.

- Get / List / Create / Mount+Unmount latency through the plugin's socket, with
  ``--registry sqlite:`` and with ``--registry etcd://`` (a real 3-member etcd cluster on
  loopback), same driver (``shared``), same number of volumes. Reads are answered from the local
  view either way; writes pay etcd's round trips and raft commit.
- Failover: a node holding a ``single-node`` volume is SIGKILLed; how long until another node's
  Mount succeeds, for several ``--lease-ttl`` values (expected: about the TTL, at most TTL plus
  one keep-alive period).

No Docker engine needed: the calls are the engine's, shaped as it sends them. Prints JSON::

    python -m bench.cluster_bench [--volumes N] [--repeats N] [--ttls 2,3,5]
"""

from __future__ import annotations

import argparse
import json
import shutil
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


def measure(volumes: int = 100, repeats: int = 50, ttls: tuple[float, ...] = (2, 3, 5)) -> Any:
    from tests.cluster.etcd import EtcdCluster

    etcd = EtcdCluster.start(3)
    try:
        return {
            "machine_load": stats.load_average(),
            "sqlite": latencies("sqlite:", volumes, repeats),
            "etcd_3_members": latencies(etcd.url + "/lat" + uuid.uuid4().hex[:6], volumes, repeats),
            "failover": [failover(etcd.url, t) for t in ttls],
        }
    finally:
        etcd.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volumes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--ttls", default="2,3,5", help="lease TTLs to fail over with (seconds)")
    args = parser.parse_args()
    ttls = tuple(float(t) for t in args.ttls.split(","))
    print(json.dumps(measure(args.volumes, args.repeats, ttls), indent=2))


if __name__ == "__main__":
    main()
