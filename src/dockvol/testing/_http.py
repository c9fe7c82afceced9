"""A tiny HTTP/1.1 client over unix sockets, TCP and TLS, shaped like the engine's Go client.

Standard library only: the kit must run against any plugin without dockvol's server side.
"""

from __future__ import annotations

import gzip
import http.client
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# What the engine's Go client (pkg/plugins, Go's net/http transport) puts on the wire, in its
# order (seen from engine 20.10.24). Over unix sockets compression is disabled; over TCP Go's
# transport adds Accept-Encoding: gzip and the Host is the plugin's host:port.
ACCEPT = "application/vnd.docker.plugins.v1.2+json"
USER_AGENT = "Go-http-client/1.1"
#: The Host each engine sends over a unix socket (seen on the wire): 20.10 an empty one, 26 the
#: placeholder name moby gives local sockets. Over TCP both send the plugin's host:port.
UNIX_HOST = {"20.10": "", "26": "plugin.moby.localhost"}


@dataclass(frozen=True)
class Address:
    """Where a plugin listens: a unix socket path, or a TCP host:port with optional TLS."""

    unix: str | None = None
    host: str = ""
    port: int = 0
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    @classmethod
    def parse(
        cls,
        url: str,
        *,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> Address:
        """``unix:///path``, ``/path``, ``tcp://h:p``, ``http://h:p`` or ``https://h:p``."""
        if url.startswith("/"):
            return cls(unix=url)
        parts = urlsplit(url)
        if parts.scheme == "unix":
            path = parts.path or parts.netloc
            if not path:
                raise ValueError(f"no socket path in {url!r}")
            return cls(unix=path)
        if parts.scheme not in ("tcp", "http", "https"):
            raise ValueError(
                f"unsupported address {url!r}: use unix://, tcp://, http:// or https://"
            )
        if not parts.hostname or not parts.port:
            raise ValueError(f"address {url!r} needs a host and a port")
        return cls(
            host=parts.hostname,
            port=parts.port,
            tls=parts.scheme == "https",
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )

    def __str__(self) -> str:
        if self.unix is not None:
            return f"unix://{self.unix}"
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        # Like the engine: without a CA the server's certificate is not verified.
        ctx = ssl.create_default_context(cafile=self.tls_ca) if self.tls_ca else None
        if ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.tls_cert:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        return ctx


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self.unix_path)
        except BaseException:
            s.close()
            raise
        self.sock = s


@dataclass
class RawReply:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    request_headers: list[tuple[str, str]] = field(default_factory=list)


class Connection:
    """One keep-alive HTTP connection, reopened when the server has closed it."""

    def __init__(self, address: Address, timeout: float = 60.0, *, engine: str = "20.10") -> None:
        if engine not in UNIX_HOST:
            raise ValueError(f"unknown engine {engine!r}: use one of {', '.join(UNIX_HOST)}")
        self.address = address
        self.timeout = timeout
        self.engine = engine  # whose Host header to send by default
        self._conn: http.client.HTTPConnection | None = None
        #: How many times a request needed a new connection (0 after the first one).
        self.reconnects = -1

    def _open(self) -> http.client.HTTPConnection:
        a = self.address
        if a.unix is not None:
            return _UnixConnection(a.unix, self.timeout)
        if a.tls:
            return http.client.HTTPSConnection(
                a.host, a.port, timeout=self.timeout, context=a.ssl_context()
            )
        return http.client.HTTPConnection(a.host, a.port, timeout=self.timeout)

    def request(
        self,
        path: str,
        body: bytes,
        *,
        host: str | None = None,
        headers: Sequence[tuple[str, str]] | None = None,
        timeout: float | None = None,
    ) -> RawReply:
        """POST ``body`` to ``path``. ``host`` defaults to the engine's (over unix sockets
        ``UNIX_HOST[engine]``); ``headers`` replaces the engine's set (after Host)."""
        a = self.address
        if host is None:
            host = UNIX_HOST[self.engine] if a.unix is not None else f"{a.host}:{a.port}"
        if self._conn is None:
            self._conn = self._open()
            self.reconnects += 1
        conn = self._conn
        conn.timeout = self.timeout if timeout is None else timeout
        if conn.sock is not None:
            conn.sock.settimeout(conn.timeout)
        if headers is None:
            headers = [
                ("User-Agent", USER_AGENT),
                ("Content-Length", str(len(body))),
                ("Accept", ACCEPT),
            ]
            if a.unix is None:
                headers.append(("Accept-Encoding", "gzip"))
        sent = [("Host", host), *headers]
        try:
            conn.putrequest("POST", path, skip_host=True, skip_accept_encoding=True)
            for k, v in sent:
                conn.putheader(k, v)
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
        except BaseException:
            self.close()
            raise
        hdrs = list(resp.getheaders())
        if resp.getheader("Content-Encoding", "").lower() == "gzip":
            data = gzip.decompress(data)  # Go's transport decompresses transparently
        if resp.will_close:
            self.close()
        return RawReply(resp.status, resp.reason, hdrs, data, sent)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
