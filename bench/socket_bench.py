"""Direct measurements on the plugin's socket, with requests shaped like the engine's.

Latency of Get and Mount/Unmount at concurrency 1 and 16, List of 10,000 volumes, cold start
to the first answer, and the serving process's memory. Next to each latency the server's own
CPU time per request is given (from /proc): it does not grow when other processes on the
machine delay the scheduling, so it tells noise from real cost.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import common, floor, stats
from .rawclient import Connection, body_of, request, timed, timed_concurrent

MOUNT_ID = "{:064x}"
ROUNDS = 4  # Get c=1 and the floor alternate in this many rounds  # the engine's mount IDs are 64 hex characters


def _check_ok(resp: bytes) -> None:
    if not resp.startswith(b"HTTP/1.1 200") or b'"Err"' in body_of(resp):
        raise RuntimeError(f"unexpected reply: {resp[:300]!r}")


def _latency_row(
    endpoint: str, concurrency: int, lat: list[float], cpu: float, requests: int
) -> dict[str, Any]:
    return {
        "endpoint": endpoint,
        "concurrency": concurrency,
        "n": len(lat),
        "p50_ms": stats.ms(stats.percentile(lat, 50)),
        "p99_ms": stats.ms(stats.percentile(lat, 99)),
        "server_cpu_us": cpu / requests * 1e6 if requests else float("nan"),
    }


def _cpu_of(pid: int, fn: Any) -> tuple[Any, float]:
    before = stats.cpu_seconds(pid)
    out = fn()
    return out, stats.cpu_seconds(pid) - before


def measure_running(
    sock: str, pid: int, *, n_get: int, n_mount: int, n_list: int, volumes: int
) -> dict[str, Any]:
    """Everything that needs one running plugin (at ``sock``, process ``pid``)."""
    conn = Connection(sock)
    rows: list[dict[str, Any]] = []
    names = [f"bench-{i}" for i in range(16)]
    for n in names:
        _check_ok(conn.roundtrip(request("VolumeDriver.Create", {"Name": n, "Opts": None})))

    # Get: the engine's hottest call. Interleaved with the floor server, in rounds, so both
    # see the same moments of the machine's load.
    gets = [request("VolumeDriver.Get", {"Name": names[i % 16]}) for i in range(n_get)]
    _check_ok(conn.roundtrip(gets[0]))
    timed(conn, gets[: min(500, n_get)])  # warm up
    fl_reqs = [request("VolumeDriver.Get", {"Name": "x"})] * (n_get // ROUNDS)
    lat, cpu, fl_lat, fl_cpu = [], 0.0, [], 0.0
    with floor.Floor() as fl:
        fl.timed(fl_reqs[:500])
        for r in range(ROUNDS):
            chunk = gets[r * len(fl_reqs) : (r + 1) * len(fl_reqs)]
            part, c = _cpu_of(pid, lambda chunk=chunk: timed(conn, chunk))
            lat += part
            cpu += c
            part, c = fl.timed(fl_reqs)
            fl_lat += part
            fl_cpu += c
    rows.append(_latency_row("Get", 1, lat, cpu, len(lat)))
    floor_row = floor.row(fl_lat, fl_cpu, len(fl_lat))
    per = max(1, n_get // 16)
    streams = [[request("VolumeDriver.Get", {"Name": names[c]})] * per for c in range(16)]
    lat, cpu = _cpu_of(pid, lambda: timed_concurrent(sock, streams, _check_ok))
    rows.append(_latency_row("Get", 16, lat, cpu, per * 16))

    # Mount/Unmount: the first reference of a mount ID runs the driver and commits the
    # registry (fsync), the last one too. Each connection works on its own volume.
    def pairs(vol: str, n: int, base: int) -> list[bytes]:
        out = []
        for i in range(n):
            body = {"Name": vol, "ID": MOUNT_ID.format(base + i)}
            out += [request("VolumeDriver.Mount", body), request("VolumeDriver.Unmount", body)]
        return out

    seq = pairs(names[0], n_mount, 0)
    _check_ok(conn.roundtrip(seq[0]))
    _check_ok(conn.roundtrip(seq[1]))
    lat, cpu = _cpu_of(pid, lambda: timed(conn, seq))
    rows.append(_latency_row("Mount", 1, lat[0::2], cpu / 2, n_mount))
    rows.append(_latency_row("Unmount", 1, lat[1::2], cpu / 2, n_mount))
    per = max(1, n_mount // 16)
    streams = [pairs(names[c], per, 10**6 * (c + 1)) for c in range(16)]
    # In each stream requests alternate Mount, Unmount; epoll mixes the streams, so split
    # the latencies by stream position instead of by arrival.
    lat_m: list[float] = []
    lat_u: list[float] = []
    _, cpu = _cpu_of(pid, lambda: _split_concurrent(sock, streams, lat_m, lat_u))
    rows.append(_latency_row("Mount", 16, lat_m, cpu / 2, per * 16))
    rows.append(_latency_row("Unmount", 16, lat_u, cpu / 2, per * 16))

    # Fill the registry to ``volumes`` through the socket (16 connections, as the engine).
    t0 = time.perf_counter()
    have = len(names)
    todo = [f"vol-{i:05d}" for i in range(volumes - have)]
    streams = [
        [request("VolumeDriver.Create", {"Name": n, "Opts": None}) for n in todo[c::16]]
        for c in range(16)
    ]
    create_lat = timed_concurrent(sock, streams, _check_ok)
    fill_s = time.perf_counter() - t0
    listed = conn.call("VolumeDriver.List", {})
    count = len(listed["Volumes"])
    if count != volumes:
        raise RuntimeError(f"List returned {count} volumes, expected {volumes}")

    lst = [request("VolumeDriver.List", {})] * n_list
    timed(conn, lst[:3])
    lat, cpu = _cpu_of(pid, lambda: timed(conn, lst))
    list_row = _latency_row("List", 1, lat, cpu, n_list)
    list_row["volumes"] = volumes
    list_row["reply_bytes"] = len(body_of(conn.roundtrip(lst[0])))

    # Gets with a full registry: a dict lookup, so it should not change.
    gets = [request("VolumeDriver.Get", {"Name": todo[i % len(todo)]}) for i in range(n_get)]
    lat, cpu = _cpu_of(pid, lambda: timed(conn, gets))
    full_get = _latency_row("Get", 1, lat, cpu, n_get)
    full_get["volumes"] = volumes

    rss, hwm = stats.rss_kib(pid)
    conn.close()
    return {
        "latency": rows,
        "list": list_row,
        "get_full": full_get,
        "create": {
            "n": len(create_lat),
            "concurrency": 16,
            "p50_ms": stats.ms(stats.percentile(create_lat, 50)),
            "p99_ms": stats.ms(stats.percentile(create_lat, 99)),
            "per_s": len(create_lat) / fill_s if fill_s else float("nan"),
        },
        "rss": {"volumes": volumes, "rss_mib": rss / 1024, "hwm_mib": hwm / 1024},
        "floor": floor_row,
    }


def _split_concurrent(
    sock: str, streams: list[list[bytes]], lat_m: list[float], lat_u: list[float]
) -> list[float]:
    """Run Mount/Unmount streams at once; sort each latency by the kind of its reply."""
    kinds: list[bool] = []

    def check(resp: bytes) -> None:
        _check_ok(resp)
        kinds.append(b"Mountpoint" in resp)  # Mount replies carry it; Unmount replies are {}

    lat = timed_concurrent(sock, streams, check)
    for is_mount, sec in zip(kinds, lat, strict=True):
        (lat_m if is_mount else lat_u).append(sec)
    return lat


def _start_env(pycache: Path) -> dict[str, str]:
    """The environment of an installed dockvol: bytecode compiled once and reused (pip compiles
    it at install). Some shells set PYTHONDONTWRITEBYTECODE, which would make every start
    compile dockvol from source; the cache goes to a private prefix, not the source tree."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def _one_cold_start(data: Path | None, env: dict[str, str]) -> tuple[float, float]:
    """Spawn ``python -m dockvol serve``; (seconds until Capabilities answers, CPU seconds of
    the child at that moment). With ``data``, it serves that stopped plugin's root and state
    (a restart: registry and volume directories as they were); else empty ones."""
    base = common.tmpdir("dvcs")
    sock = base / "p.sock"
    data = data or base
    cmd = [sys.executable, "-m", "dockvol", "serve", "--socket", str(sock)]
    cmd += ["--root", str(data / "root"), "--state", str(data / "state")]
    caps = request("VolumeDriver.Capabilities", {})
    with open(base / "log", "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"dockvol serve exited: {(base / 'log').read_text()}")
                if time.perf_counter() - t0 > 30:
                    raise RuntimeError("dockvol serve did not answer within 30 s")
                try:
                    c = Connection(str(sock), timeout=5)
                except OSError:
                    time.sleep(0.0005)  # polling for the socket, 0.5 ms resolution
                    continue
                resp = c.roundtrip(caps)
                wall = time.perf_counter() - t0
                cpu = stats.cpu_seconds(proc.pid)
                c.close()
                _check_ok(resp)
                return wall, cpu
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            shutil.rmtree(base, ignore_errors=True)


def _one_interpreter(env: dict[str, str]) -> tuple[float, float]:
    """The floor for cold start: ``python -c pass`` in the same environment, to its exit."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", "pass"], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime


def _summary(samples: list[tuple[float, float]]) -> dict[str, Any]:
    walls = [w for w, _ in samples]
    return {
        "runs": len(samples),
        "median_ms": stats.ms(stats.median(walls)),
        "min_ms": stats.ms(min(walls)),
        "max_ms": stats.ms(max(walls)),
        "cpu_ms": stats.ms(stats.median([c for _, c in samples])),
    }


def cold_start(runs: int, data: Path | None = None) -> dict[str, Any]:
    """Cold start to the first answer and, interleaved with it, the interpreter's own start."""
    pycache = common.tmpdir("dvpyc")
    try:
        env = _start_env(pycache)
        _one_cold_start(data, env)  # fills the bytecode cache; not counted
        serve: list[tuple[float, float]] = []
        bare: list[tuple[float, float]] = []
        for _ in range(runs):
            bare.append(_one_interpreter(env))
            serve.append(_one_cold_start(data, env))
    finally:
        shutil.rmtree(pycache, ignore_errors=True)
    return {"serve": _summary(serve), "interpreter": _summary(bare)}


def run(quick: bool) -> dict[str, Any]:
    volumes = 500 if quick else 10_000
    base = common.tmpdir("dvsb")
    plugin = common.start_plugin(base / "p.sock", base)
    assert plugin.proc is not None
    try:
        out = measure_running(
            str(plugin.sock),
            plugin.proc.pid,
            n_get=2_000 if quick else 20_000,
            n_mount=64 if quick else 800,
            n_list=10 if quick else 200,
            volumes=volumes,
        )
        plugin.stop()
        out["cold_start"] = cold_start(3 if quick else 15)
        out["cold_start_loaded"] = cold_start(2 if quick else 3, data=base)["serve"]
        out["cold_start_loaded"]["volumes"] = volumes
    finally:
        plugin.stop()
        shutil.rmtree(base, ignore_errors=True)
    return out


if __name__ == "__main__":  # a quick look without the engine: python -m bench.socket_bench
    print(json.dumps(run("--quick" in sys.argv), indent=2))
    os._exit(0)
