"""Where the plugin's time goes: ``python -m bench.profile [--endpoint Get|List|Mount|...] [-n N]``.

``--endpoint CreateRemove`` sends what the engine sends for ``docker volume create`` then
``docker volume rm`` (Get, Create; Get, Get, Remove), a new volume each time.

Runs ``dockvol serve`` under cProfile in a subprocess, drives it with engine-shaped requests
over the socket, stops it and prints the functions with the most time. For when a target in
BENCHMARKS.md is missed. The child dumps its profile when serve returns, or from its own
SIGTERM handler if uvicorn re-raises the signal.
"""

from __future__ import annotations

import argparse
import pstats
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import common
from .rawclient import Connection, request, timed

_CHILD = """
import cProfile, os, signal, sys
out = sys.argv[1]
prof = cProfile.Profile()
def stop(*_):
    prof.disable()
    prof.dump_stats(out)
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
from dockvol._cli.main import main
prof.enable()
try:
    main(["serve", *sys.argv[2:]])
finally:
    stop()
"""


def profile(endpoint: str, n: int, volumes: int, out: Path, top: int) -> str:
    base = common.tmpdir("dvpf")
    sock = base / "p.sock"
    args = ["--socket", str(sock), "--root", str(base / "root"), "--state", str(base / "state")]
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(out), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = Connection(str(sock))
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the profiled plugin did not start") from None
                time.sleep(0.01)  # polling for the socket
        for i in range(volumes):
            conn.call("VolumeDriver.Create", {"Name": f"v{i}", "Opts": None})
        if endpoint == "CreateRemove":
            reqs = []
            for i in range(n):
                body = {"Name": f"cr{i}"}
                reqs += [
                    request("VolumeDriver.Get", body),
                    request("VolumeDriver.Create", {**body, "Opts": None}),
                    request("VolumeDriver.Get", body),
                    request("VolumeDriver.Get", body),
                    request("VolumeDriver.Remove", body),
                ]
        elif endpoint == "Mount":
            reqs = []
            for i in range(n):
                body = {"Name": "v0", "ID": f"{i:064x}"}
                reqs += [request("VolumeDriver.Mount", body), request("VolumeDriver.Unmount", body)]
        else:
            body = {} if endpoint == "List" else {"Name": "v0"}
            reqs = [request(f"VolumeDriver.{endpoint}", body)] * n
        timed(conn, reqs)
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(base, ignore_errors=True)
    stats = pstats.Stats(str(out))
    lines = []
    for key in ("tottime", "cumulative"):
        import io

        buf = io.StringIO()
        stats.stream = buf  # type: ignore[attr-defined]
        stats.sort_stats(key).print_stats(top)
        lines.append(buf.getvalue())
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    ap.add_argument(
        "--endpoint",
        default="Get",
        choices=["Get", "List", "Mount", "Capabilities", "CreateRemove"],
    )
    ap.add_argument(
        "-n",
        type=int,
        default=5000,
        help="requests (Mount: Mount/Unmount pairs; CreateRemove: volumes)",
    )
    ap.add_argument("--volumes", type=int, default=1, help="volumes created first")
    ap.add_argument("--out", type=Path, default=Path("/tmp/dockvol-bench.prof"))
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    print(profile(a.endpoint, a.n, a.volumes, a.out, a.top))


if __name__ == "__main__":
    main()
