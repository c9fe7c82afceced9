"""This node's etcd lease: granted at start, kept alive, re-granted after it is lost.

Everything that must disappear when the node dies (its published mount records, the holder keys
of its single-node volumes, its presence key) is attached to this lease. ``valid_lease()`` is the
fencing test: it returns the lease only while etcd has confirmed it recently enough that it
cannot have expired; a node that cannot prove that must not take new single-node mounts.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable

from .client import EtcdClient, EtcdError, EtcdUnavailable, LeaseNotFound

log = logging.getLogger("dockvol.cluster")


class Session:
    def __init__(
        self,
        client: EtcdClient,
        ttl: float,
        *,
        on_lease: Callable[[int], None],
        on_tick: Callable[[int], None],
        on_lost: Callable[[], None],
    ) -> None:
        # etcd leases have whole seconds (and a server minimum of about 2 s).
        self.ttl = max(2, math.ceil(ttl))
        self.client = client
        #: Keep-alive every third of the TTL; a renewal that takes longer counts as failed.
        self.period = self.ttl / 3
        self._on_lease = on_lease
        self._on_tick = on_tick
        self._on_lost = on_lost
        self._lease: int | None = None
        self._valid_until = 0.0  # monotonic: the lease surely lives until then
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="dockvol-lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def lease(self) -> int | None:
        return self._lease

    def valid_lease(self) -> int | None:
        """The lease, if etcd confirmed it so recently that it cannot have expired yet."""
        with self._lock:
            if self._lease is not None and time.monotonic() < self._valid_until:
                return self._lease
            return None

    def connected(self) -> bool:
        return self.last_error is None and self.valid_lease() is not None

    def kick(self) -> None:
        """Run a round now (after a failed publish, to retry soon)."""
        self._wake.set()

    def lost(self) -> None:
        """etcd said the lease is gone (a put with it failed): grant a new one at once."""
        with self._lock:
            self._lease = None
            self._valid_until = 0.0
        self._wake.set()

    # -- the loop ------------------------------------------------------------------------------
    def grant(self) -> int:
        """Grant a lease now (blocking); also called once at start."""
        sent = time.monotonic()
        lease, ttl = self.client.lease_grant(self.ttl, self.period)
        with self._lock:
            self._lease = lease
            # Measured from before the request: the server's clock started no earlier.
            self._valid_until = sent + ttl
        self.last_error = None
        log.info("etcd lease %x granted (ttl %ss)", lease, ttl)
        self._on_lease(lease)
        return lease

    def _round(self) -> None:
        lease = self._lease
        if lease is None:
            self.grant()
            return
        sent = time.monotonic()
        try:
            ttl = self.client.lease_keepalive(lease, self.period)
        except LeaseNotFound:
            log.warning("etcd lease %x expired; taking a new one and republishing", lease)
            with self._lock:
                self._lease = None
                self._valid_until = 0.0
            self._on_lost()
            self.grant()
            return
        with self._lock:
            if self._lease == lease:
                self._valid_until = sent + ttl
        was_down = self.last_error is not None
        self.last_error = None
        if was_down:
            log.info("etcd reachable again")
            self._on_lost()  # resynchronise the view: the watch may have missed changes
        self._on_tick(lease)

    def _run(self) -> None:
        period = self.period
        while not self._stop.is_set():
            retry = period
            try:
                self._round()
            except (EtcdUnavailable, EtcdError, OSError) as exc:
                if self.last_error is None:
                    log.error(
                        "etcd unreachable (%s): single-node mounts are refused until it answers",
                        exc,
                    )
                    self._on_lost()
                self.last_error = str(exc)
                retry = min(period, 0.5)
            except Exception:  # never let the lease thread die
                log.exception("etcd lease round failed")
                retry = min(period, 0.5)
            self._wake.wait(retry)
            self._wake.clear()

    def close(self, revoke: bool = True) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5)
        lease = self._lease
        if revoke and lease is not None:
            # A clean stop releases holders and mount records at once rather than after the TTL.
            with contextlib.suppress(EtcdUnavailable, EtcdError, OSError):
                self.client.lease_revoke(lease)
