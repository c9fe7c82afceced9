"""Stale "in use", healed: release mount records no container can still need.

When the plugin is down through all of the engine's Unmount retries (about 15 s), the engine
gives up and the plugin keeps a mount record nobody will ever end: the volume stays "in use" and
cannot be removed. A host-service plugin given the engine's API (``--docker-host``) finds these
records itself and releases them, as ``dockvol volume release`` would.

Measured on engines 20.10 and 26 (``GET /containers/json?all=1``, which lists each container's
volume mounts): a container is ``created`` from before its first Mount reaches the plugin, and
stays ``running`` until the engine's Unmount ended or was given up; only then is it ``exited``.
So a container in any state but ``exited`` or ``dead`` may still need its volumes.

Races, and why none releases a record a container needs:

* Records are read before containers are listed. A record present at that read came from a Mount
  that had begun, whose container already existed (``created``), so it is in the listing.
* A volume is released only after two passes ``confirm_after`` seconds apart both found no
  container outside ``exited``/``dead`` using it, *and* its mount IDs and counts did not change
  between them; only the IDs seen both times are released. A ``docker start`` of a stopped
  container sends the same mount ID again and raises its count, which voids the confirmation.
* The release itself compares the records with what the passes saw under the volume's lock
  (``release(..., expect=...)``): a Mount that slipped in after the last pass (for example the
  ``docker start`` of that very container, which is still ``exited`` while its Mount runs, as
  measured on both engines) wins, and nothing is released.

Never on the request path: the engine is asked from a worker thread, plugin requests never wait
on it. Never while the engine is waiting on the plugin at its own start: the first pass waits
until the engine's API answers, then ``quiet`` seconds more, and so does the first pass after
any pass the engine did not answer (it may have restarted and be restoring containers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .._registry.base import Registry
from .api import DockerAPI, EngineUnavailable

log = logging.getLogger("dockvol.heal")

#: Container states in which a container cannot need its volumes any more.
DONE = frozenset({"exited", "dead"})


class HealedService(Protocol):
    """What the healer needs from :class:`dockvol._service.service.VolumeService`."""

    @property
    def registry(self) -> Registry: ...

    async def release(
        self, name: str, mount_ids: Sequence[str] | None, *, expect: Mapping[str, int] | None
    ) -> Sequence[str]: ...


#: Mount ID -> count of one volume's records.
Fingerprint = dict[str, int]


@dataclass
class _Suspect:
    fingerprint: Fingerprint
    since: float  # monotonic: first pass that saw it stale


class StaleMountHealer:
    def __init__(
        self,
        service: HealedService,
        api: DockerAPI,
        *,
        every: float = 60.0,
        confirm_after: float = 10.0,
        quiet: float = 30.0,
    ) -> None:
        self.service = service
        self.api = api
        self.every = every
        self.confirm_after = confirm_after
        self.quiet = quiet
        self._suspects: dict[str, _Suspect] = {}
        #: Every release made: (volume, mount IDs), for status and tests.
        self.released: list[tuple[str, tuple[str, ...]]] = []

    # -- one pass ---------------------------------------------------------------------------------
    def _recorded(self) -> dict[str, Fingerprint]:
        """Volumes with mount records, from the registry's in-memory view (no I/O)."""
        return {
            rec.name: {i: m.count for i, m in rec.mounts.items()}
            for rec in self.service.registry.all()
            if rec.mounts
        }

    def _users(self) -> dict[str, set[str]]:
        """Volume name -> states of the containers mounting it (blocking: a worker thread)."""
        users: dict[str, set[str]] = {}
        for c in self.api.containers():
            for vol in c.volumes:
                users.setdefault(vol, set()).add(c.state)
        return users

    async def check(self) -> list[str]:
        """One pass: note new suspects, release confirmed ones. Returns the volumes released."""
        recorded = self._recorded()  # records first, then containers (see the module doc)
        if not recorded:
            self._suspects.clear()
            return []
        users = await asyncio.to_thread(self._users)
        now = time.monotonic()
        released = []
        for name in list(self._suspects):
            if name not in recorded:
                del self._suspects[name]
        for name, fp in recorded.items():
            if users.get(name, set()) - DONE:
                self._suspects.pop(name, None)  # a container may use it: not stale
                continue
            seen = self._suspects.get(name)
            if seen is None or seen.fingerprint != fp:
                self._suspects[name] = _Suspect(fp, now)  # (again) first seen stale now
                continue
            if now - seen.since < self.confirm_after:
                continue
            if await self._release(name, fp):
                released.append(name)
            self._suspects.pop(name, None)
        return released

    async def _release(self, name: str, fp: Fingerprint) -> bool:
        ids = sorted(fp)
        try:
            # Checked under the volume's lock: a Mount or Unmount since our look wins.
            done = await self.service.release(name, ids, expect=fp)
        except Exception as exc:  # a volume error must not stop the healer
            log.warning("could not release stale mount records of volume %r: %s", name, exc)
            return False
        if not done:
            return False  # changed meanwhile: start over next pass
        self.released.append((name, tuple(ids)))
        log.warning(
            "released %d stale mount record(s) of volume %r (%s): no container on the engine "
            "uses it (the engine gave up on its Unmount while the plugin was down)",
            len(ids),
            name,
            ", ".join(i[:12] for i in ids),
        )
        return True

    def suspects(self) -> list[str]:
        return sorted(self._suspects)

    # -- the loop ---------------------------------------------------------------------------------
    async def _wait_for_engine(self) -> None:
        delay = 1.0
        while not await asyncio.to_thread(self.api.ping):
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.every)
        log.info(
            "engine API at %s answers; checking for stale mount records in %.0fs",
            self.api.socket_path,
            self.quiet,
        )
        await asyncio.sleep(self.quiet)

    async def run(self) -> None:
        await self._wait_for_engine()
        while True:
            try:
                await self.check()
            except EngineUnavailable as exc:
                log.info("engine API unavailable (%s); stale mount check postponed", exc)
                self._suspects.clear()  # confirmations need two fresh answers
                # The engine may be restarting (and restoring containers, mounting their
                # volumes): wait for its API and a quiet period again, as at our own start.
                await self._wait_for_engine()
                continue
            except Exception:
                log.exception("stale mount check failed")
            await asyncio.sleep(self.confirm_after if self._suspects else self.every)


@contextlib.asynccontextmanager
async def healing(
    service: HealedService, docker_host: str, every: float = 60.0
) -> AsyncIterator[StaleMountHealer]:
    """Run the healer beside the server (``server.run(..., beside=[...])``): a pass every
    ``every`` seconds, a confirming pass ``every / 6`` seconds after one that found suspects,
    the first pass ``every / 2`` seconds after the engine's API first answered."""
    from .api import BadDockerHost, parse_docker_host

    if every <= 0:
        raise BadDockerHost("--heal-every must be a positive number of seconds")
    api = DockerAPI(parse_docker_host(docker_host))
    healer = StaleMountHealer(service, api, every=every, confirm_after=every / 6, quiet=every / 2)
    task = asyncio.create_task(healer.run(), name="dockvol-heal")
    try:
        yield healer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
