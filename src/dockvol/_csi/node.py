"""CSI Node: publish (the service's mount, bound into the target path), and optionally stage
(the service's mount bound at a staging path, which publish then binds from).

Each stage and publish is a mount record of the volume service, with a mount ID naming the
path (``csi-stage:PATH``, ``csi-publish:PATH``, ``csi-publish-ro:PATH``): durable before the
reply, counted like any other user of the volume (DeleteVolume is refused while one exists),
and restored at start by :func:`restore_binds`. The record is written before the bind and
dropped after the unbind, so a retried call after a crash finds its record and finishes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import grpc

from .._service.service import VolumeInfo
from . import csi_pb2 as pb
from . import csi_pb2_grpc as pb_grpc
from . import mounts
from .access import READ_ONLY_MODES, TOPOLOGY_KEY
from .errors import CsiError, invalid, require, rpc
from .plugin import CsiPlugin, options_of

log = logging.getLogger("dockvol.csi")
RPC = pb.NodeServiceCapability.RPC
STAGE = "csi-stage:"
PUBLISH = "csi-publish:"
PUBLISH_RO = "csi-publish-ro:"
MAX_MOUNT_ID = 256  # the service's limit


def stage_id(path: str) -> str:
    return _mount_id(STAGE, path)


def publish_id(path: str, readonly: bool) -> str:
    return _mount_id(PUBLISH_RO if readonly else PUBLISH, path)


def _mount_id(prefix: str, path: str) -> str:
    if not os.path.isabs(path):
        raise invalid(f"{path!r} is not an absolute path")
    normal = os.path.normpath(path)
    if len(prefix) + len(normal) > MAX_MOUNT_ID or not normal.isprintable():
        raise invalid(f"path {path!r} is too long or not printable")
    return prefix + normal


def _not_found(volume_id: str) -> CsiError:
    return CsiError(grpc.StatusCode.NOT_FOUND, f"volume {volume_id!r} does not exist")


class Node(pb_grpc.NodeServicer):
    def __init__(self, plugin: CsiPlugin) -> None:
        self.p = plugin

    @rpc
    async def NodeStageVolume(self, request: Any, context: Any) -> pb.NodeStageVolumeResponse:
        volume_id = require(request.volume_id, "volume_id")
        staging = require(request.staging_target_path, "staging_target_path")
        if not request.HasField("volume_capability"):
            raise invalid("volume_capability is required")
        mount_id = stage_id(staging)
        service = self.p.service
        async with self.p.node_locks.hold(volume_id):
            info = service.get(volume_id)
            with self.p.secrets.given(request.secrets):
                if info is None:
                    info = await self._register(volume_id, dict(request.volume_context))
                self.p.access.check([request.volume_capability], info.options)
                if mount_id in info.mount_ids:  # a retry: the record is there, finish the bind
                    mountpoint = info.mountpoint or await service.mount(volume_id, mount_id)
                else:
                    mountpoint = await service.mount(volume_id, mount_id)
            await asyncio.to_thread(_bind_once, Path(mountpoint), Path(staging), False)
        return pb.NodeStageVolumeResponse()

    async def _register(self, volume_id: str, context: dict[str, str]) -> VolumeInfo:
        """A volume this node has not seen (Swarm: created by the controller on another node):
        register it here with the options its volume context carries."""
        options = options_of(context)
        if options is None:
            raise _not_found(volume_id)
        await self.p.service.create(volume_id, options)
        info = self.p.service.get(volume_id)
        if info is None:
            raise _not_found(volume_id)
        log.info("volume %r registered on this node from its volume context", volume_id)
        return info

    @rpc
    async def NodeUnstageVolume(self, request: Any, context: Any) -> pb.NodeUnstageVolumeResponse:
        volume_id = require(request.volume_id, "volume_id")
        staging = require(request.staging_target_path, "staging_target_path")
        mount_id = stage_id(staging)
        async with self.p.node_locks.hold(volume_id):
            await asyncio.to_thread(mounts.unbind, Path(staging))
            await self.p.service.unmount(volume_id, mount_id)  # unknown: already unstaged
        return pb.NodeUnstageVolumeResponse()

    @rpc
    async def NodePublishVolume(self, request: Any, context: Any) -> pb.NodePublishVolumeResponse:
        volume_id = require(request.volume_id, "volume_id")
        target = require(request.target_path, "target_path")
        staging = request.staging_target_path  # empty: not staged, publish mounts it itself
        if not request.HasField("volume_capability"):
            raise invalid("volume_capability is required")
        cap = request.volume_capability
        readonly = request.readonly or cap.access_mode.mode in READ_ONLY_MODES
        mount_id = publish_id(target, readonly)
        service = self.p.service
        async with self.p.node_locks.hold(volume_id):
            info = service.get(volume_id)
            if info is None:  # not staged here (no staging is offered): register it now
                with self.p.secrets.given(request.secrets):
                    info = await self._register(volume_id, dict(request.volume_context))
            self.p.access.check([cap], info.options)
            if publish_id(target, not readonly) in info.mount_ids:
                raise CsiError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"volume {volume_id!r} is already published at {target} "
                    f"{'read-write' if readonly else 'read-only'}; unpublish it first",
                )
            if staging and stage_id(staging) not in info.mount_ids:
                raise CsiError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"volume {volume_id!r} is not staged at {staging}; call NodeStageVolume first",
                )
            mountpoint = info.mountpoint
            if mount_id not in info.mount_ids or mountpoint is None:
                with self.p.secrets.given(request.secrets):
                    mountpoint = await service.mount(volume_id, mount_id)
            source = Path(staging) if staging else Path(mountpoint)
            await asyncio.to_thread(_bind_once, source, Path(target), readonly)
        return pb.NodePublishVolumeResponse()

    @rpc
    async def NodeUnpublishVolume(
        self, request: Any, context: Any
    ) -> pb.NodeUnpublishVolumeResponse:
        volume_id = require(request.volume_id, "volume_id")
        target = require(request.target_path, "target_path")
        ids = (publish_id(target, False), publish_id(target, True))
        async with self.p.node_locks.hold(volume_id):
            await asyncio.to_thread(_unbind_and_remove, Path(target))
            info = self.p.service.get(volume_id)
            for mount_id in ids:
                if info is not None and mount_id in info.mount_ids:
                    await self.p.service.unmount(volume_id, mount_id)
        return pb.NodeUnpublishVolumeResponse()

    @rpc
    async def NodeGetVolumeStats(self, request: Any, context: Any) -> pb.NodeGetVolumeStatsResponse:
        volume_id = require(request.volume_id, "volume_id")
        path = require(request.volume_path, "volume_path")
        info = self.p.service.get(volume_id)
        if info is None:
            raise _not_found(volume_id)
        fenced = info.status.get("fenced")
        if fenced is not None:
            # Shut down on this node (its cluster lease could not be proven): say so, and leave
            # the dead filesystem alone. Usage is optional in the reply.
            return pb.NodeGetVolumeStatsResponse(
                volume_condition=pb.VolumeCondition(
                    abnormal=True,
                    message=f"volume {volume_id!r} was fenced on this node ({fenced}); restart "
                    "the plugin, then the workloads that use it",
                )
            )
        try:
            st = await asyncio.to_thread(os.statvfs, path)
        except FileNotFoundError:
            raise CsiError(
                grpc.StatusCode.NOT_FOUND, f"volume path {path} does not exist"
            ) from None
        unit = pb.VolumeUsage.Unit
        return pb.NodeGetVolumeStatsResponse(
            usage=[
                pb.VolumeUsage(
                    unit=unit.BYTES,
                    total=st.f_blocks * st.f_frsize,
                    available=st.f_bavail * st.f_frsize,
                    used=(st.f_blocks - st.f_bfree) * st.f_frsize,
                ),
                pb.VolumeUsage(
                    unit=unit.INODES,
                    total=st.f_files,
                    available=st.f_favail,
                    used=st.f_files - st.f_ffree,
                ),
            ],
            volume_condition=pb.VolumeCondition(abnormal=False, message="volume is healthy"),
        )

    @rpc
    async def NodeGetCapabilities(
        self, request: Any, context: Any
    ) -> pb.NodeGetCapabilitiesResponse:
        # No STAGE_UNSTAGE_VOLUME: Swarm (swarmkit, through engine 28.5) never sends
        # NodeUnstageVolume for a volume it staged, so every staged volume would stay "in use"
        # and DeleteVolume would be refused for ever. Publish mounts the volume itself; the
        # stage calls stay correct for a CO that makes them anyway.
        # VOLUME_CONDITION: a volume fenced here is reported abnormal by NodeGetVolumeStats.
        types = [RPC.GET_VOLUME_STATS, RPC.VOLUME_CONDITION]
        return pb.NodeGetCapabilitiesResponse(
            capabilities=[pb.NodeServiceCapability(rpc=RPC(type=t)) for t in types]
        )

    @rpc
    async def NodeGetInfo(self, request: Any, context: Any) -> pb.NodeGetInfoResponse:
        reply = pb.NodeGetInfoResponse(node_id=self.p.node_id)
        if not self.p.access.everywhere:
            reply.accessible_topology.CopyFrom(pb.Topology(segments={TOPOLOGY_KEY: self.p.node_id}))
        return reply


def _bind_once(source: Path, target: Path, readonly: bool) -> None:
    """Bind ``source`` at ``target`` unless that is done already (a retried call)."""
    # The spec has the CO make the parent; Swarm does not make /data/staged: make both.
    target.mkdir(parents=True, exist_ok=True)
    if mounts.is_mounted(target):
        return
    mounts.bind(source, target, readonly=readonly)


def _unbind_and_remove(target: Path) -> None:
    mounts.unbind(target)
    try:
        target.rmdir()  # the plugin made it (or the CO did); an empty directory only
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove target path %s after unpublish: %s", target, exc.strerror)


def restore_binds(plugin: CsiPlugin) -> list[str]:
    """At start (blocking): bind again every staged and published path whose record survived
    but whose mount did not (a crash between record and bind, a reboot). Returns problems."""
    problems: list[str] = []
    service = plugin.service
    for entry in service.list_volumes():
        info = service.get(entry.name)
        if info is None or info.mountpoint is None:
            continue
        source = Path(info.mountpoint)
        for mount_id in info.mount_ids:
            for prefix, readonly in ((STAGE, False), (PUBLISH, False), (PUBLISH_RO, True)):
                if not mount_id.startswith(prefix):
                    continue
                target = Path(mount_id.removeprefix(prefix))
                try:
                    if not mounts.is_mounted(target):
                        log.info("restoring the bind of volume %r at %s", info.name, target)
                        _bind_once(source, target, readonly)
                except Exception as exc:
                    problems.append(f"volume {info.name!r}: cannot restore {target}: {exc}")
    return problems
