"""A tiny standalone volume plugin (stdlib only) for testing the conformance kit.

Without ``--defect`` it is a correct plugin: durable JSON state (fsync + rename), per-ID mount
counts, a lock, keep-alive without idle timeout. Each ``--defect NAME`` swaps in ONE known
defect (see DEFECTS); the kit must report it with the named checks and nothing else.

    python stubplugin.py --socket S --state FILE --root DIR [--defect NAME]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import posixpath
import signal
import socket
import socketserver
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

# defect -> the checks that must fail because of it (all others must pass)
DEFECTS: dict[str, set[str]] = {
    "allowed-hosts": {"request-tolerance"},  # refuses Host: plugin.moby.localhost (400)
    "closes-idle": {"keep-alive"},  # closes connections idle for 1.5 s
    "empty-body-500": {"empty-body"},  # List with an empty body: 500 and HTML
    "path-empty-reply": {"reply-shape"},  # Path success: 200 with an empty body
    "error-plain-text": {"error-replies"},  # Mount of an unknown volume: 500, text
    "activate-network": {"activate"},  # Implements ["NetworkDriver"]
    "bad-scope": {"capabilities"},  # Scope "cluster"
    "created-at-empty": {"get-created-at"},  # "CreatedAt": ""
    "status-string": {"get-status"},  # "Status": "ok"
    "not-found-404": {"get-not-found"},  # unknown Get: 404, text
    "create-exists-err": {"create-idempotent"},  # Create of an existing volume: Err
    "mount-id-twice-err": {"mount-same-id"},  # Mount with an already mounted ID: Err
    "unmount-unknown-err": {"unmount-unknown-id"},  # Unmount of an unknown ID: Err
    "remove-mounted": {"remove-while-mounted"},  # Remove ignores mounts
    "ids-as-set": {"mount-same-id-counted"},  # IDs in a set, not counted
    "racy-refcount": {"mount-concurrent"},  # read-modify-write of mounts without a lock
    "list-stale": {"list-consistency"},  # List keeps removed volumes
    "slow-get": {"latency"},  # Get scans all volumes slowly
    "name-basename": {"get-echoes-name"},  # Get returns the basename of the name
    "shared-mountpoint": {"mount-path"},  # every volume mounts at one path
    # mounts not persisted: every check that restarts the plugin must see it
    "mounts-in-memory": {"stop-removes-socket", "crash-while-mounted", "crash-during-burst"},
    "socket-left-behind": {"stop-removes-socket"},  # SIGTERM leaves the socket file
    "mountpoint-per-process": {"crash-while-mounted"},  # paths change with every restart
}


class State:
    def __init__(self, path: str, root: str, defect: str) -> None:
        self.path, self.root, self.defect = path, root, defect
        self.lock = threading.RLock()
        self.vols: dict[str, dict[str, Any]] = {}
        self.listed: set[str] = set()  # "list-stale": names List reports
        self.required = ""  # an option every Create must carry (not a defect)
        if os.path.exists(path):
            with open(path) as f:
                self.vols = json.load(f)
            if defect == "mounts-in-memory":
                for v in self.vols.values():
                    v["mounts"] = {}
        self.listed = set(self.vols)

    def save(self) -> None:
        data = self.vols
        if self.defect == "mounts-in-memory":
            data = {n: {**v, "mounts": {}} for n, v in self.vols.items()}
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def mountpoint(self, name: str) -> str:
        if self.defect == "shared-mountpoint":
            return posixpath.join(self.root, "shared")
        if self.defect == "mountpoint-per-process":
            key = hashlib.sha256(name.encode()).hexdigest()[:16]
            return posixpath.join(self.root, str(os.getpid()), "v-" + key)
        return posixpath.join(self.root, "v-" + hashlib.sha256(name.encode()).hexdigest()[:16])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State

    def log_message(self, format: str, *args: Any) -> None:  # quiet, and no client address
        pass

    def setup(self) -> None:
        if self.state.defect == "closes-idle":
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
        d = self.state.defect
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if d == "allowed-hosts" and self.headers.get("Host") not in ("", None, "localhost"):
            return self.reply(None, 400, b"Bad Request: invalid Host header")
        ep = self.path.lstrip("/")
        if d == "empty-body-500" and ep == "VolumeDriver.List" and not raw.strip():
            return self.reply(None, 500, b"<html><body>Internal Server Error</body></html>")
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
        st, d = self.state, self.state.defect
        name = body.get("Name")
        if ep == "Plugin.Activate":
            return {"Implements": ["NetworkDriver" if d == "activate-network" else "VolumeDriver"]}
        if ep == "VolumeDriver.Capabilities":
            return {"Capabilities": {"Scope": "cluster" if d == "bad-scope" else "local"}}
        if ep == "VolumeDriver.List":
            with st.lock:
                names = st.listed if d == "list-stale" else list(st.vols)
                return {"Volumes": [{"Name": n} for n in names]}
        if not isinstance(name, str) or not name:
            return {"Err": "a volume name is required"}
        with st.lock:
            vol = st.vols.get(name)
            if ep == "VolumeDriver.Create":
                if vol is not None:
                    return {"Err": "volume exists"} if d == "create-exists-err" else {}
                if st.required and st.required not in (body.get("Opts") or {}):
                    return {"Err": f"option {st.required!r} is required"}
                now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
                st.vols[name] = {"opts": body.get("Opts") or {}, "created": now, "mounts": {}}
                st.listed.add(name)
                st.save()
                return {}
            if vol is None:
                if ep == "VolumeDriver.Get" and d == "not-found-404":
                    return (404, b"404 page not found\n")
                if ep == "VolumeDriver.Mount" and d == "error-plain-text":
                    return (500, b"Internal Server Error\n")
                if ep == "VolumeDriver.Unmount":
                    return {}
                raise KeyError(f"no such volume: {name}")
            mp = st.mountpoint(name)
            if ep == "VolumeDriver.Get":
                if d == "slow-get":
                    time.sleep(0.005 * len(st.vols))
                v: dict[str, Any] = {
                    "Name": posixpath.basename(name) if d == "name-basename" else name,
                    "CreatedAt": vol["created"],
                    "Status": {},
                }
                if d == "created-at-empty":
                    v["CreatedAt"] = ""
                if d == "status-string":
                    v["Status"] = "ok"
                if vol["mounts"]:
                    v["Mountpoint"] = mp
                return {"Volume": v}
            if ep == "VolumeDriver.Path":
                if d == "path-empty-reply" and vol["mounts"]:
                    return (200, b"")
                return {"Mountpoint": mp if vol["mounts"] else ""}
            if ep == "VolumeDriver.Remove":
                if vol["mounts"] and d != "remove-mounted":
                    return {"Err": f"volume {name} is in use"}
                del st.vols[name]
                if d != "list-stale":
                    st.listed.discard(name)
                st.save()
                return {}
            mid = str(body.get("ID", ""))
            if ep == "VolumeDriver.Mount":
                if mid in vol["mounts"] and d == "mount-id-twice-err":
                    return {"Err": "already mounted"}
                os.makedirs(mp, exist_ok=True)
                if d == "racy-refcount":
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
                    vol["mounts"][mid] = 1 if d == "ids-as-set" else n + 1
                st.save()
                return {"Mountpoint": mp}
            if ep == "VolumeDriver.Unmount":
                n = vol["mounts"].get(mid, 0)
                if n == 0:
                    return {"Err": "unknown mount ID"} if d == "unmount-unknown-err" else {}
                if n == 1:
                    del vol["mounts"][mid]
                else:
                    vol["mounts"][mid] = n - 1
                st.save()
                return {}
        return (404, b"404 page not found\n")


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 128


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--defect", default="", choices=["", *DEFECTS])
    ap.add_argument("--require-opt", default="", help="an option every Create must carry")
    a = ap.parse_args()
    os.makedirs(a.root, exist_ok=True)
    Handler.state = State(a.state, a.root, a.defect)
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
            if a.defect != "socket-left-behind":
                os.unlink(a.socket)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    main()
