"""This node's etcd lease: granted at start, kept alive, re-granted after it is lost.

Everything that must disappear when the node dies (its published mount records, the holder keys
of its single-node volumes, its presence key) is attached to this lease. ``valid_lease()`` is the
fencing test: it returns the lease only while etcd has confirmed it recently enough that it
cannot have expired; a node that cannot prove that must not take new single-node mounts.

Self-fencing: a watchdog thread (not the lease thread, which may sit in a slow request) calls
``on_expiring`` once the lease has gone unrenewed until ``fence_margin`` seconds before it could
expire, and again every ``RECHECK`` seconds while that lasts. Why the deadline is safe:

* The deadline is ``sent + TTL``, ``sent`` read from ``time.monotonic()`` *before* the last
  successful grant or keep-alive request left this node. etcd starts the lease's TTL when its
  leader processes that request, which is later, so the lease lives at least until our deadline
  (a leader change only extends leases: a new leader renews them all for a full TTL).
* ``time.monotonic()`` never jumps with wall-clock changes; its rate differs from the etcd
  leader's clock by at most the kernel's NTP slew limit (500 ppm: 7.5 ms over 15 s), far inside
  the margin.
* The margin (:func:`fence_margin`: a quarter of the TTL, at least one second) is what the fence
  itself and a scheduling pause of this process may take. The block driver's fence is a freeze
  (writing back the volume's dirty pages: ~40 ms with little, 2.2 s with 1 GiB; bound them with
  ``vm.dirty_bytes``) and a shutdown; volumes are fenced in parallel, and the watchdog holds no
  lock the rest of the plugin takes. Measured in bench/cluster_bench.py.
* After the deadline another node still has to see the holder key vanish (etcd's leader checks
  lease expiry about every 500 ms) and then mount: extra time on our side, never less.

What it cannot cover: a node whose whole kernel is stopped (a VM paused or suspended) past its
deadline, or a plugin process that is not running while its containers write.
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

#: While the lease cannot be proven alive, the watchdog asks again this often (new mounts that
#: were in flight at the deadline get their records, and are fenced on the next call).
RECHECK = 0.5


def fence_margin(ttl: float) -> float:
    """Seconds before the earliest possible lease expiry at which a node fences itself."""
    return max(1.0, ttl / 4)


class Session:
    def __init__(
        self,
        client: EtcdClient,
        ttl: float,
        *,
        on_lease: Callable[[int], None],
        on_tick: Callable[[int], None],
        on_lost: Callable[[], None],
        on_expiring: Callable[[str], None] | None = None,
    ) -> None:
        # etcd leases have whole seconds (and a server minimum of about 2 s).
        self.ttl = max(2, math.ceil(ttl))
        self.client = client
        #: Keep-alive every third of the TTL; a renewal that takes longer counts as failed.
        self.period = self.ttl / 3
        self._on_lease = on_lease
        self._on_tick = on_tick
        self._on_lost = on_lost
        self._on_expiring = on_expiring
        #: Fence this long before the lease could expire (see the module's docstring).
        self.fence_margin = fence_margin(self.ttl)
        self._confirmed_at: float | None = None  # monotonic send time of the last renewal
        self._lease: int | None = None
        self._valid_until = 0.0  # monotonic: the lease surely lives until then
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="dockvol-lease", daemon=True)
        self._watchdog = threading.Thread(
            target=self._watch_deadline, name="dockvol-fence", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        self._watchdog.start()

    @property
    def lease(self) -> int | None:
        return self._lease

    def valid_lease(self) -> int | None:
        """The lease, if etcd confirmed it so recently that it cannot expire before this node
        would fence itself: a node about to fence takes no new single-node mounts."""
        with self._lock:
            if self._lease is not None and time.monotonic() < self.fence_deadline():
                return self._lease
            return None

    def fence_deadline(self) -> float:
        """Monotonic time at which this node must fence unless the lease is renewed first."""
        return self._valid_until - self.fence_margin

    def unrenewed_for(self) -> float | None:
        """Seconds since the last successful renewal was sent (None: never renewed)."""
        at = self._confirmed_at
        return None if at is None else time.monotonic() - at

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
            self._confirmed_at = sent
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
                self._confirmed_at = sent
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

    def _watch_deadline(self) -> None:
        """Call ``on_expiring`` from the fence deadline on, until a renewal moves it."""
        while not self._stop.is_set():
            left = self.fence_deadline() - time.monotonic()
            if left > 0:
                # A renewal only moves the deadline later: waking at the old one and looking
                # again is enough (no need to be woken by the lease thread).
                self._stop.wait(left)
                continue
            if self._on_expiring is not None:
                try:
                    self._on_expiring(self._why())
                except Exception:  # the watchdog must outlive any failure
                    log.exception("self-fencing failed")
            self._stop.wait(RECHECK)

    def _why(self) -> str:
        age = self.unrenewed_for()
        if age is None:
            return f"no etcd lease since the plugin started (ttl {self.ttl}s)"
        return (
            f"etcd lease not renewed for {age:.1f}s of its {self.ttl}s ttl "
            f"({self.last_error or 'no answer'}); another node may take it over "
            f"{max(0.0, self._valid_until - time.monotonic()):.1f}s from now"
        )

    def close(self, revoke: bool = True) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if self._watchdog.is_alive():
            self._watchdog.join(5)
        lease = self._lease
        if revoke and lease is not None:
            # A clean stop releases holders and mount records at once rather than after the TTL.
            with contextlib.suppress(EtcdUnavailable, EtcdError, OSError):
                self.client.lease_revoke(lease)
