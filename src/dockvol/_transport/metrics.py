"""Prometheus metrics and a health endpoint, on a separate (loopback by default) listener.

The Prometheus text format (version 0.0.4) is small enough to write by hand, so there is no
client-library dependency. Label values are bounded sets (the protocol's endpoints and a few
outcomes): a client sending random paths cannot grow memory through metrics.

``/metrics`` and ``/health`` are never served on the plugin's own socket: the engine's socket is
for the engine, and an operator's scraper should not need root or the engine's client key.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final

log = logging.getLogger("dockvol.metrics")

#: Endpoints with their own label value; anything else is counted as ``other``.
KNOWN_ENDPOINTS: Final = frozenset(
    {
        "Plugin.Activate",
        "VolumeDriver.Capabilities",
        "VolumeDriver.Create",
        "VolumeDriver.Get",
        "VolumeDriver.List",
        "VolumeDriver.Mount",
        "VolumeDriver.Unmount",
        "VolumeDriver.Path",
        "VolumeDriver.Remove",
        "Dockvol.Status",
    }
)
#: ``ok``: success; ``error``: an ``Err`` reply (the user's or the driver's problem);
#: ``bad_request``: undecodable body; ``too_large``: body over the limit; ``not_found``: unknown
#: path; ``internal``: a bug caught by the app; ``unavailable``: shed under load.
OUTCOMES: Final = frozenset(
    {"ok", "error", "bad_request", "too_large", "not_found", "internal", "unavailable"}
)
#: Latency buckets (seconds): Get/List in microseconds, Create/Mount up to the engine's 2 min.
BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(slots=True)
class _Histogram:
    counts: list[int]  # per bucket, not cumulative (+Inf is the last)
    total: float = 0.0
    n: int = 0


@dataclass(frozen=True, slots=True)
class _Gauge:
    name: str
    help: str
    fn: Callable[[], float]


@dataclass(slots=True)
class Metrics:
    """Counters, latency histograms and gauges for one plugin process. Thread-safe."""

    driver: str = ""
    version: str = ""
    buckets: tuple[float, ...] = BUCKETS
    _requests: dict[tuple[str, str], int] = field(default_factory=dict)
    _latency: dict[str, _Histogram] = field(default_factory=dict)
    _driver_errors: int = 0
    _gauges: list[_Gauge] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _started: float = field(default_factory=time.time)

    def observe(self, endpoint: str, outcome: str, seconds: float) -> None:
        """Count one request to ``endpoint`` (``VolumeDriver.Get``...) that ended in ``outcome``."""
        ep = endpoint.lstrip("/")
        if ep not in KNOWN_ENDPOINTS:
            ep = "other"
        if outcome not in OUTCOMES:
            outcome = "other"
        i = bisect.bisect_left(self.buckets, seconds)
        with self._lock:
            self._requests[ep, outcome] = self._requests.get((ep, outcome), 0) + 1
            h = self._latency.get(ep)
            if h is None:
                h = self._latency[ep] = _Histogram([0] * (len(self.buckets) + 1))
            h.counts[i] += 1
            h.total += seconds
            h.n += 1

    def driver_error(self) -> None:
        """Count a failure raised by the driver (create, mount, unmount, remove, recover...)."""
        with self._lock:
            self._driver_errors += 1

    def gauge(self, name: str, help: str, fn: Callable[[], float]) -> None:
        """Register a gauge read from ``fn`` at every scrape (``volumes``, ``active_mounts``...).

        ``name`` gets the ``dockvol_`` prefix. ``fn`` runs on the metrics listener's event loop:
        it must be cheap and must not block.
        """
        with self._lock:
            self._gauges.append(_Gauge(f"dockvol_{name}", help, fn))

    def requests(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._requests)

    def driver_errors(self) -> int:
        with self._lock:
            return self._driver_errors

    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4)."""
        with self._lock:
            requests = sorted(self._requests.items())
            latency = sorted((ep, list(h.counts), h.total, h.n) for ep, h in self._latency.items())
            errors = self._driver_errors
            gauges = list(self._gauges)
        out: list[str] = []

        def family(name: str, kind: str, help: str) -> None:
            out.append(f"# HELP {name} {help}")
            out.append(f"# TYPE {name} {kind}")

        family("dockvol_build_info", "gauge", "Version and driver of this plugin (always 1).")
        out.append(f"dockvol_build_info{_labels(version=self.version, driver=self.driver)} 1")
        family("dockvol_start_time_seconds", "gauge", "When this plugin process started.")
        out.append(f"dockvol_start_time_seconds {self._started:.3f}")

        family("dockvol_requests_total", "counter", "Requests by endpoint and outcome.")
        for (ep, outcome), n in requests:
            out.append(f"dockvol_requests_total{_labels(endpoint=ep, outcome=outcome)} {n}")

        name = "dockvol_request_duration_seconds"
        family(name, "histogram", "Time to answer a request, by endpoint.")
        for ep, counts, total, n in latency:
            cumulative = 0
            for bound, c in zip((*self.buckets, float("inf")), counts, strict=True):
                cumulative += c
                le = "+Inf" if bound == float("inf") else _num(bound)
                out.append(f"{name}_bucket{_labels(endpoint=ep, le=le)} {cumulative}")
            out.append(f"{name}_sum{_labels(endpoint=ep)} {_num(total)}")
            out.append(f"{name}_count{_labels(endpoint=ep)} {n}")

        family("dockvol_driver_errors_total", "counter", "Failures raised by the driver.")
        out.append(f"dockvol_driver_errors_total {errors}")

        for g in gauges:
            try:
                value = float(g.fn())
            except Exception:  # a broken gauge must not break the scrape
                log.exception("metrics gauge %s failed", g.name)
                continue
            family(g.name, "gauge", g.help)
            out.append(f"{g.name} {_num(value)}")
        return ("\n".join(out) + "\n").encode()


