"""The block driver's own costs, through the plugin's socket as the engine pays them.

- Create of a 100 GiB sparse volume (ext4 and xfs): must stay far inside the engine's 2-minute
  Create timeout (lazy filesystem initialisation).
- Mount latency of a detached volume (losetup + mount + ownership), and the Unmount that
  detaches it again (umount + detach).
- With ``--engine``: engine operations through a private engine, the block driver against the
  engine's built-in ``local`` driver, interleaved (each repetition runs both, alternating which
  goes first): ``volume create``, ``run --rm -v`` (Mount of a detached volume, a container,
  Unmount), ``volume rm``.

The driver measures run ``dockvol serve --driver block`` on its own socket (no engine needed:
the calls are the engine's, shaped as it sends them). Prints JSON. Usage::

    python -m bench.block_bench [--repeats N] [--engine]

or, from another benchmark: ``from bench.block_bench import measure, measure_engine``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
import uuid
from typing import Any

from . import common, stats


def _timed(sock: Any, endpoint: str, body: dict[str, Any]) -> float:
    from tests.support.plugin import call  # importable once common has set sys.path

    start = time.perf_counter()
    status, reply = call(sock, endpoint, body, timeout=150)
    elapsed = time.perf_counter() - start
    if status != 200 or (reply or {}).get("Err"):
        raise RuntimeError(f"{endpoint} {body.get('Name')}: HTTP {status} {reply}")
    return elapsed


def _summary(samples: list[float]) -> dict[str, float]:
    return stats.summary(samples, digits=2)


def measure(repeats: int = 10) -> dict[str, Any]:
    """Start a block plugin, measure, clean up; the results as a dict."""
    base = common.tmpdir("dvbb")
    sock = base / "block.sock"
    plugin = common.start_plugin(sock, base, "--driver", "block", "--log-level", "warning")
    results: dict[str, Any] = {"driver": "block"}
    try:
        for fs in ("ext4", "xfs"):
            samples = []
            for i in range(max(3, repeats // 3)):
                name = f"big-{fs}-{i}"
                opts = {"size": "100G", "fs": fs}
                samples.append(_timed(sock, "VolumeDriver.Create", {"Name": name, "Opts": opts}))
                _timed(sock, "VolumeDriver.Remove", {"Name": name})
            results[f"create_100g_{fs}"] = _summary(samples)
        for fs, size in (("ext4", "1G"), ("xfs", "1G")):
            name = f"mnt-{fs}"
            _timed(sock, "VolumeDriver.Create", {"Name": name, "Opts": {"size": size, "fs": fs}})
            mounts, unmounts = [], []
            for _ in range(repeats):
                mid = uuid.uuid4().hex + uuid.uuid4().hex
                mounts.append(_timed(sock, "VolumeDriver.Mount", {"Name": name, "ID": mid}))
                unmounts.append(_timed(sock, "VolumeDriver.Unmount", {"Name": name, "ID": mid}))
            _timed(sock, "VolumeDriver.Remove", {"Name": name})
            results[f"mount_detached_{size.lower()}_{fs}"] = _summary(mounts)
            results[f"unmount_detach_{size.lower()}_{fs}"] = _summary(unmounts)
        # What Get (the engine's hottest call) costs with the driver's Status, attached.
        _timed(sock, "VolumeDriver.Create", {"Name": "get", "Opts": {"size": "1G"}})
        mid = uuid.uuid4().hex * 2
        _timed(sock, "VolumeDriver.Mount", {"Name": "get", "ID": mid})
        gets = [_timed(sock, "VolumeDriver.Get", {"Name": "get"}) for _ in range(repeats * 10)]
        _timed(sock, "VolumeDriver.Unmount", {"Name": "get", "ID": mid})
        _timed(sock, "VolumeDriver.Remove", {"Name": "get"})
        results["get_attached"] = _summary(gets)
    finally:
        plugin.stop()
        # Leave nothing behind even after a failure: mounts and loop devices under base.
        subprocess.run(
            [
                "sh",
                "-c",
                f"grep -o ' {base}/[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
            ],
            capture_output=True,
        )
        out = subprocess.run(["losetup", "-J", "-l"], capture_output=True, text=True).stdout
        for dev in json.loads(out or '{"loopdevices": []}').get("loopdevices", []):
            if str(dev.get("back-file", "")).startswith(str(base)):
                subprocess.run(["losetup", "-d", dev["name"]], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    return results


def measure_engine(repeats: int = 10) -> dict[str, Any]:
    """Engine operations: the block driver against the built-in ``local`` driver."""
    from tests.support.engine import BUSYBOX_IMAGE, Engine
    from tests.support.plugin import Plugin

    base = common.tmpdir("dvbb")
    eng = Engine.start()
    plugin = None
    times: dict[str, dict[str, list[float]]] = {}
    try:
        eng.ensure_busybox()
        # In the engine's mount namespace: the engine must see the plugin's mounts.
        plugin = Plugin.start(
            eng.plugins_dir / "block.sock", base / "root", base / "state", "--driver", "block",
            "--log-level", "warning", name="block", wrap=eng.enter_args(),
        )  # fmt: skip

        def timed(op: str, driver: str, *args: str) -> None:
            start = time.perf_counter()
            eng.docker(*args)
            times.setdefault(op, {}).setdefault(driver, []).append(time.perf_counter() - start)

        for i in range(repeats):
            order = ("block", "local") if i % 2 == 0 else ("local", "block")
            for driver in order:
                vol = f"{driver}-{i}"
                timed("volume_create", driver, "volume", "create", "-d", driver, vol)
                timed(
                    "run_rm_with_volume", driver,
                    "run", "--rm", "--network", "none", "-v", f"{vol}:/d", BUSYBOX_IMAGE, "true",
                )  # fmt: skip
                timed("volume_rm", driver, "volume", "rm", vol)
    finally:
        if plugin is not None:
            plugin.stop()
        eng.stop()
        shutil.rmtree(base, ignore_errors=True)
    out: dict[str, Any] = {"engine": "private dockerd, docker CLI", "repeats": repeats}
    for op, by_driver in times.items():
        b, loc = stats.median(by_driver["block"]), stats.median(by_driver["local"])
        out[op] = {
            "block_median_ms": round(stats.ms(b), 1),
            "local_median_ms": round(stats.ms(loc), 1),
            "ratio": round(b / loc, 2),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="samples per measure (default 10)")
    parser.add_argument(
        "--engine", action="store_true", help="also engine operations vs the built-in local driver"
    )
    args = parser.parse_args()
    results = measure(args.repeats)
    if args.engine:
        results["engine_vs_local"] = measure_engine(args.repeats)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
