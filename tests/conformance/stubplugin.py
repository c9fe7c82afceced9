"""A tiny standalone volume plugin (stdlib only) for testing the conformance kit.

Without ``--defect`` it is a correct plugin: durable JSON state (fsync + rename), per-ID mount
counts, a lock, keep-alive without idle timeout. Each ``--defect NAME`` swaps in ONE known
defect (see DEFECTS): the kit must fail the named checks and nothing else. Each quirk (see
QUIRKS) is something the engine tolerates: the kit must warn with the named checks, fail
nothing, and pass the run. ``--defect a,b`` combines them.

    python stubplugin.py --socket S --state FILE --root DIR [--defect NAME[,NAME...]]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import posixpath
import queue
import shutil
import signal
import socket
import socketserver
import subprocess
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

# defect -> the checks that must fail because of it (all others must pass, or skip as SKIPS says)
DEFECTS: dict[str, set[str]] = {
    "allowed-hosts": {"request-tolerance"},  # refuses Host: plugin.moby.localhost (400)
    "closes-idle": {"keep-alive"},  # closes connections idle for 1.5 s
    "empty-name-created": {"empty-body"},  # an empty body is a volume named ""
    "path-empty-reply": {"reply-shape"},  # Path success: 200 with an empty body
    "mount-unknown-ok": {"error-replies"},  # Mount of an unknown volume succeeds
    "activate-network": {"activate"},  # Implements ["NetworkDriver"]
    "created-at-empty": {"get-created-at"},  # "CreatedAt": ""
    "status-string": {"get-status"},  # "Status": "ok"
    # Get of an unknown name reports a volume (names sees it too: a removed name still found)
    "get-unknown-found": {"get-not-found", "names"},
    "create-lists-twice": {"create-idempotent"},  # a second Create lists the name twice
    "mount-id-twice-err": {"mount-same-id"},  # Mount with an already mounted ID: Err
    "unmount-unknown-releases": {"unmount-unknown-id"},  # unknown ID: all mounts released
    "ids-as-set": {"mount-same-id-counted"},  # IDs in a set, not counted
    "racy-refcount": {"mount-concurrent"},  # read-modify-write of mounts without a lock
    "list-stale": {"list-consistency"},  # List keeps removed volumes
    "slow-get": {"latency"},  # Get scans all volumes slowly
    "slow-list": {"latency"},  # List takes 2 s (the run's time budget must hold)
    "name-basename": {"names"},  # Get returns the basename of the name
    "paths-from-names": {"names"},  # the directory is root/<name>, normalised: x/../y is y
    # every volume mounts at one path (names sees two names on one path too)
    "shared-mountpoint": {"mount-path", "names"},
    "shell-names": {"names-shell"},  # mkdir through sh -c with the name in double quotes
    # Mount of a volume not yet mounted holds the lock while it hands work to a monitor thread
    # that needs the same lock (rclone serve docker): concurrent Mounts of different volumes
    # deadlock, and Get and List never answer again
    "deadlock-mounts": {"answers-while-mounting"},
    # mounts not persisted: every check that restarts the plugin must see it
    "mounts-in-memory": {"stop-removes-socket", "crash-while-mounted", "crash-during-burst"},
    "socket-left-behind": {"stop-removes-socket"},  # SIGTERM leaves the socket file
    "mountpoint-per-process": {"crash-while-mounted"},  # paths change with every restart
    "names-from-paths": {"names-restart"},  # a restart rebuilds names from paths: p/q -> p
    "remove-space-fails": {"names"},  # Remove of a name with a space: Err (left behind)
}

# quirk -> the checks that must warn because of it (nothing may fail; the run passes)
QUIRKS: dict[str, set[str]] = {
    "empty-body-500": {"empty-body"},  # List with an empty body: 500 and HTML
    "go-helpers-eof": set(),  # an empty body for a call with a Name: 400, text "EOF"
    "error-plain-text": {"error-replies"},  # Mount of an unknown volume: 500, text
    "not-found-404": {"get-not-found"},  # unknown Get: 404, text
    "bad-scope": {"capabilities"},  # Scope "cluster"
    "create-exists-err": {"create-idempotent"},  # Create of an existing volume: Err
    "unmount-unknown-err": {"unmount-unknown-id"},  # Unmount of an unknown ID: Err
    "remove-mounted": {"remove-while-mounted"},  # Remove ignores mounts
    "refuses-odd-names": {"names"},  # Create refuses names with / or a space
    # the three the issue names, together: a plugin with only tolerated quirks
    "tolerated-quirks": {"error-replies", "create-idempotent", "unmount-unknown-id"},
}
COMBINED = {
    "tolerated-quirks": {
        "go-helpers-eof",
        "error-plain-text",
        "create-exists-err",
        "unmount-unknown-err",
    },
}
# defect or quirk -> checks that skip because their key observation cannot be made
SKIPS: dict[str, set[str]] = {
    "mount-id-twice-err": {"mount-same-id-counted"},  # it builds on mount-same-id
    "remove-mounted": {"mount-same-id-counted"},  # 'in use' is seen through a refused Remove
    "deadlock-mounts": {"latency"},  # the run stops once Get and List no longer answer
}


class State:
    def __init__(self, path: str, root: str, defects: set[str]) -> None:
        self.path, self.root, self.defects = path, root, defects
        self.lock = threading.RLock()
        self.vols: dict[str, dict[str, Any]] = {}
        self.listed: list[str] = []  # "list-stale", "create-lists-twice": names List reports
        self.required = ""  # an option every Create must carry (not a defect)
        if os.path.exists(path):
            with open(path) as f:
                self.vols = json.load(f)
            if "mounts-in-memory" in defects:
                for v in self.vols.values():
                    v["mounts"] = {}
            if "names-from-paths" in defects:  # as a plugin that lists its root directory
                rebuilt: dict[str, dict[str, Any]] = {}
                for n, v in self.vols.items():
                    rebuilt.setdefault(posixpath.normpath(n).split("/")[0], v)
                self.vols = rebuilt
        self.listed = list(self.vols)
        self.handoff: queue.Queue[str] = queue.Queue(maxsize=1)
        if "deadlock-mounts" in defects:
            threading.Thread(target=self.monitor, daemon=True).start()

    def monitor(self) -> None:
        """Takes each handed-off mount, then needs the plugin's lock to record it."""
        while True:
            self.handoff.get()
            self.handoff.task_done()
            with self.lock:
                pass

    def save(self) -> None:
        data = self.vols
        if "mounts-in-memory" in self.defects:
            data = {n: {**v, "mounts": {}} for n, v in self.vols.items()}
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def mountpoint(self, name: str) -> str:
        if "shared-mountpoint" in self.defects:
            return posixpath.join(self.root, "shared")
        if "paths-from-names" in self.defects:
            return posixpath.normpath(posixpath.join(self.root, name))
        key = hashlib.sha256(name.encode()).hexdigest()[:16]
        if "mountpoint-per-process" in self.defects:
            return posixpath.join(self.root, str(os.getpid()), "v-" + key)
        return posixpath.join(self.root, "v-" + key)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State

    def log_message(self, format: str, *args: Any) -> None:  # quiet, and no client address
        pass

    def setup(self) -> None:
        if "closes-idle" in self.state.defects:
            self.timeout = 1.5
        super().setup()

    def reply(self, obj: Any, status: int = 200, raw: bytes | None = None) -> None:
        data = json.dumps(obj).encode() if raw is None else raw
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.docker.plugins.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        d = self.state.defects
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "allowed-hosts" in d and self.headers.get("Host") not in ("", None, "localhost"):
            return self.reply(None, 400, b"Bad Request: invalid Host header")
        ep = self.path.lstrip("/")
        if "empty-body-500" in d and ep == "VolumeDriver.List" and not raw.strip():
            return self.reply(None, 500, b"<html><body>Internal Server Error</body></html>")
        named = ep not in ("VolumeDriver.List", "VolumeDriver.Capabilities", "Plugin.Activate")
        if "go-helpers-eof" in d and named and not raw.strip():
            return self.reply(None, 400, b"EOF\n")  # Go's json decoder on an empty body
        try:
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError as e:
            return self.reply({"Err": f"bad request body: {e}"})
        try:
            out = self.dispatch(ep, body)
        except KeyError as e:
            out = {"Err": str(e.args[0])}
        if isinstance(out, tuple):
            return self.reply(None, out[0], out[1])
        self.reply(out)

    def dispatch(self, ep: str, body: dict[str, Any]) -> Any:
        st, d = self.state, self.state.defects
        name = body.get("Name")
        if ep == "Plugin.Activate":
            return {"Implements": ["NetworkDriver" if "activate-network" in d else "VolumeDriver"]}
        if ep == "VolumeDriver.Capabilities":
            return {"Capabilities": {"Scope": "cluster" if "bad-scope" in d else "local"}}
        if ep == "VolumeDriver.List":
            if "slow-list" in d:
                time.sleep(2.0)
            with st.lock:
                names = st.listed if d & {"list-stale", "create-lists-twice"} else list(st.vols)
                return {"Volumes": [{"Name": n} for n in names]}
        if name is None and "empty-name-created" in d:
            name = ""
        if not isinstance(name, str) or (not name and "empty-name-created" not in d):
            return {"Err": "a volume name is required"}
        if ep == "VolumeDriver.Mount" and "deadlock-mounts" in d:
            return self.mount_handing_off(name, str(body.get("ID", "")))
        with st.lock:
            vol = st.vols.get(name)
            if ep == "VolumeDriver.Create":
                if vol is not None:
                    if "create-lists-twice" in d:
                        st.listed.append(name)
                    return {"Err": "volume exists"} if "create-exists-err" in d else {}
                if "refuses-odd-names" in d and ("/" in name or " " in name):
                    return {"Err": "names may not contain '/' or spaces"}
                key, _, want = st.required.partition("=")
                opts = body.get("Opts") or {}
                if key and key not in opts:
                    return {"Err": f"option {key!r} is required"}
                if want and opts[key] != want.replace("{name}", name):
                    return {"Err": f"option {key}={opts[key]!r}: this volume needs {want!r}"}
                if "shell-names" in d:  # the defect: the name goes through a shell
                    subprocess.run(
                        f'mkdir -p "{st.root}/{name}" 2>/dev/null', shell=True, check=False
                    )
                now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
                st.vols[name] = {"opts": body.get("Opts") or {}, "created": now, "mounts": {}}
                st.listed.append(name)
                st.save()
                return {}
            if vol is None:
                if ep == "VolumeDriver.Get" and "not-found-404" in d:
                    return (404, b"404 page not found\n")
                if ep == "VolumeDriver.Get" and "get-unknown-found" in d:
                    return {"Volume": {"Name": name}}
                if ep == "VolumeDriver.Mount" and "error-plain-text" in d:
                    return (500, b"Internal Server Error\n")
                if ep == "VolumeDriver.Mount" and "mount-unknown-ok" in d:
                    return {"Mountpoint": st.mountpoint(name)}
                if ep == "VolumeDriver.Unmount":
                    return {"Err": "no such volume"} if "unmount-unknown-err" in d else {}
                raise KeyError(f"no such volume: {name}")
            mp = st.mountpoint(name)
            if ep == "VolumeDriver.Get":
                if "slow-get" in d:
                    time.sleep(0.005 * len(st.vols))
                v: dict[str, Any] = {
                    "Name": posixpath.basename(name) if "name-basename" in d else name,
                    "CreatedAt": vol["created"],
                    "Status": {},
                }
                if "created-at-empty" in d:
                    v["CreatedAt"] = ""
                if "status-string" in d:
                    v["Status"] = "ok"
                if vol["mounts"]:
                    v["Mountpoint"] = mp
                return {"Volume": v}
            if ep == "VolumeDriver.Path":
                if "path-empty-reply" in d and vol["mounts"]:
                    return (200, b"")
                return {"Mountpoint": mp if vol["mounts"] else ""}
            if ep == "VolumeDriver.Remove":
                if " " in name and "remove-space-fails" in d:
                    return {"Err": f"subvolume {name.split()[0]}: not found"}
                if vol["mounts"] and "remove-mounted" not in d:
                    return {"Err": f"volume {name} is in use"}
                del st.vols[name]
                if "shared-mountpoint" not in d:
                    shutil.rmtree(mp, ignore_errors=True)
                if not d & {"list-stale"}:
                    st.listed = [n for n in st.listed if n != name]
                st.save()
                return {}
            mid = str(body.get("ID", ""))
            if ep == "VolumeDriver.Mount":
                if mid in vol["mounts"] and "mount-id-twice-err" in d:
                    return {"Err": "already mounted"}
                os.makedirs(mp, exist_ok=True)
                if "racy-refcount" in d:
                    st.lock.release()  # the defect: no lock around read-modify-write
                    try:
                        m = dict(vol["mounts"])
                        time.sleep(0.01)
                        m[mid] = m.get(mid, 0) + 1
                        vol["mounts"] = m
                    finally:
                        st.lock.acquire()
                else:
                    n = vol["mounts"].get(mid, 0)
                    vol["mounts"][mid] = 1 if "ids-as-set" in d else n + 1
                st.save()
                return {"Mountpoint": mp}
            if ep == "VolumeDriver.Unmount":
                n = vol["mounts"].get(mid, 0)
                if n == 0:
                    if "unmount-unknown-releases" in d:
                        vol["mounts"] = {}
                        st.save()
                    return {"Err": "unknown mount ID"} if "unmount-unknown-err" in d else {}
                if n == 1:
                    del vol["mounts"][mid]
                else:
                    vol["mounts"][mid] = n - 1
                st.save()
                return {}
        return (404, b"404 page not found\n")

    def mount_handing_off(self, name: str, mid: str) -> Any:
        """The deadlock-mounts defect: a first Mount hands the volume to the monitor while it
        holds the lock; the monitor takes it, then waits for the lock. The next first Mount
        that gets the lock before the monitor waits forever for the monitor to take its
        hand-off, and holds the lock meanwhile."""
        st = self.state
        with st.lock:
            vol = st.vols.get(name)
            if vol is None:
                return {"Err": f"no such volume: {name}"}
            mp = st.mountpoint(name)
            os.makedirs(mp, exist_ok=True)
            if not vol["mounts"]:
                st.handoff.put(name)
                st.handoff.join()  # an unbuffered channel: wait until the monitor took it
                time.sleep(0.02)  # the mount itself
            vol["mounts"][mid] = vol["mounts"].get(mid, 0) + 1
            st.save()
            return {"Mountpoint": mp}


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 128


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--defect", default="", help="defects or quirks, comma-separated")
    ap.add_argument(
        "--require-opt",
        default="",
        help="KEY or KEY=VALUE every Create must carry ({name} in VALUE: the volume's name)",
    )
    a = ap.parse_args()
    defects: set[str] = set()
    for name in filter(None, a.defect.split(",")):
        if name not in DEFECTS and name not in QUIRKS:
            raise SystemExit(f"unknown defect {name!r}")
        defects |= COMBINED.get(name, {name})
    os.makedirs(a.root, exist_ok=True)
    Handler.state = State(a.state, a.root, defects)
    Handler.state.required = a.require_opt
    if os.path.exists(a.socket):  # a stale socket of a killed predecessor
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(a.socket)
            raise SystemExit(f"{a.socket} is in use by a running plugin")
        except ConnectionRefusedError:
            os.unlink(a.socket)
        finally:
            probe.close()
    signal.signal(signal.SIGTERM, _terminate)
    with Server(a.socket, Handler) as srv:
        try:
            srv.serve_forever()
        finally:
            if "socket-left-behind" not in defects:
                os.unlink(a.socket)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    main()
