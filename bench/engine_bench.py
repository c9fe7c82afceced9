"""Through one private engine: dockvol's local driver against the engine's built-in ``local``.

Both drivers are measured in the same engine, interleaved: every repetition runs each
operation once per driver, back to back, and the order of the two drivers alternates between
repetitions, so drift and bursts of load on the machine hit both alike. Medians, and the ratio
of the medians with a bootstrap interval over repetitions.

Two views: the docker CLI as a user runs it (each call pays the CLI's own start-up, the same for
both drivers), and the engine's HTTP API directly (no CLI: the drivers' difference stands out).

Both views have a floor beside them: a plugin that answers each request at once from a set of
names, with no work, no durability and no framework. What it costs over the built-in driver is
the engine's own price for asking a plugin (a Create is Get + Create, an rm Get + Get + Remove),
which no plugin can go under. (It cannot mount, so it sits out ``docker run``.)
"""

from __future__ import annotations

import http.client
import json
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.support.engine import Engine

from . import common, stats

PLUGIN = "dvbench"  # the engine finds it at /run/docker/plugins/dvbench.sock
DRIVERS = (PLUGIN, "local")
FLOOR = "dvfloor"  # the plugin that does nothing (API view only)
TARGET = 1.05

# The floor plugin: keep-alive HTTP/1.1 on a unix socket, a set of names, fixed replies.
_FLOOR_PLUGIN = r"""
import asyncio, json, sys
names = set()
def answer(path, name):
    if path == b"/VolumeDriver.Get":
        if name not in names:
            return b'{"Err":"no such volume"}'
        return json.dumps({"Volume": {"Name": name, "CreatedAt": "2026-01-01T00:00:00Z"}}).encode()
    if path == b"/VolumeDriver.Create":
        names.add(name)
    elif path == b"/VolumeDriver.Remove":
        names.discard(name)
    elif path == b"/VolumeDriver.List":
        return json.dumps({"Volumes": [{"Name": n} for n in names]}).encode()
    elif path == b"/VolumeDriver.Capabilities":
        return b'{"Capabilities":{"Scope":"local"}}'
    elif path == b"/Plugin.Activate":
        return b'{"Implements":["VolumeDriver"]}'
    return b"{}"
class P(asyncio.Protocol):
    def connection_made(self, t): self.t, self.buf = t, b""
    def data_received(self, d):
        self.buf += d
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0: return
            head = self.buf[:i]
            j = head.lower().find(b"content-length:")
            n = int(head[j + 15:].split(b"\r\n")[0]) if j >= 0 else 0
            if len(self.buf) < i + 4 + n: return
            body, self.buf = self.buf[i + 4:i + 4 + n], self.buf[i + 4 + n:]
            name = json.loads(body).get("Name", "") if body.strip() else ""
            out = answer(head.split(b" ", 2)[1], name)
            self.t.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.docker.plugins.v1+json"
                         b"\r\ncontent-length: %d\r\n\r\n%s" % (len(out), out))
async def main():
    srv = await asyncio.get_running_loop().create_unix_server(P, sys.argv[1])
    await srv.serve_forever()
asyncio.run(main())
"""


class EngineAPI:
    """The engine's HTTP API on its unix socket, one keep-alive connection."""

    def __init__(self, sock: Path) -> None:
        self.sock = str(sock)
        self.conn = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("localhost", timeout=120)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(120)
        s.connect(self.sock)
        conn.sock = s
        return conn

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        self.conn.request(method, path, body=data, headers=headers)
        resp = self.conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, out = self.call(method, path, body)
        if status >= 300:
            raise RuntimeError(f"{method} {path} -> {status}: {out}")
        return out

    def close(self) -> None:
        self.conn.close()


