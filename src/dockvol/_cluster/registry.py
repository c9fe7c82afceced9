"""The cluster registry: volume records in etcd, shared by every node; mounts per node.

Design:

* **Definitions** (name, key, options, creation time) live in etcd under ``P/volumes/``. Creating
  one is an etcd transaction (``create_revision == 0``), so a race between nodes has one winner;
  the losers get :class:`Conflict` with the winner's record.
* **The view** every read is answered from is a local :class:`SqliteRegistry` in ``--state``:
  a mirror of the definitions, kept current by an etcd watch, plus *this node's* mount records.
  So Get and List never wait on the network, and a node restarted while etcd is unreachable
  still answers Get for every volume from its mirror (a "not found" would make the engine forget
  the volume). ``VolumeRecord.mounts`` therefore holds this node's mounts only: the service's
  reference counts stay per node.
* **This node's mount records** are durable in the local SQLite first (the truth), then
  published to etcd under ``P/mounts/<name>/<node>/<id>`` on the node's lease, so every node sees
  who uses a volume, and a dead node's records vanish after the TTL. Publishing failures are
  retried by the lease thread; a republish follows every new lease.
* **Access modes** (``_cluster.access``): a single-node volume is held through
  ``P/holders/<name>`` on the node's lease, taken in :meth:`acquire` before the first mount on
  this node and dropped in :meth:`release` after the last unmount. A node that cannot prove its
  lease is alive refuses new single-node mounts.
* **Self-fencing**: when the lease goes unrenewed until shortly before it could expire (see
  ``_cluster/session.py`` for the margin), the single-node volumes this node has attached are
  handed to :attr:`on_hold_lost` (``serve`` wires it to ``VolumeService.fence``), so their writers
  get errors before another node can take the hold. Fenced volumes are never taken back when etcd
  answers again: their holds are dropped and the containers using them must be restarted.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .._registry.base import Conflict, MountRecord, Registry, VolumeRecord
from .._registry.sqlite import SqliteRegistry
from .._sdk.errors import DriverError
from . import client as ec
from .access import MULTI, SINGLE_NODE, access_of
from .client import EtcdClient, EtcdError, EtcdUnavailable, EtcdURL, LeaseNotFound
from .errors import Contended, EtcdUnreachable, InUseElsewhere
from .holders import Holders
from .keys import (
    HOLDERS,
    MOUNTS,
    NODES,
    VOLUMES,
    Layout,
    decode_json,
    decode_mount,
    decode_volume,
    encode_json,
    encode_mount,
    encode_volume,
)
from .session import Session

log = logging.getLogger("dockvol.cluster")

#: How long start-up waits for etcd before serving from the local mirror (a managed plugin
#: must listen within about 9.5 s of its start, or the engine kills it).
START_TIMEOUT = 5.0
#: Best-effort writes (publishing mount records, releasing holders) give up this soon: the lease
#: thread retries them, and a mount must not wait on an etcd that has gone away.
BEST_EFFORT = 1.0
#: A fresh snapshot replaces the watch this often, in case a stream went quiet without breaking.
RESYNC_EVERY = 300.0

#: ``on_hold_lost(names, reason)`` -> name -> fenced (``VolumeService.fence``): blocking, any
#: thread; names it leaves out were not mounted here yet and are offered again.
FenceFn = Callable[[Sequence[str], str], Mapping[str, bool]]


def open_registry(
    url: str,
    node: str,
    state_dir: Path,
    lease_ttl: float,
    *,
    default_access: str = MULTI,
    plugin: str = "dockvol",
) -> Registry:
    """``--registry URL`` -> a registry (``sqlite:`` or ``etcd://...``; see :class:`EtcdURL`).

    Records live under the URL's path, or ``/dockvol/<plugin>`` (the ``--name`` the engine knows
    the plugin by), so two plugins sharing one etcd never see each other's volumes.
    """
    if url in ("", "sqlite", "sqlite:"):
        return SqliteRegistry(state_dir)
    try:
        parsed = EtcdURL.parse(url)
    except ValueError as exc:
        raise DriverError(f"--registry: {exc}") from None
    if not node or "/" in node:
        raise DriverError(f"--node {node!r}: give this host a non-empty name without '/'")
    if lease_ttl <= 0:
        raise DriverError("--lease-ttl must be a positive number of seconds")
    # Writes wait up to 5 s (long enough for an etcd leader election); lease renewals use a
    # shorter deadline of their own (Session.period).
    reg = EtcdRegistry(
        EtcdClient.from_url(parsed, timeout=2.0, deadline=5.0),
        Layout(parsed.prefix or f"/dockvol/{quote(plugin, safe='')}"),
        node,
        SqliteRegistry(state_dir),
        lease_ttl,
        default_access=default_access,
    )
    reg.start(timeout=min(START_TIMEOUT, max(2.0, lease_ttl)))
    return reg


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class EtcdRegistry(Registry):
    shared = True

    def __init__(
        self,
        client: EtcdClient,
        layout: Layout,
        node: str,
        local: SqliteRegistry,
        lease_ttl: float,
        *,
        default_access: str = MULTI,
    ) -> None:
        self.client = client
        self.layout = layout
        self.node = node
        self.default_access = default_access
        self._local = local
        self._lock = threading.RLock()  # guards the mirror and the cluster view below
        # What the watch has told us about the cluster (all nodes, this one included):
        self._rev: dict[str, int] = {}  # name -> revision of the last definition change applied
        self._mounts: dict[str, dict[tuple[str, str], MountRecord]] = {}
        self._holders: dict[str, dict[str, Any]] = {}
        self._nodes: dict[str, dict[str, Any]] = {}
        self._orphans: set[str] = set()  # removed in etcd, kept here while still mounted
        # Single-node volumes the service acquired and has not released: held even before their
        # first mount record exists (the driver is mounting), so a reconcile never drops them.
        self._acquired: set[str] = set()
        #: Set by serve: fences volumes whose hold this node can no longer prove.
        self.on_hold_lost: FenceFn | None = None
        self._fenced: dict[str, str] = {}  # name -> why; never held again by this process
        # The driver cannot fence these (a plain directory): offered once, and still held (dropping
        # the hold of a volume whose writers go on would only invite a second writer sooner).
        self._unfenceable: set[str] = set()
        self._fence_unannounced = False  # say "restart the containers" once etcd answers
        self._unwired_logged = False
        self._publish_locks = [threading.Lock() for _ in range(32)]
        self._dirty = threading.Event()  # this node's published state needs a reconcile
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._watch: ec.Watch | None = None
        self._snapshot_at = time.monotonic()
        self.session = Session(
            client,
            lease_ttl,
            on_lease=self._on_lease,
            on_tick=self._on_tick,
            on_lost=self._resync,
            on_expiring=self._fence_held,
        )
        self.holders = Holders(client, layout, node, self.session.ttl)
        self._watcher = threading.Thread(target=self._watch_loop, name="dockvol-watch", daemon=True)

    # -- start and stop -------------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Sync with etcd (up to ``timeout``), then keep the view current in the background.

        If etcd does not answer, serve from the local mirror: Get keeps answering, writes and
        single-node mounts are refused with a clear error until etcd is back.
        """
        self._watcher.start()
        if not self._synced.wait(timeout):
            log.error(
                "etcd %s not reachable within %ss: serving the local copy of the volume records; "
                "creates, removes and single-node mounts fail until it answers",
                ",".join(self.client.endpoints),
                timeout,
            )
        else:
            try:
                self.session.grant()
            except (EtcdUnavailable, EtcdError) as exc:
                log.error("cannot take an etcd lease yet (%s); retrying", exc)
        self.session.start()

    def close(self) -> None:
        self._stop.set()
        w = self._watch
        if w is not None:
            w.close()
        # Keep the lease (and so the holders) while containers still use volumes here: the
        # plugin may be restarting; a clean stop with nothing mounted releases everything now.
        busy = any(rec.mounts for rec in self._local.all())
        self.session.close(revoke=not busy)
        self._watcher.join(3)
        self.client.close()
        with self._lock:  # a late watch event must not write to a closed mirror
            self._local.close()

    # -- reads: the local view ------------------------------------------------------------------
    @property
    def generation(self) -> int:
        """Changes with the mirror (so with changes made on any node): List caches follow it."""
        return self._local.generation

    @generation.setter
    def generation(self, value: int) -> None:
        self._local.generation = value

    def get(self, name: str) -> VolumeRecord | None:
        return self._local.get(name)

    def all(self) -> Iterable[VolumeRecord]:
        return self._local.all()

    def access(self, name: str) -> str:
        rec = self._local.get(name)
        return access_of(rec.options, self.default_access) if rec else self.default_access

    def nodes_using(self, name: str) -> list[str]:
        """Nodes with the volume mounted, as last seen by the watch (this node from its own
        durable records)."""
        with self._lock:
            nodes = {n for (n, _) in self._mounts.get(name, {}) if n != self.node}
        rec = self._local.get(name)
        if rec is not None and rec.mounts:
            nodes.add(self.node)
        return sorted(nodes)

    def status(self, name: str) -> Mapping[str, Any]:
        """Cluster fields for ``docker volume inspect``'s Status (no I/O)."""
        out: dict[str, Any] = {"access": self.access(name), "nodes": self.nodes_using(name)}
        if out["access"] == SINGLE_NODE:
            with self._lock:
                h = self._holders.get(name)
            out["holder"] = (
                {"node": h.get("node"), "lease": h.get("lease"), "since": h.get("since")}
                if h
                else None
            )
        if not self.session.connected():
            out["cluster"] = (
                f"node {self.node!r} cannot reach etcd ({self.session.last_error or 'no lease'}); "
                "this view may be stale"
            )
        return out

    def owner(self) -> Mapping[str, str]:
        return self._local.owner()

    def set_owner(self, owner: Mapping[str, str]) -> None:
        self._local.set_owner(owner)

    # -- writes: definitions (cluster-wide, need etcd) ------------------------------------------
    def create(self, record: VolumeRecord) -> None:
        key = self.layout.volume(record.name)
        bare = dataclasses.replace(record, mounts={})
        try:
            ok, rev, resp = self.client.txn(
                [ec.cmp_created(key, False)],
                [ec.op_put(key, encode_volume(bare))],
                [ec.op_get(key)],
            )
        except (EtcdUnavailable, EtcdError) as exc:
            raise EtcdUnreachable(
                self.holders.unreachable(f"create volume {record.name!r}", exc)
            ) from None
        if ok:
            self._apply_definition(record.name, bare, rev)
        else:
            kvs = ec.range_kvs(resp[0]) if resp else []
            if not kvs:
                # Deleted between the compare and the read: our create lost a race with a remove.
                raise Contended(
                    f"volume {record.name!r} changed on another node meanwhile; try again"
                )
            existing = decode_volume(kvs[0].value)
            self._apply_definition(existing.name, existing, kvs[0].mod_revision)
            # Equal to ours (creation times to the microsecond): our own write landed, its reply
            # was lost and the client retried on another member. Anything else is a real race.
            if existing != bare:
                raise Conflict(self._local.get(existing.name) or existing)
        for m in record.mounts.values():
            self.set_mount(record.name, m)

    def delete(self, name: str) -> None:
        try:
            _, rev, _ = self.client.txn(
                [], [ec.op_delete(self.layout.volume(name)), ec.op_delete(self.layout.holder(name))]
            )
        except (EtcdUnavailable, EtcdError) as exc:
            raise EtcdUnreachable(
                self.holders.unreachable(f"remove volume {name!r}", exc)
            ) from None
        self._apply_definition(name, None, rev)

    def set_options(self, name: str, options: Mapping[str, str]) -> None:
        rec = self._local.get(name)
        if rec is None:
            raise KeyError(name)
        new = dataclasses.replace(rec, options=dict(options), mounts={})
        try:
            rev = self.client.put(self.layout.volume(name), encode_volume(new))
        except (EtcdUnavailable, EtcdError) as exc:
            raise EtcdUnreachable(
                self.holders.unreachable(f"change volume {name!r}", exc)
            ) from None
        self._apply_definition(name, new, rev)

    # -- writes: this node's mounts (local first, then published) -------------------------------
    def set_mount(self, name: str, mount: MountRecord) -> None:
        mount = dataclasses.replace(mount, node="")  # local records are this node's by definition
        key = self.layout.mount(name, self.node, mount.mount_id)
        value = encode_mount(mount)
        with self._publishing(name):
            with self._lock:
                self._local.set_mount(name, mount)
            self._publish(lambda lease: self.client.put(key, value, lease, BEST_EFFORT))

    def delete_mount(self, name: str, mount_id: str) -> None:
        key = self.layout.mount(name, self.node, mount_id)
        with self._publishing(name):
            with self._lock:
                self._local.delete_mount(name, mount_id)
            self._publish(lambda lease: self.client.delete(key, deadline=BEST_EFFORT))

    def _publishing(self, name: str) -> threading.Lock:
        """One of a few locks, by volume: a local change and its publish happen together, so a
        reconcile of the same volume never interleaves with them (and never resurrects or drops
        a record); other volumes are not held up."""
        return self._publish_locks[hash(name) % len(self._publish_locks)]

    def _publish(self, op: Any) -> None:
        """Best effort now; the lease thread reconciles whatever failed (the local record is
        already durable, so the mount itself never fails for want of etcd)."""
        lease = self.session.lease
        if lease is None or not self.session.connected():
            # etcd is known to be away: do not make every mount wait for a timeout.
            self._dirty.set()
            return
        try:
            op(lease)
        except LeaseNotFound:
            self._dirty.set()
            self.session.lost()
        except (EtcdUnavailable, EtcdError) as exc:
            log.warning("cannot publish a mount record to etcd yet (%s); will retry", exc)
            self._dirty.set()
            self.session.kick()

    # -- access: called by the service around the first mount / last unmount --------------------
    def acquire(self, name: str) -> None:
        if self.access(name) != SINGLE_NODE:
            return
        lease = self.session.valid_lease()
        if lease is None:
            raise EtcdUnreachable(
                self.holders.fenced(name, self.session.last_error or "no valid lease")
            )
        try:
            self.holders.hold(name, lease)
            with self._lock:
                self._acquired.add(name)
        except LeaseNotFound:
            self.session.lost()
            raise EtcdUnreachable(self.holders.fenced(name, "this node's lease expired")) from None
        except (EtcdUnavailable, EtcdError) as exc:
            raise EtcdUnreachable(self.holders.fenced(name, str(exc))) from None

    def release(self, name: str) -> None:
        access = self.access(name)
        with self._lock:
            rec = self._local.get(name)
            if name in self._orphans and rec is not None and not rec.mounts:
                # Removed elsewhere while in use here; its last user has gone: forget it now.
                self._orphans.discard(name)
                self._local.delete(name)
        if access != SINGLE_NODE:
            return
        with self._lock:
            self._acquired.discard(name)
        if not self.session.connected():
            self._dirty.set()  # dropped by the lease thread once etcd answers
            return
        try:
            self.holders.unhold(name, BEST_EFFORT)
        except (EtcdUnavailable, EtcdError) as exc:
            # The lease thread drops it once etcd answers (or the lease expires first).
            log.warning("cannot release single-node volume %r in etcd yet (%s)", name, exc)
            self._dirty.set()

    def before_remove(self, name: str) -> None:
        """Refuse to remove a volume another node uses (a fresh read from etcd, not the view)."""
        try:
            nodes = self.holders.users_elsewhere(name)
        except (EtcdUnavailable, EtcdError) as exc:
            msg = self.holders.unreachable(f"check who uses volume {name!r}", exc)
            raise EtcdUnreachable(msg) from None
        if nodes:
            raise InUseElsewhere(self.holders.in_use(name, nodes))

    # -- the view: applying what etcd says ------------------------------------------------------
    def _apply_definition(self, name: str, rec: VolumeRecord | None, rev: int) -> None:
        """Make the mirror say what etcd said at ``rev`` (older news is ignored)."""
        with self._lock:
            if rev <= self._rev.get(name, 0):
                return
            self._rev[name] = rev
            cur = self._local.get(name)
            if rec is None:
                if cur is None:
                    return
                if cur.mounts:
                    log.error(
                        "volume %r was removed on another node while containers here still use "
                        "it; keeping its local record until they stop",
                        name,
                    )
                    self._orphans.add(name)
                    return
                self._local.delete(name)
                return
            self._orphans.discard(name)
            if cur is None:
                self._local.create(rec)
            elif (cur.key, cur.created_at) != (rec.key, rec.created_at):
                if cur.mounts:
                    log.error("volume %r was replaced on another node while mounted here", name)
                    return
                self._local.delete(name)
                self._local.create(rec)
            elif dict(cur.options) != dict(rec.options):
                self._local.set_options(name, rec.options)

    def _apply_kv(self, kv: ec.KV, deleted: bool) -> None:
        parsed = self.layout.parse(kv.key)
        if parsed is None:
            return
        kind, parts = parsed
        with self._lock:
            if self._stop.is_set():
                return
            if kind == VOLUMES:
                rec = None if deleted else decode_volume(kv.value)
                self._apply_definition(parts[0], rec, kv.mod_revision)
            elif kind == MOUNTS and len(parts) == 3:
                name, node, mid = parts
                ms = self._mounts.setdefault(name, {})
                if deleted:
                    ms.pop((node, mid), None)
                    if not ms:
                        del self._mounts[name]
                else:
                    ms[(node, mid)] = decode_mount(mid, node, kv.value)
            elif kind == HOLDERS:
                if deleted:
                    self._holders.pop(parts[0], None)
                else:
                    self._holders[parts[0]] = {**decode_json(kv.value), "_lease": kv.lease}
            elif kind == NODES:
                if deleted:
                    self._nodes.pop(parts[0], None)
                else:
                    self._nodes[parts[0]] = decode_json(kv.value)

    def _snapshot(self) -> int:
        """Read everything under the prefix; replace the view with it. Returns the revision."""
        root = self.layout.root()
        # A short deadline: the loop retries anyway, and close() should not wait long for it.
        kvs, rev = self.client.range(root, ec.prefix_end(root), deadline=2.0)
        with self._lock:
            if self._stop.is_set():
                return rev
            self._mounts.clear()
            self._holders.clear()
            self._nodes.clear()
            seen: set[str] = set()
            for kv in kvs:
                parsed = self.layout.parse(kv.key)
                if parsed and parsed[0] == VOLUMES:
                    seen.add(parsed[1][0])
                self._apply_kv(kv, False)
            for rec in self._local.all():  # a snapshot: safe while the loop deletes
                if rec.name not in seen:
                    self._apply_definition(rec.name, None, rev)
        return rev

    def _watch_loop(self) -> None:
        root = self.layout.root()
        backoff = 0.2
        while not self._stop.is_set():
            try:
                rev = self._snapshot()
                self._synced.set()
                self._snapshot_at = time.monotonic()
                backoff = 0.2
                self._watch = self.client.watch(root, ec.prefix_end(root), rev + 1)
                for events in self._watch:
                    log.debug(
                        "etcd watch: %s up to revision %d",
                        [(e.deleted, e.kv.key) for e in events],
                        events[-1].kv.mod_revision,
                    )
                    for e in events:
                        self._apply_kv(e.kv, e.deleted)
            except (EtcdUnavailable, EtcdError, OSError, ValueError) as exc:
                if not self._stop.is_set():
                    log.debug("etcd watch: %s; resynchronising", exc)
            except Exception:
                log.exception("etcd watch failed; resynchronising")
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 2.0)

    def _resync(self) -> None:
        """After etcd was unreachable: restart the watch (it reads a fresh snapshot)."""
        self._dirty.set()
        w = self._watch
        if w is not None:
            w.close()

    # -- the lease thread's hooks ---------------------------------------------------------------
    def _on_lease(self, lease: int) -> None:
        self._dirty.set()
        self._on_tick(lease)

    def _on_tick(self, lease: int) -> None:
        if self._fence_unannounced:
            self._fence_unannounced = False
            with self._lock:
                fenced = sorted(self._fenced)
            log.error(
                "etcd answers again; volume(s) %s stay fenced on node %r and are not taken back: "
                "the containers using them here get write errors and need a restart (stop them, "
                "then start them again on another node, or here after restarting the plugin)",
                ", ".join(fenced),
                self.node,
            )
        if time.monotonic() - self._snapshot_at > RESYNC_EVERY:
            self._snapshot_at = time.monotonic()
            w = self._watch
            if w is not None:
                w.close()
        if self._dirty.is_set():
            self._dirty.clear()
            try:
                self._reconcile(lease)
            except LeaseNotFound:
                self._dirty.set()
                self.session.lost()
            except (EtcdUnavailable, EtcdError):
                self._dirty.set()
                raise

    def _reconcile_mounts(self, name: str, lease: int) -> None:
        """Make etcd show this node's mount records of ``name`` (read afresh, under the
        volume's publishing lock, so no concurrent Mount or Unmount can slip in between)."""
        with self._publishing(name):
            kvs, _ = self.client.range(
                self.layout.mounts_of(name), ec.prefix_end(self.layout.mounts_of(name))
            )
            published = {}
            for kv in kvs:
                parsed = self.layout.parse(kv.key)
                if parsed and len(parsed[1]) == 3 and parsed[1][1] == self.node:
                    published[kv.key] = kv
            rec = self._local.get(name)
            wanted = {
                self.layout.mount(name, self.node, m.mount_id): encode_mount(m)
                for m in (rec.mounts.values() if rec else ())
            }
            for key, value in wanted.items():
                old = published.get(key)
                if old is None or old.value != value or old.lease != lease:
                    self.client.put(key, value, lease)
            for key in published.keys() - wanted.keys():
                self.client.delete(key)

    def _reconcile(self, lease: int) -> None:
        """Make etcd show exactly this node's durable state, on the current lease."""
        self.client.put(
            self.layout.node(self.node), encode_json({"since": _now(), "pid": os.getpid()}), lease
        )
        mounts_root = self.layout.kind(MOUNTS)
        kvs, _ = self.client.range(mounts_root, ec.prefix_end(mounts_root))
        names = {rec.name for rec in self._local.all() if rec.mounts}
        for kv in kvs:
            parsed = self.layout.parse(kv.key)
            if parsed and len(parsed[1]) == 3 and parsed[1][1] == self.node:
                names.add(parsed[1][0])
        for name in sorted(names):
            self._reconcile_mounts(name, lease)
        single = [
            rec.name
            for rec in self._local.all()
            if rec.mounts and access_of(rec.options, self.default_access) == SINGLE_NODE
        ]
        with self._lock:
            single += [n for n in self._acquired if n not in single]
            # Fenced volumes are not taken back: their holds go (another node may use them).
            single = [n for n in single if n not in self._fenced]
        # Holders: keep the ones containers here still need, drop the rest.
        lost = []
        for name in single:
            try:
                self.holders.hold(name, lease)
            except DriverError as exc:
                # Another node took it while we could not reach etcd (our lease had expired):
                # the fence should have come first; fence now if it did not.
                log.error("single-node volume %r is held by another node: %s", name, exc)
                lost.append(name)
        lost = [n for n in lost if n not in self._unfenceable]
        if lost:
            self._fence(lost, "another node took the volume while this node could not reach etcd")
        holders_root = self.layout.kind(HOLDERS)
        hkvs, _ = self.client.range(holders_root, ec.prefix_end(holders_root))
        for kv in hkvs:
            parsed = self.layout.parse(kv.key)
            if parsed is None or decode_json(kv.value).get("node") != self.node:
                continue
            if parsed[1][0] not in single:
                self.client.txn([ec.cmp_mod(kv.key, kv.mod_revision)], [ec.op_delete(kv.key)])

    # -- self-fencing -----------------------------------------------------------------------------
    def held_here(self) -> list[str]:
        """Single-node volumes this node holds (mounted or being mounted), not yet fenced."""
        names = {
            rec.name
            for rec in self._local.all()
            if rec.mounts and access_of(rec.options, self.default_access) == SINGLE_NODE
        }
        with self._lock:
            names |= self._acquired
            return sorted(names - self._fenced.keys() - self._unfenceable)

    def fenced(self) -> dict[str, str]:
        """Volumes this process fenced (their writers get errors): name -> why."""
        with self._lock:
            return dict(self._fenced)

    def _fence_held(self, reason: str) -> None:
        """The session's watchdog: the lease may lapse soon; fence what this node holds."""
        names = self.held_here()
        if names:
            self._fence(names, reason)

    def _fence(self, names: Sequence[str], reason: str) -> None:
        fence = self.on_hold_lost
        if fence is None:
            # At start the watchdog may fire before serve wires the fence: it asks again soon.
            if not self._unwired_logged:
                self._unwired_logged = True
                log.warning("cannot fence %s yet (%s): no fence wired", ", ".join(names), reason)
            return
        done = _fence_in_parallel(fence, names, reason)
        with self._lock:
            for name, ok in done.items():
                if ok:
                    self._fenced[name] = reason
                    self._acquired.discard(name)
                else:
                    self._unfenceable.add(name)
        if done:
            self._fence_unannounced = True
            # The next renewal reconciles: the holds of fenced volumes go, even when etcd answers
            # again before the lease thread ever saw an error.
            self._dirty.set()
            log.error(
                "node %r fenced single-node volume(s) %s: %s",
                self.node,
                ", ".join(
                    f"{n} ({'fenced' if ok else 'NOT fenced: driver cannot'})"
                    for n, ok in sorted(done.items())
                ),
                reason,
            )

    def wait_synced(self, timeout: float) -> bool:
        """For tests and tools: until the first snapshot from etcd is in the view."""
        deadline = time.monotonic() + timeout
        return self._synced.wait(max(0.0, deadline - time.monotonic()))


#: Volumes fenced at once: each fence may write back dirty data for a while, and all must be
#: done within the margin.
FENCE_THREADS = 8


def _fence_in_parallel(fence: FenceFn, names: Sequence[str], reason: str) -> dict[str, bool]:
    if len(names) == 1:
        return dict(fence(names, reason))
    done: dict[str, bool] = {}
    with ThreadPoolExecutor(min(FENCE_THREADS, len(names)), "dockvol-fence") as pool:
        for part in pool.map(lambda n: fence([n], reason), names):
            done.update(part)
    return done
