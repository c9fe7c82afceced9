"""A real etcd cluster on loopback for tests and benchmarks (Debian's ``etcd-server``: etcd 3.4).

Every member gets free 127.0.0.1 ports and a temp data dir; ``EtcdCluster.start(3)`` returns once
the cluster has a leader and accepts writes. ``kill(i)`` / ``restart(i)`` simulate a member's
death; ``stop()`` ends every member and deletes the data dirs. Also :class:`CutProxy`: a TCP
forwarder a node talks to instead of etcd, so a test can make etcd unreachable from that node
only (``cut()``) without touching the cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port

ETCD = "/usr/bin/etcd"


class EtcdError(RuntimeError):
    pass


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    tls: bool = False

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


@dataclass
class EtcdCluster:
    base: Path
    members: list[Member] = field(default_factory=list)
    #: A PKI made by ``dockvol tls init`` (ca.pem, server.pem, client.pem and keys): clients
    #: must then speak TLS and present a certificate signed by that CA.
    pki: Path | None = None

    @classmethod
    def start(cls, size: int = 3, timeout: float = 30.0, pki: Path | None = None) -> EtcdCluster:
        if not Path(ETCD).exists():
            raise EtcdError(f"{ETCD} not found: apt-get install -y etcd-server (see .ci/run)")
        base = Path(tempfile.mkdtemp(prefix="dvetcd", dir="/tmp"))
        c = cls(base, pki=pki)
        for i in range(size):
            c.members.append(
                Member(
                    f"m{i}",
                    free_port(),
                    free_port(),
                    base / f"m{i}",
                    base / f"m{i}.log",
                    tls=pki is not None,
                )
            )
        try:
            for m in c.members:
                c._launch(m, "new")
            c.wait_healthy(timeout)
        except BaseException:
            c.stop()
            raise
        return c

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{m.client_port}" for m in self.members]

    @property
    def url(self) -> str:
        """The ``--registry`` value for dockvol: every member."""
        if self.pki is None:
            return "etcd://" + ",".join(self.endpoints)
        p = self.pki
        return (
            "etcds://" + ",".join(self.endpoints)
            + f"/dockvol?ca={p}/ca.pem&cert={p}/client.pem&key={p}/client-key.pem"
        )  # fmt: skip

    def _ssl(self) -> ssl.SSLContext | None:
        if self.pki is None:
            return None
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.pem"))
        ctx.load_cert_chain(self.pki / "client.pem", self.pki / "client-key.pem")
        return ctx

    def _launch(self, m: Member, state: str) -> None:
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        args = [
            ETCD, "--name", m.name, "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial, "--initial-cluster-state", state,
            "--initial-cluster-token", self.base.name,
            # Fast elections: a killed leader is replaced within about a second.
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--logger", "zap", "--log-level", "warn",
        ]  # fmt: skip
        if self.pki is not None:
            p = self.pki
            args += [
                "--cert-file", str(p / "server.pem"), "--key-file", str(p / "server-key.pem"),
                "--trusted-ca-file", str(p / "ca.pem"), "--client-cert-auth",
            ]  # fmt: skip
        env = dict(os.environ)
        if platform.machine() not in ("x86_64", "AMD64"):
            # etcd 3.4 refuses to start on other architectures (arm64...) unless told to.
            env["ETCD_UNSUPPORTED_ARCH"] = {"aarch64": "arm64"}.get(
                platform.machine(), platform.machine()
            )
        with open(m.log, "ab") as log:
            m.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )

    def _put(self, m: Member, timeout: float = 2.0) -> bool:
        body = json.dumps({"key": "X19oZWFsdGhfXw==", "value": ""}).encode()  # "__health__"
        req = urllib.request.Request(f"{m.client_url}/v3/kv/put", data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl()) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every running member accepts a write (so a leader is elected)."""
        deadline = time.monotonic() + timeout
        pending = [m for m in self.members if m.proc is not None]
        while pending and time.monotonic() < deadline:
            for m in list(pending):
                assert m.proc is not None
                if m.proc.poll() is not None:
                    raise EtcdError(f"etcd {m.name} exited:\n{m.log.read_text(errors='replace')}")
                if self._put(m):
                    pending.remove(m)
            if pending:
                time.sleep(0.1)  # polling for readiness
        if pending:
            raise EtcdError(f"etcd members {[m.name for m in pending]} not healthy in {timeout}s")

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` (its data dir stays, so it can be restarted)."""
        m = self.members[i]
        if m.proc is not None:
            m.proc.kill()
            m.proc.wait()
            m.proc = None

    def restart(self, i: int, timeout: float = 30.0) -> None:
        self._launch(self.members[i], "existing")
        self.wait_healthy(timeout)

    def stop(self) -> None:
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                os.killpg(m.proc.pid, signal.SIGTERM)
                try:
                    m.proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(m.proc.pid, signal.SIGKILL)
                    m.proc.wait()
            m.proc = None
        shutil.rmtree(self.base, ignore_errors=True)


def make_pki(d: Path) -> Path:
    """A CA, an etcd server certificate and a client certificate (openssl), in ``d``.

    etcd's HTTP gateway connects to its own gRPC server with the server certificate, so with
    ``--client-cert-auth`` that certificate must allow client authentication too.
    """
    d.mkdir(parents=True, exist_ok=True)

    def ssl_(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ssl_("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
         "-keyout", "ca-key.pem", "-out", "ca.pem")  # fmt: skip
    for name, usage, san in (
        ("server", "serverAuth,clientAuth", "IP:127.0.0.1,DNS:localhost"),
        ("client", "clientAuth", "DNS:dockvol"),
    ):
        (d / f"{name}.ext").write_text(f"extendedKeyUsage={usage}\nsubjectAltName={san}\n")
        ssl_("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={name}",
             "-keyout", f"{name}-key.pem", "-out", f"{name}.csr")  # fmt: skip
        ssl_("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
             "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")  # fmt: skip
    return d


class CutProxy:
    """Forwards 127.0.0.1:``port`` to ``target`` (host:port) until ``cut()``.

    ``cut()`` closes every open connection and refuses new ones (a partition the node notices at
    once: connections fail fast). ``blackhole()`` is the silent kind: connections stay open and
    new ones are accepted, but nothing gets through, so only timeouts tell. ``heal()`` lets
    traffic through again (connections that lost data in a blackhole are closed).
    """

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._cut = False
        self._blackhole = False
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut:
                client.close()
                continue
            if self._blackhole:
                with self._lock:
                    self._conns.add(client)  # accepted, never answered
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self._blackhole:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)

    def cut(self) -> None:
        self._cut = True
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def blackhole(self) -> None:
        self._blackhole = True

    def heal(self) -> None:
        if self._blackhole:
            self.cut()  # streams that lost bytes cannot be resumed: make their clients reconnect
            self._blackhole = False
        self._cut = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()
