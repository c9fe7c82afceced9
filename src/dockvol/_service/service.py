"""The rules of a volume plugin, between the front ends (Docker HTTP, CSI) and the driver.

The service owns names, option parsing, per-volume locks, per-mount-ID reference counts,
idempotent Create, Remove refusal while mounted, Status assembly and reconciliation at start.
Reads are answered from the registry's in-memory view on the event loop; writes take the
volume's lock, run blocking work (driver, durable registry writes) in a thread pool, or on the
event loop when the driver and the registry both declare their writes quick, and return only
once the registry has committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from .._registry.base import EMPTY, Conflict, MountRecord, Registry, VolumeRecord
from .._sdk.driver import Driver
from .._sdk.errors import (
    AlreadyExists,
    DockvolError,
    DriverError,
    InUse,
    InvalidRequest,
    NotFound,
    VolumeError,
)
from .._sdk.options import parse_options, parse_size, redact
from .._sdk.secrets import SecretStore
from .._sdk.volume import Volume
from .locks import KeyedLocks
from .names import check_name, volume_key

log = logging.getLogger("dockvol.service")
T = TypeVar("T")
MAX_MOUNT_ID = 256
GET_VIEWS = 512  # volumes whose Get reply parts are kept ready


__all__ = ["Health", "NotFound", "VolumeError", "VolumeInfo", "VolumeService"]


@dataclass(frozen=True, slots=True)
class VolumeInfo:
    """What the service tells a front end about one volume. Each front end shapes its own
    messages from it (Docker's Get reply, CSI's Volume)."""

    name: str
    created_at: datetime
    #: Where containers see it on this host, while mounted.
    mountpoint: str | None
    #: Mounts not yet matched by Unmounts, over all mount IDs.
    mounts: int
    mount_ids: tuple[str, ...]
    #: The options as given, secret ones shown only by reference.
    options: Mapping[str, str]
    #: The driver's and the cluster's own fields (``Driver.status``, holders...).
    status: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Health:
    ready: bool = False
    reconciled_at: str | None = None
    volumes: int = 0
    recovered_mounts: int = 0
    problems: list[str] = field(default_factory=list)
    #: Storage no volume explains (from Driver.audit): reported, not a failure.
    unexplained: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "reconciled_at": self.reconciled_at,
            "volumes": self.volumes,
            "recovered_mounts": self.recovered_mounts,
            "problems": list(self.problems),
            "unexplained": list(self.unexplained),
            "ok": self.ready and not self.problems,
        }


class VolumeService:
    def __init__(
        self,
        driver: Driver,
        registry: Registry,
        *,
        secrets: SecretStore | None = None,
        max_workers: int = 32,
    ) -> None:
        self.driver = driver
        self.registry = registry
        self.secrets = secrets or SecretStore()
        self.schema = type(driver).options
        self.health = Health()
        self._locks = KeyedLocks()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="dockvol")
        # Driver.status runs on every Get, or once per change when the driver says it is
        # static; skip it entirely when the driver has none.
        has_status = type(driver).status is not Driver.status
        self._static_status = has_status and type(driver).status_is_static
        self._has_status = has_status and not self._static_status
        # Volumes with mount records whose mount recover() could not restore at start.
        self._unrecovered: set[str] = set()
        # What Get derives from a record, rebuilt when the record changes (Get is hot).
        # Bounded: the engine Gets every volume at its start, but only a few are hot, and an
        # entry per volume of 10,000 would cost more memory than the registry itself.
        self._infos: OrderedDict[str, tuple[VolumeRecord, VolumeInfo]] = OrderedDict()
        self._volumes: OrderedDict[str, tuple[VolumeRecord, Volume]] = OrderedDict()
        #: Volumes fenced on this host (name -> why): no new mounts until the plugin restarts.
        self._fenced: dict[str, str] = {}
        #: Volumes a fence was asked for that the driver could not fence (name -> why).
        self._unfenced: dict[str, str] = {}
        #: An engine watcher releases mount records no container needs (serve --docker-host).
        self.healing = False
        self._registry_status = type(registry).status is not Registry.status
        # A few local syscalls and one fsync: cheaper on the event loop than two thread
        # switches, which cost more than the work itself on a loaded machine.
        self._inline_writes = type(driver).quick_writes and registry.quick_writes
        #: Optional observer of driver failures (metrics).
        self.on_driver_error: Callable[[], None] | None = None

    # -- start and stop -------------------------------------------------------------------------
    def reconcile(self) -> Health:
        """Compare the registry with what is really there, before serving (blocking)."""
        problems: list[str] = []
        recovered = 0
        records = list(self.registry.all())
        volumes: list[Volume] = []  # every volume whose options parse: audit must know them all
        for rec in records:
            try:
                vol = self._volume(rec)
            except VolumeError as exc:
                problems.append(f"volume {rec.name!r}: {exc}")
                continue
            volumes.append(vol)
            before = rec.mountpoint
            try:
                after = self.driver.recover(vol, Path(before) if before else None)
            except DockvolError as exc:
                problems.append(f"volume {rec.name!r}: {exc}")
                self._unrecovered.add(rec.name)
                continue
            except Exception as exc:
                log.exception("recover failed for volume %r", rec.name)
                problems.append(f"volume {rec.name!r}: recover failed: {type(exc).__name__}: {exc}")
                self._unrecovered.add(rec.name)
                continue
            if before is not None:
                recovered += len(rec.mounts)
                if after is not None and str(after) != before:
                    for m in rec.mounts.values():
                        self.registry.set_mount(
                            rec.name, MountRecord(m.mount_id, m.count, str(after), m.node)
                        )
        unexplained: list[str] = []
        try:
            unexplained = self.driver.audit(volumes)
        except Exception as exc:
            log.exception("audit failed")
            problems.append(f"audit failed: {type(exc).__name__}: {exc}")
        for p in problems:
            log.warning("reconcile: %s", p)
        for u in unexplained:
            log.info("reconcile: %s", u)
        self.health = Health(
            ready=True,
            reconciled_at=_rfc3339(datetime.now(UTC)),
            volumes=len(records),
            recovered_mounts=recovered,
            problems=problems,
            unexplained=unexplained,
        )
        log.info(
            "reconciled %d volume(s), %d mount record(s) kept, %d problem(s)",
            len(records),
            recovered,
            len(problems),
        )
        return self.health

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.registry.close()

    # -- reads (event loop, no I/O) -------------------------------------------------------------
    @property
    def scope(self) -> str:
        # A volume in a shared registry is known to every host, whatever the driver's own scope.
        return "global" if getattr(self.registry, "shared", False) else self.driver.scope

    def get(self, name: str) -> VolumeInfo | None:
        """The volume ``name``, or ``None``; from memory, no I/O (the engine's hottest call)."""
        rec = self.registry.get(name)
        if rec is None:
            self._infos.pop(name, None)
            return None
        cached = self._infos.get(name)
        if cached is None or cached[0] is not rec:  # records are replaced whole on change
            info = self._info(rec)
            self._infos[name] = (rec, info)
            if len(self._infos) > GET_VIEWS:
                self._infos.popitem(last=False)
        else:
            info = cached[1]
            self._infos.move_to_end(name)
        extra = self._dynamic_status(name, rec, info)
        return info if extra is None else replace(info, status={**info.status, **extra})

    def _info(self, rec: VolumeRecord) -> VolumeInfo:
        status: Mapping[str, Any] = EMPTY
        if self._static_status:
            status = self._driver_status(rec.name, rec, rec.mountpoint)
        if rec.name in self._fenced:
            status = {**status, "fenced": self._fenced[rec.name]}
        elif rec.name in self._unfenced:
            status = {**status, "unfenced": self._unfenced[rec.name]}
        return VolumeInfo(
            name=rec.name,
            created_at=rec.created_at,
            mountpoint=rec.mountpoint,
            mounts=sum(m.count for m in rec.mounts.values()),
            mount_ids=tuple(sorted(rec.mounts)),
            options=redact(self.schema, rec.options),
            status=status,
        )

    def _dynamic_status(
        self, name: str, rec: VolumeRecord, info: VolumeInfo
    ) -> dict[str, Any] | None:
        """Fields computed on every Get: the driver's ``status`` and the registry's."""
        if not (self._has_status or self._registry_status):
            return None
        extra: dict[str, Any] = {}
        if self._has_status:
            extra.update(self._driver_status(name, rec, info.mountpoint))
        if self._registry_status:
            extra.update(self.registry.status(name))  # cluster: nodes using it, holder
        return extra

    def _driver_status(self, name: str, rec: VolumeRecord, mp: str | None) -> dict[str, Any]:
        try:
            vol = self._volumes.get(name)
            if vol is None or vol[0] is not rec:
                vol = self._volumes[name] = (rec, self._volume(rec))
                if len(self._volumes) > GET_VIEWS:
                    self._volumes.popitem(last=False)
            return dict(self.driver.status(vol[1], Path(mp) if mp else None))
        except Exception as exc:  # a Get error makes the engine forget the volume: never fail
            log.warning("status of volume %r failed: %s", name, exc)
            return {"status_error": str(exc)}

    def list_volumes(self) -> list[VolumeInfo]:
        """Every volume, with only ``name`` and ``mountpoint`` filled (List needs no more)."""
        return [
            VolumeInfo(rec.name, rec.created_at, rec.mountpoint, 0, (), EMPTY)
            for rec in self.registry.all()
        ]

    @property
    def generation(self) -> int:
        """Grows with every change of any volume: front ends cache what they derive from it."""
        return self.registry.generation

    def volume(self, name: str) -> Volume:
        """The driver's view of a registered volume (:class:`NotFound` if there is none)."""
        return self._volume(self._existing(name))

    def path(self, name: str) -> str:
        rec = self._existing(name)
        return rec.mountpoint or ""

    def summary(self) -> dict[str, Any]:
        """For ``dockvol status``: volumes, mounts, health."""
        vols = []
        mounts = 0
        for rec in self.registry.all():
            mounts += len(rec.mounts)
            vols.append(
                {"name": rec.name, "mounts": len(rec.mounts), "mountpoint": rec.mountpoint or ""}
            )
        return {
            "driver": type(self.driver).__name__,
            "scope": self.scope,
            "volumes": vols,
            "active_mounts": mounts,
            "fenced": dict(self._fenced),
            "unfenced": dict(self._unfenced),
            "healing": self.healing,
            "health": self.health.as_dict(),
        }

    # -- writes ---------------------------------------------------------------------------------
    # Each write below runs all its blocking steps (registry and driver) in one call of
    # _write: one trip to the thread pool, or none when the writes are quick. A trip costs
    # about as much as a durable write, and a request cancelled between two trips would leave
    # half a change behind.

    async def create(self, name: str, opts: Mapping[str, str]) -> None:
        _check_name(name)
        try:
            values = parse_options(self.schema, opts)
        except ValueError as exc:
            raise InvalidRequest(f"cannot create volume {name!r}: {exc}") from None
        async with self._locks.hold(name):
            existing = self.registry.get(name)
            if existing is not None:
                self._same_or_refuse(existing, opts, values)
                return
            now = datetime.now(UTC)
            rec = VolumeRecord(
                name=name, key=volume_key(name), options=dict(opts) or EMPTY, created_at=now
            )
            # The options were parsed above: the driver's view is made from those values.
            vol = Volume(rec.name, rec.key, values, now, rec.options, self.secrets)
            winner = await self._write(self._create, rec, vol)
            if winner is not None:  # another host created it meanwhile
                self._same_or_refuse(winner, opts, values)

    def _create(self, rec: VolumeRecord, vol: Volume) -> VolumeRecord | None:
        try:
            # Claim the name first: on a shared registry this is the atomic step, and the
            # loser of a race must not touch storage the winner now owns.
            self.registry.create(rec)
        except Conflict as c:
            return c.existing
        try:
            self._call_driver(f"create volume {rec.name!r}", self.driver.create, vol)
        except BaseException:
            self.registry.delete(rec.name)
            raise
        return None

    async def remove(self, name: str) -> None:
        async with self._locks.hold(name):
            rec = self.registry.get(name)
            if rec is None:
                return  # already gone: a retried Remove must succeed
            if rec.mounts:
                ids = ", ".join(i[:12] for i in sorted(rec.mounts))
                raise InUse(
                    f"volume {name!r} is in use by {len(rec.mounts)} mount(s) (mount IDs {ids}); "
                    "stop the containers using it, then remove it"
                )
            await self._write(self._remove, name, self._volume(rec))

    def _remove(self, name: str, vol: Volume) -> None:
        self.registry.before_remove(name)  # cluster: in use on another node?
        self._call_driver(f"remove volume {name!r}", self.driver.remove, vol)
        self.registry.delete(name)

    async def mount(self, name: str, mount_id: str) -> str:
        _check_mount_id(mount_id)
        async with self._locks.hold(name):
            rec = self._existing(name)
            if name in self._fenced:
                raise InUse(
                    f"volume {name!r} was fenced on this host ({self._fenced[name]}); restart "
                    "the plugin, then the containers that use it"
                )
            held = rec.mounts.get(mount_id)
            if held is not None:  # same ID again (docker cp into a running container)
                await self._write(
                    self.registry.set_mount,
                    name,
                    MountRecord(mount_id, held.count + 1, held.mountpoint, held.node),
                )
                return held.mountpoint
            mp = rec.mountpoint
            if mp is None or name in self._unrecovered:
                # Not mounted, or its mount records outlived a mount that recover could not
                # restore: the driver mounts it now, as for a first user.
                mp = await self._write(self._first_mount, name, mount_id, self._volume(rec))
                self._unrecovered.discard(name)
                return mp
            await self._write(self.registry.set_mount, name, MountRecord(mount_id, 1, mp))
            return mp

    def _first_mount(self, name: str, mount_id: str, vol: Volume) -> str:
        self.registry.acquire(name)
        try:
            mp = str(self._call_driver(f"mount volume {name!r}", self.driver.mount, vol))
        except BaseException:
            self.registry.release(name)
            raise
        try:
            self.registry.set_mount(name, MountRecord(mount_id, 1, mp))
            rec = self.registry.get(name)
            for m in rec.mounts.values() if rec is not None else ():
                if m.mountpoint != mp:  # records that outlived an unrecovered mount
                    self.registry.set_mount(name, MountRecord(m.mount_id, m.count, mp, m.node))
        except BaseException:
            self.driver.unmount(vol)
            self.registry.release(name)
            raise
        return mp

    async def unmount(self, name: str, mount_id: str) -> None:
        async with self._locks.hold(name):
            rec = self.registry.get(name)
            held = rec.mounts.get(mount_id) if rec is not None else None
            if rec is None or held is None:
                return  # unknown ID: nothing holds it, so there is nothing to release
            if held.count > 1:
                await self._write(
                    self.registry.set_mount,
                    name,
                    MountRecord(mount_id, held.count - 1, held.mountpoint, held.node),
                )
                return
            await self._write(self._drop_mounts, name, [mount_id], self._volume(rec))

    def _drop_mounts(self, name: str, mount_ids: Sequence[str], vol: Volume) -> None:
        """Forget mount IDs; after the last one, release the volume as a last Unmount does."""
        # Records first: a crash after this leaves an attachment that recover() releases,
        # never a record that would keep the volume "in use" forever.
        for mount_id in mount_ids:
            self.registry.delete_mount(name, mount_id)
        after = self.registry.get(name)
        if mount_ids and after is not None and not after.mounts:
            try:
                self._call_driver(f"unmount volume {name!r}", self.driver.unmount, vol)
            finally:
                self.registry.release(name)

    async def release(
        self,
        name: str,
        mount_ids: Sequence[str] | None,
        *,
        expect: Mapping[str, int] | None = None,
    ) -> Sequence[str]:
        """Forget mount records the engine will never end (``dockvol volume release``).

        The engine gives up on an Unmount after ~15 s of retries; if the plugin was down that
        long, the record stays and Remove is refused for ever. An operator who has checked that
        no container uses the volume releases it here: the named IDs (or all) are dropped and,
        when none is left, the driver's unmount runs as after a last Unmount. ``expect`` (mount
        ID -> count, as the caller saw them): release nothing, return ``[]``, if they changed.
        """
        async with self._locks.hold(name):
            rec = self._existing(name)
            if expect is not None and {i: m.count for i, m in rec.mounts.items()} != expect:
                return []  # a Mount or Unmount came first (the stale-mount healer's check)
            ids = sorted(rec.mounts) if mount_ids is None else mount_ids
            unknown = [i for i in ids if i not in rec.mounts]
            if unknown:
                known = ", ".join(sorted(rec.mounts)) or "none"
                raise InvalidRequest(
                    f"volume {name!r} has no mount ID {', '.join(unknown)}; its mount IDs: {known}"
                )
            if ids:
                log.warning("volume %r released by an operator (mount IDs %s)", name, list(ids))
            await self._write(self._drop_mounts, name, ids, self._volume(rec))
            return ids

    async def resize(self, name: str, size_text: str) -> int:
        if "size" not in self.schema:
            raise InvalidRequest(f"driver {type(self.driver).__name__} has no size to change")
        try:
            size = parse_size(size_text)
        except ValueError as exc:
            raise InvalidRequest(f"cannot resize volume {name!r}: {exc}") from None
        async with self._locks.hold(name):
            rec = self._existing(name)
            mp = rec.mountpoint
            await self._driver(
                f"resize volume {name!r}",
                self.driver.resize,
                self._volume(rec),
                size,
                Path(mp) if mp else None,
            )
            await self._run(self.registry.set_options, name, {**rec.options, "size": str(size)})
        return size

    # -- helpers --------------------------------------------------------------------------------
    def _existing(self, name: str) -> VolumeRecord:
        rec = self.registry.get(name)
        if rec is None:
            raise NotFound(f"volume {name!r} not found")
        return rec

    def _volume(self, rec: VolumeRecord) -> Volume:
        try:
            values = parse_options(self.schema, rec.options)
        except ValueError as exc:
            raise VolumeError(
                f"stored options of volume {rec.name!r} are no longer valid: {exc}"
            ) from None
        return Volume(rec.name, rec.key, values, rec.created_at, rec.options, self.secrets)

    def _same_or_refuse(
        self, existing: VolumeRecord, opts: Mapping[str, str], values: Mapping[str, Any]
    ) -> None:
        try:
            old = parse_options(self.schema, existing.options)
        except ValueError:
            old = {}
        if old == values:
            return
        differ = sorted(k for k in values if old.get(k) != values[k])
        shown = redact(self.schema, existing.options)
        raise AlreadyExists(
            f"volume {existing.name!r} already exists with different options "
            f"(differs in: {', '.join(differ)}; existing: {shown or 'no options'}); "
            "use the same options, or remove the volume first"
        )

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one write's blocking steps: here when they are quick, else in the pool."""
        if self._inline_writes:
            return fn(*args)
        return await self._run(fn, *args)

    async def _driver(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        return await self._run(self._call_driver, what, fn, *args)

    def _call_driver(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """Run driver code (in a worker thread): its failures become errors for the user."""
        try:
            return fn(*args)
        except DockvolError:
            if self.on_driver_error:
                self.on_driver_error()
            raise
        except Exception:
            if self.on_driver_error:
                self.on_driver_error()
            # A bug in the driver: the traceback goes to the log only (it may hold paths or
            # values); the user gets what failed and where to look.
            log.exception("driver failed to %s", what)
            raise DriverError(
                f"failed to {what}: an unexpected error in the driver; details in the plugin log"
            ) from None

    # -- fencing --------------------------------------------------------------------------------
    def fence(self, names: Sequence[str], reason: str) -> dict[str, bool]:
        """Stop writes to the named volumes mounted on this host (blocking; any thread).

        Called when this host can no longer prove it alone holds them (a cluster lease about to
        lapse). Each is fenced by the driver; a fenced volume refuses new mounts and reports
        ``fenced`` until the plugin restarts. A volume the driver cannot fence (a plain
        directory) is reported as ``unfenced`` and keeps serving: nothing was stopped, so
        refusing its mounts would protect nothing. Returns name -> fenced by the driver.
        """
        done: dict[str, bool] = {}
        for name in names:
            rec = self.registry.get(name)
            if rec is None or rec.mountpoint is None:
                continue
            try:
                ok = self.driver.fence(self._volume(rec), Path(rec.mountpoint))
            except Exception:
                log.exception("fencing volume %r failed", name)
                ok = False
            if ok:
                self._fenced[name] = reason
                self.health.problems.append(
                    f"volume {name!r} fenced: {reason}; restart the plugin, then the containers "
                    "that use it"
                )
                log.error(
                    "volume %r fenced: %s; its containers on this host must be restarted",
                    name,
                    reason,
                )
            else:
                self._unfenced[name] = reason
                log.error(
                    "volume %r could NOT be fenced (%s): its driver cannot stop writes; its "
                    "containers on this host may still write while another node uses it",
                    name,
                    reason,
                )
            self._infos.pop(name, None)
            done[name] = ok
        return done


def _check_name(name: str) -> None:
    try:
        check_name(name)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def _check_mount_id(mount_id: str) -> None:
    if not mount_id or len(mount_id) > MAX_MOUNT_ID or not mount_id.isprintable():
        raise InvalidRequest(
            "the mount ID must be a non-empty printable string (the engine sends 64 hex digits)"
        )


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