def ratio_interval(a: list[float], b: list[float], rounds: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of median(a)/median(b), resampling paired repetitions."""
    rng = random.Random(0)
    n = len(a)
    if n < 3:
        return float("nan"), float("nan")
    out = []
    for _ in range(rounds):
        idx = [rng.randrange(n) for _ in range(n)]
        out.append(stats.median([a[i] for i in idx]) / stats.median([b[i] for i in idx]))
    out.sort()
    return out[int(0.025 * rounds)], out[int(0.975 * rounds) - 1]


def _row(op: str, view: str, times: dict[str, list[float]]) -> dict[str, Any]:
    dv, lo = times[PLUGIN], times["local"]
    m_dv, m_lo = stats.median(dv), stats.median(lo)
    lo95, hi95 = ratio_interval(dv, lo)
    ratio = m_dv / m_lo
    return {
        "op": op,
        "view": view,
        "n": len(dv),
        "dockvol_ms": stats.ms(m_dv),
        "local_ms": stats.ms(m_lo),
        "ratio": ratio,
        "ratio_lo": lo95,
        "ratio_hi": hi95,
        "target": TARGET,
        "met": ratio <= TARGET,
    }


def _floor_row(op: str, times: dict[str, list[float]]) -> dict[str, Any]:
    """The floor plugin against the built-in driver, shaped like a dockvol row."""
    row = _row(op, "api", {PLUGIN: times[FLOOR], "local": times["local"]})
    return {**row, "op": f"{op}: floor, a plugin that does no work"}


def _floor_of(op: str, times: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """The floor plugin's ratio for ``op``, when it took part (not in ls and run)."""
    if not times[op][FLOOR]:
        return {}
    row = _row(op, "cli", {PLUGIN: times[op][FLOOR], "local": times[op]["local"]})
    return {"floor_ms": row["dockvol_ms"], "floor_ratio": row["ratio"]}


def _timed(fn: Callable[..., Any], *args: Any) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _order(rep: int) -> tuple[str, ...]:
    return DRIVERS if rep % 2 == 0 else DRIVERS[::-1]


def _order_with_floor(rep: int) -> tuple[str, ...]:
    """The two drivers as in ``_order``; the floor plugin first or last, alternating too."""
    return (*_order(rep), FLOOR) if rep % 4 < 2 else (FLOOR, *_order(rep))


def _populate(api: EngineAPI, eng: Engine, count: int) -> None:
    """``count`` volumes per driver, created through the API by a few parallel clients."""

    def make(args: tuple[str, int]) -> None:
        driver, i = args
        a = EngineAPI(eng.sock)
        try:
            a.ok("POST", "/volumes/create", {"Name": f"pop-{driver}-{i:05d}", "Driver": driver})
        finally:
            a.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(make, [(d, i) for i in range(count) for d in DRIVERS]))
    for d in DRIVERS:
        q = urllib.parse.quote(json.dumps({"driver": [d]}))
        n = len(api.ok("GET", f"/volumes?filters={q}")["Volumes"])
        if n != count:
            raise RuntimeError(f"driver {d}: {n} volumes listed after creating {count}")