def _num(v: float) -> str:
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if v != int(v) else str(int(v))


def _labels(**labels: str) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


# --- The HTTP side ------------------------------------------------------------------------------

HealthFn = Callable[[], Mapping[str, Any]]
_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def metrics_app(
    metrics: Metrics, health_fn: HealthFn
) -> Callable[[_Scope, _Receive, _Send], Awaitable[None]]:
    """An ASGI app: ``GET /metrics`` (Prometheus) and ``GET /health`` (JSON; 503 until ready).

    ``health_fn`` returns a JSON-able mapping with at least ``ready`` (bool); the service adds
    the last reconciliation's result.
    """

    async def app(scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if path not in ("/metrics", "/health"):
            await _reply(send, 404, "application/json", b'{"error": "try /metrics or /health"}\n')
            return
        if method not in ("GET", "HEAD"):
            await _reply(send, 405, "application/json", b'{"error": "use GET"}\n', allow="GET")
            return
        if path == "/metrics":
            body, ctype, status = metrics.render(), CONTENT_TYPE, 200
        else:
            try:
                health = dict(health_fn())
            except Exception as exc:  # report, never crash the listener
                log.exception("health check failed")
                health = {"ready": False, "error": f"health check failed: {type(exc).__name__}"}
            ready = bool(health.get("ready"))
            body = (json.dumps(health, default=str, sort_keys=True) + "\n").encode()
            ctype, status = "application/json", 200 if ready else 503
        await _reply(send, status, ctype, b"" if method == "HEAD" else body, length=len(body))

    return app


async def _reply(
    send: _Send,
    status: int,
    ctype: str,
    body: bytes,
    *,
    length: int | None = None,
    allow: str | None = None,
) -> None:
    headers = [
        (b"content-type", ctype.encode()),
        (b"content-length", str(len(body) if length is None else length).encode()),
        (b"cache-control", b"no-store"),
    ]
    if allow:
        headers.append((b"allow", allow.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def parse_listen(text: str) -> tuple[str, int]:
    """``--metrics`` value: ``HOST:PORT``, ``:PORT`` or ``PORT`` (host defaults to 127.0.0.1)."""
    from .tls import parse_hostport

    return parse_hostport(text if ":" in text else ":" + text)


@contextlib.asynccontextmanager
async def serve_metrics(
    addr: str, metrics: Metrics, health_fn: HealthFn
) -> AsyncIterator[tuple[str, int]]:
    """Serve ``/metrics`` and ``/health`` on ``addr`` while the block runs; yields (host, port)."""
    from .server import HTTPServer
    from .side import bind_tcp, serve_beside
    from .tls import is_loopback

    host, port = parse_listen(addr)
    if not is_loopback(host):
        log.warning(
            "metrics listener on %s is reachable from the network: it shows request counts and "
            "volume numbers (no names, no options) to anyone who can connect",
            host,
        )
    sock = bind_tcp(host, port, "metrics", backlog=64)
    server = HTTPServer(
        metrics_app(metrics, health_fn),
        max_connections=64,  # a scraper needs one connection
        max_head=8192,
        max_body=8192,  # GET and HEAD only
        graceful_seconds=5,
    )
    try:
        bound = sock.getsockname()
        async with serve_beside(server, sock, f"metrics listener on {addr}"):
            yield bound[0], bound[1]
    finally:
        sock.close()
