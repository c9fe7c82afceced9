"""The rules of the protocol (PROTOCOL.md §3), between the wire and the driver.

The service owns names, option parsing, per-volume locks, per-mount-ID reference counts,
idempotent Create, Remove refusal while mounted, Status assembly and reconciliation at start.
Reads are answered from the registry's in-memory view on the event loop; writes take the
volume's lock, run blocking work (driver, durable registry writes) in a thread pool, and return
only once the registry has committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from .._registry.base import EMPTY, Conflict, MountRecord, Registry, VolumeRecord
from .._sdk.driver import Driver
from .._sdk.errors import DriverError
from .._sdk.options import parse_options, parse_size, redact
from .._sdk.secrets import SecretStore
from .._sdk.volume import Volume
from .locks import KeyedLocks
from .names import check_name, volume_key

log = logging.getLogger("dockvol.service")
T = TypeVar("T")
MAX_MOUNT_ID = 256
GET_VIEWS = 512  # volumes whose Get reply parts are kept ready


class VolumeError(Exception):
    """A refusal the user can act on; becomes ``{"Err": message}``."""


class NotFound(VolumeError):
    """No volume of that name: how the engine learns a name is free (Get before Create)."""


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
        # Driver.status is called on every Get; skip it entirely when the driver has none.
        self._has_status = type(driver).status is not Driver.status
        self._list_cache: tuple[int, bytes] | None = None
        # Volumes with mount records whose mount recover() could not restore at start.
        self._unrecovered: set[str] = set()
        # Per-volume parts of the Get reply, rebuilt when the record changes (Get is hot).
        # Bounded: the engine Gets every volume at its start, but only a few are hot, and a
        # view per volume of 10,000 would cost more memory than the registry itself.
        self._views: OrderedDict[str, _GetView] = OrderedDict()
        self._registry_status = type(registry).status is not Registry.status
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
            except (DriverError, VolumeError) as exc:
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

    def get(self, name: str) -> dict[str, Any] | None:
        rec = self.registry.get(name)
        if rec is None:
            self._views.pop(name, None)
            return None
        view = self._views.get(name)
        if view is None or view.record is not rec:  # records are replaced whole on change
            view = self._views[name] = _GetView(rec, self)
            if len(self._views) > GET_VIEWS:
                self._views.popitem(last=False)
        else:
            self._views.move_to_end(name)
        status = dict(view.status)
        if self._has_status:
            try:
                status.update(self.driver.status(view.volume(self), view.mountpoint))
            except Exception as exc:  # a Get error makes the engine forget the volume: never fail
                log.warning("status of volume %r failed: %s", name, exc)
                status["status_error"] = str(exc)
        if self._registry_status:
            status.update(self.registry.status(name))  # cluster: nodes using it, holder
        out = dict(view.reply)
        out["Status"] = status
        return out

    def list(self) -> list[dict[str, str]]:
        out = []
        for rec in self.registry.all():
            mp = rec.mountpoint
            out.append({"Name": rec.name, "Mountpoint": mp} if mp else {"Name": rec.name})
        return out

    def list_reply(self, encode: Callable[[Any], bytes]) -> bytes:
        """The encoded List reply, cached until the registry changes (``docker volume ls`` and
        engine start ask for all volumes; with thousands, building it is the cost)."""
        gen = self.registry.generation
        if self._list_cache is None or self._list_cache[0] != gen:
            self._list_cache = (gen, encode({"Volumes": self.list()}))
        return self._list_cache[1]

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
            "health": self.health.as_dict(),
        }

    # -- writes ---------------------------------------------------------------------------------
    # Each write below makes one trip to the thread pool with all its blocking steps (registry
    # and driver): a trip costs about as much as a durable write, and a request cancelled
    # between two trips would leave half a change behind.

    async def create(self, name: str, opts: Mapping[str, str]) -> None:
        check_name(name)
        try:
            values = parse_options(self.schema, opts)
        except ValueError as exc:
            raise VolumeError(f"cannot create volume {name!r}: {exc}") from None
        async with self._locks.hold(name):
            existing = self.registry.get(name)
            if existing is not None:
                self._same_or_refuse(existing, opts, values)
                return
            now = datetime.now(UTC)
            rec = VolumeRecord(
                name=name, key=volume_key(name), options=dict(opts) or EMPTY, created_at=now
            )
            winner = await self._run(self._create, rec, self._volume(rec))
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
                raise VolumeError(
                    f"volume {name!r} is in use by {len(rec.mounts)} mount(s) (mount IDs {ids}); "
                    "stop the containers using it, then remove it"
                )
            await self._run(self._remove, name, self._volume(rec))

    def _remove(self, name: str, vol: Volume) -> None:
        self.registry.before_remove(name)  # cluster: in use on another node?
        self._call_driver(f"remove volume {name!r}", self.driver.remove, vol)
        self.registry.delete(name)

    async def mount(self, name: str, mount_id: str) -> str:
        _check_mount_id(mount_id)
        async with self._locks.hold(name):
            rec = self._existing(name)
            held = rec.mounts.get(mount_id)
            if held is not None:  # same ID again (docker cp into a running container)
                await self._run(
                    self.registry.set_mount,
                    name,
                    MountRecord(mount_id, held.count + 1, held.mountpoint, held.node),
                )
                return held.mountpoint
            mp = rec.mountpoint
            if mp is None or name in self._unrecovered:
                # Not mounted, or its mount records outlived a mount that recover could not
                # restore: the driver mounts it now, as for a first user.
                mp = await self._run(self._first_mount, name, mount_id, self._volume(rec))
                self._unrecovered.discard(name)
                return mp
            await self._run(self.registry.set_mount, name, MountRecord(mount_id, 1, mp))
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
                await self._run(
                    self.registry.set_mount,
                    name,
                    MountRecord(mount_id, held.count - 1, held.mountpoint, held.node),
                )
                return
            await self._run(self._drop_mounts, name, [mount_id], self._volume(rec))

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

    async def release(self, name: str, mount_ids: Sequence[str] | None) -> Sequence[str]:
        """Forget mount records the engine will never end (``dockvol volume release``).

        The engine gives up on an Unmount after ~15 s of retries; if the plugin was down that
        long, the record stays and Remove is refused for ever. An operator who has checked that
        no container uses the volume releases it here: the named IDs (or all) are dropped and,
        when none is left, the driver's unmount runs as after a last Unmount.
        """
        async with self._locks.hold(name):
            rec = self._existing(name)
            ids = sorted(rec.mounts) if mount_ids is None else mount_ids
            unknown = [i for i in ids if i not in rec.mounts]
            if unknown:
                known = ", ".join(sorted(rec.mounts)) or "none"
                raise VolumeError(
                    f"volume {name!r} has no mount ID {', '.join(unknown)}; its mount IDs: {known}"
                )
            if ids:
                log.warning("volume %r released by an operator (mount IDs %s)", name, list(ids))
            await self._run(self._drop_mounts, name, ids, self._volume(rec))
            return ids

    async def resize(self, name: str, size_text: str) -> int:
        if "size" not in self.schema:
            raise VolumeError(f"driver {type(self.driver).__name__} has no size to change")
        try:
            size = parse_size(size_text)
        except ValueError as exc:
            raise VolumeError(f"cannot resize volume {name!r}: {exc}") from None
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
        raise VolumeError(
            f"volume {existing.name!r} already exists with different options "
            f"(differs in: {', '.join(differ)}; existing: {shown or 'no options'}); "
            "use the same options, or remove the volume first"
        )

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    async def _driver(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        return await self._run(self._call_driver, what, fn, *args)

    def _call_driver(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """Run driver code (in a worker thread): its failures become errors for the user."""
        try:
            return fn(*args)
        except (DriverError, VolumeError):
            if self.on_driver_error:
                self.on_driver_error()
            raise
        except Exception as exc:
            if self.on_driver_error:
                self.on_driver_error()
            log.exception("driver failed to %s", what)
            raise VolumeError(
                f"failed to {what}: {type(exc).__name__}: {exc} (details in the plugin log)"
            ) from None


def _check_mount_id(mount_id: str) -> None:
    if not mount_id or len(mount_id) > MAX_MOUNT_ID or not mount_id.isprintable():
        raise VolumeError(
            "the mount ID must be a non-empty printable string (the engine sends 64 hex digits)"
        )


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class _GetView:
    """What Get derives from one immutable record: computed once, reused until it changes."""

    __slots__ = ("_volume", "mountpoint", "record", "reply", "status")

    def __init__(self, rec: VolumeRecord, service: VolumeService) -> None:
        self.record = rec
        mp = rec.mountpoint
        self.mountpoint = Path(mp) if mp else None
        self.status: dict[str, Any] = {
            "mounts": sum(m.count for m in rec.mounts.values()),
            "mount_ids": sorted(rec.mounts),
            "options": redact(service.schema, rec.options),
        }
        self.reply: dict[str, Any] = {"Name": rec.name, "CreatedAt": _rfc3339(rec.created_at)}
        if mp:
            self.reply["Mountpoint"] = mp
        self._volume: Volume | None = None

    def volume(self, service: VolumeService) -> Volume:
        if self._volume is None:
            self._volume = service._volume(self.record)
        return self._volume