def measure(
    eng: Engine, *, reps: int, api_reps: int, ls_reps: int, population: int
) -> dict[str, Any]:
    image = eng.ensure_busybox()
    api = EngineAPI(eng.sock)
    cli: dict[str, dict[str, list[float]]] = {
        op: {d: [] for d in (*DRIVERS, FLOOR)} for op in ("create", "inspect", "run", "rm", "ls")
    }
    rest: dict[str, dict[str, list[float]]] = {
        op: {d: [] for d in (*DRIVERS, FLOOR)} for op in ("create", "inspect", "rm", "ls")
    }

    def run_cmd(name: str) -> list[str]:
        return [
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            f"{name}:/data",
            image,
            "sh",
            "-c",
            "true",
        ]

    # Warm up both paths (the engine's first plugin lookup, page cache, the image's layer).
    for d in DRIVERS:
        eng.docker("volume", "create", "-d", d, f"warm-{d}")
        eng.docker(*run_cmd(f"warm-{d}"))
        eng.docker("volume", "inspect", f"warm-{d}")
        eng.docker("volume", "rm", f"warm-{d}")
    eng.docker("volume", "create", "-d", FLOOR, f"warm-{FLOOR}")
    eng.docker("volume", "rm", f"warm-{FLOOR}")

    # The CLI, as users run it. Each repetition: create, inspect, run, rm, per driver in turn;
    # the floor plugin takes part but in run (it cannot mount).
    for rep in range(reps):
        order = _order_with_floor(rep)
        names = {d: f"cli-{d}-{rep}" for d in order}
        for d in order:
            cli["create"][d].append(_timed(eng.docker, "volume", "create", "-d", d, names[d]))
        for d in order:
            cli["inspect"][d].append(_timed(eng.docker, "volume", "inspect", names[d]))
        for d in _order(rep):
            cli["run"][d].append(_timed(eng.docker, *run_cmd(names[d])))
        for d in order:
            cli["rm"][d].append(_timed(eng.docker, "volume", "rm", names[d]))

    # The API without the CLI: the same operations, many more repetitions; the floor plugin
    # takes its turn first or last, alternating like the two drivers.
    for rep in range(api_reps):
        order = _order_with_floor(rep)
        names = {d: f"api-{d}-{rep}" for d in order}
        for d in order:
            body = {"Name": names[d], "Driver": d}
            rest["create"][d].append(_timed(api.ok, "POST", "/volumes/create", body))
        for d in order:
            path = f"/volumes/{names[d]}"
            rest["inspect"][d].append(_timed(api.ok, "GET", path))
        for d in order:
            path = f"/volumes/{names[d]}"
            rest["rm"][d].append(_timed(api.ok, "DELETE", path))

    # ls with ``population`` volumes of each driver present, filtered by driver: the engine
    # then asks only that driver for its List.
    _populate(api, eng, population)
    filt = {d: urllib.parse.quote(json.dumps({"driver": [d]})) for d in DRIVERS}
    for rep in range(ls_reps):
        for d in _order(rep):
            out = eng.docker("volume", "ls", "-q", "--filter", f"driver={d}")
            if len(out.stdout.split()) != population:
                raise RuntimeError(f"docker volume ls for {d}: expected {population} volumes")
            cli["ls"][d].append(_timed(eng.docker, "volume", "ls", "--filter", f"driver={d}"))
    for rep in range(max(ls_reps, 10)):
        for d in _order(rep):
            rest["ls"][d].append(_timed(api.ok, "GET", f"/volumes?filters={filt[d]}"))
    api.close()

    labels = {
        "create": "docker volume create",
        "inspect": "docker volume inspect",
        "ls": f"docker volume ls ({population:,} volumes)",
        "rm": "docker volume rm",
        "run": "docker run --rm -v vol:/data busybox sh -c true",
    }
    return {
        "cli": [
            {**_row(labels[op], "cli", cli[op]), **_floor_of(op, cli)}
            for op in ("create", "inspect", "ls", "rm", "run")
        ],
        "api": [_row(labels[op], "api", rest[op]) for op in ("create", "inspect", "ls", "rm")]
        + [_floor_row(labels[op], rest[op]) for op in ("create", "inspect", "rm")],
        "engine_version": eng.version,
        "population": population,
    }


def run(quick: bool) -> dict[str, Any]:
    eng = Engine.start()
    base = common.tmpdir("dveb")
    plugin = None
    floor_sock = eng.plugins_dir / f"{FLOOR}.sock"
    floor = subprocess.Popen([sys.executable, "-c", _FLOOR_PLUGIN, str(floor_sock)])
    try:
        _wait_for_socket(floor_sock, floor)
        plugin = common.start_plugin(eng.plugins_dir / f"{PLUGIN}.sock", base)
        return measure(
            eng,
            reps=3 if quick else 100,
            api_reps=5 if quick else 200,
            ls_reps=3 if quick else 30,
            population=50 if quick else 1000,
        )
    finally:
        try:
            eng.stop()
        finally:
            floor.terminate()
            floor.wait(30)
            if plugin is not None:
                plugin.stop()
            shutil.rmtree(base, ignore_errors=True)


def _wait_for_socket(sock: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the floor plugin did not start on {sock}")
        time.sleep(0.01)  # polling for the socket file
