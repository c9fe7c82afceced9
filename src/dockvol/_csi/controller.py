"""CSI Controller: volumes created, deleted, listed and grown through the volume service."""

from __future__ import annotations

import asyncio
import bisect
import os
from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf.wrappers_pb2 import Int64Value

from .._sdk.options import parse_size
from . import csi_pb2 as pb
from . import csi_pb2_grpc as pb_grpc
from .errors import CsiError, invalid, require, rpc
from .plugin import CsiPlugin

#: A managed CSI plugin keeps its volumes and state in /data/published/.dockvol, beside the
#: paths Swarm publishes volumes at (/data/published/<volume id>).
RESERVED_NAME = ".dockvol"

RPC = pb.ControllerServiceCapability.RPC
#: ListVolumes tokens: this prefix and the name of the last volume of the previous page.
TOKEN_PREFIX = "after:"


class Controller(pb_grpc.ControllerServicer):
    def __init__(self, plugin: CsiPlugin) -> None:
        self.p = plugin

    @rpc
    async def CreateVolume(self, request: Any, context: Any) -> pb.CreateVolumeResponse:
        name = require(request.name, "name")
        if name == RESERVED_NAME:
            raise invalid(
                f"the volume name {RESERVED_NAME!r} is reserved (a managed plugin keeps its "
                "volumes and state in a directory of that name); choose another name"
            )
        caps = list(request.volume_capabilities)
        self.p.access.check(caps)
        if request.HasField("volume_content_source"):
            raise invalid("creating a volume from a snapshot or another volume is not offered")
        if request.HasField("accessibility_requirements") and not self.p.access.reachable_from(
            request.accessibility_requirements
        ):
            raise CsiError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this driver's volumes live on the node that creates them ({self.p.node_id}), "
                "which is not among the requisite topologies",
            )
        opts = dict(request.parameters)
        fs_type = self.p.access.fs_type(caps)
        if fs_type and "fs" in self.p.service.schema:
            opts.setdefault("fs", fs_type)
        rng = request.capacity_range
        if request.HasField("capacity_range"):
            self._size_from_capacity(opts, rng)
        sizeless = not self.p.has_size
        if sizeless and self.p.service.get(name) is not None:
            asked = self.p.capacities.get(name)
            if asked is not None and asked != (rng.required_bytes, rng.limit_bytes):
                raise CsiError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"volume {name!r} already exists with capacity range {list(asked)}; "
                    "ask for the same range, or delete the volume first",
                )
        with self.p.secrets.given(request.secrets):
            await self.p.service.create(name, opts)
        if sizeless:
            await asyncio.to_thread(
                self.p.capacities.put, name, rng.required_bytes, rng.limit_bytes
            )
        info = self.p.service.get(name)
        if info is None:  # removed between the two lines by a concurrent DeleteVolume
            raise CsiError(grpc.StatusCode.ABORTED, f"volume {name!r} was deleted meanwhile; retry")
        return pb.CreateVolumeResponse(volume=self.p.volume(info))

    def _size_from_capacity(self, opts: dict[str, str], rng: pb.CapacityRange) -> None:
        """The capacity range as the driver's ``size`` option (exactly the required bytes)."""
        required, limit = rng.required_bytes, rng.limit_bytes
        if required < 0 or limit < 0:
            raise invalid("capacity_range: required_bytes and limit_bytes must not be negative")
        if limit and required > limit:
            raise invalid(f"capacity_range: required_bytes {required} exceed limit_bytes {limit}")
        if not self.p.has_size:
            # A directory has no size of its own: it can use what its filesystem has, so any
            # requirement is met; its capacity is reported as unknown (0).
            return
        if "size" in opts:  # a size parameter too: it must fall in the range
            try:
                size = parse_size(opts["size"])
            except ValueError as exc:
                raise invalid(f"parameter size: {exc}") from None
            if size < required or (limit and size > limit):
                raise CsiError(
                    grpc.StatusCode.OUT_OF_RANGE,
                    f"parameter size={opts['size']} is outside the capacity range "
                    f"[{required}, {limit or 'no limit'}]; give one or the other",
                )
            return
        wanted = required or limit
        if wanted:
            opts["size"] = str(wanted)

    @rpc
    async def DeleteVolume(self, request: Any, context: Any) -> pb.DeleteVolumeResponse:
        name = require(request.volume_id, "volume_id")
        with self.p.secrets.given(request.secrets):
            await self.p.service.remove(name)  # unknown: success, as the spec asks
        await asyncio.to_thread(self.p.capacities.forget, name)
        return pb.DeleteVolumeResponse()

    @rpc
    async def ValidateVolumeCapabilities(
        self, request: Any, context: Any
    ) -> pb.ValidateVolumeCapabilitiesResponse:
        name = require(request.volume_id, "volume_id")
        caps = list(request.volume_capabilities)
        if not caps:
            raise invalid("volume_capabilities are required")
        info = self.p.service.get(name)
        if info is None:
            raise CsiError(grpc.StatusCode.NOT_FOUND, f"volume {name!r} does not exist")
        for cap in caps:
            why = self.p.access.problem(cap, info.options)
            if why is not None:
                return pb.ValidateVolumeCapabilitiesResponse(message=why)
        confirmed = pb.ValidateVolumeCapabilitiesResponse.Confirmed(
            volume_context=dict(request.volume_context),
            volume_capabilities=caps,
            parameters=dict(request.parameters),
        )
        return pb.ValidateVolumeCapabilitiesResponse(confirmed=confirmed)

    @rpc
    async def ListVolumes(self, request: Any, context: Any) -> pb.ListVolumesResponse:
        if request.max_entries < 0:
            raise invalid("max_entries must not be negative")
        names = sorted(v.name for v in self.p.service.list_volumes())
        start = 0
        if request.starting_token:
            # The token names the last volume already listed: volumes created or deleted
            # between two pages neither shift nor repeat the rest.
            token = request.starting_token
            if not token.startswith(TOKEN_PREFIX):
                raise CsiError(grpc.StatusCode.ABORTED, f"starting_token {token!r} is not valid")
            start = bisect.bisect_right(names, token.removeprefix(TOKEN_PREFIX))
        end = len(names)
        if request.max_entries:
            end = min(end, start + request.max_entries)
        entries = []
        for name in names[start:end]:
            info = self.p.service.get(name)
            if info is not None:
                entries.append(pb.ListVolumesResponse.Entry(volume=self.p.volume(info)))
        more = end < len(names)
        return pb.ListVolumesResponse(
            entries=entries, next_token=TOKEN_PREFIX + names[end - 1] if more else ""
        )

    @rpc
    async def GetCapacity(self, request: Any, context: Any) -> pb.GetCapacityResponse:
        unusable = any(self.p.access.problem(c) for c in request.volume_capabilities)
        elsewhere = (
            request.HasField("accessible_topology")
            and not self.p.access.everywhere
            and dict(request.accessible_topology.segments)
            != {k: v for k, v in self._node_segments().items()}
        )
        if unusable or elsewhere:
            return pb.GetCapacityResponse(available_capacity=0)
        st = await asyncio.to_thread(os.statvfs, self.p.service.driver.root)
        available = st.f_bavail * st.f_frsize
        reply = pb.GetCapacityResponse(available_capacity=available)
        if self.p.has_size:
            reply.maximum_volume_size.CopyFrom(Int64Value(value=available))
        return reply

    def _node_segments(self) -> Mapping[str, str]:
        topo = self.p.access.topology()
        return dict(topo[0].segments) if topo else {}

    @rpc
    async def ControllerGetCapabilities(
        self, request: Any, context: Any
    ) -> pb.ControllerGetCapabilitiesResponse:
        types = [RPC.CREATE_DELETE_VOLUME, RPC.LIST_VOLUMES, RPC.GET_CAPACITY]
        if self.p.can_resize:
            types.append(RPC.EXPAND_VOLUME)
        return pb.ControllerGetCapabilitiesResponse(
            capabilities=[pb.ControllerServiceCapability(rpc=RPC(type=t)) for t in types]
        )

    @rpc
    async def ControllerExpandVolume(
        self, request: Any, context: Any
    ) -> pb.ControllerExpandVolumeResponse:
        name = require(request.volume_id, "volume_id")
        if not self.p.can_resize:
            raise CsiError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"driver {type(self.p.service.driver).__name__} cannot resize volumes",
            )
        if not request.HasField("capacity_range"):
            raise invalid("capacity_range is required")
        rng = request.capacity_range
        wanted = rng.required_bytes or rng.limit_bytes
        if wanted <= 0:
            raise invalid("capacity_range: give required_bytes")
        info = self.p.service.get(name)
        if info is None:
            raise CsiError(grpc.StatusCode.NOT_FOUND, f"volume {name!r} does not exist")
        current = self.p.capacity(info)
        if rng.limit_bytes and current > rng.limit_bytes:
            raise CsiError(
                grpc.StatusCode.OUT_OF_RANGE,
                f"volume {name!r} is already {current} bytes, above limit_bytes; it cannot shrink",
            )
        if current >= wanted:  # already done (a retry): volumes only grow
            return pb.ControllerExpandVolumeResponse(capacity_bytes=current)
        with self.p.secrets.given(request.secrets):
            size = await self.p.service.resize(name, str(wanted))
        return pb.ControllerExpandVolumeResponse(capacity_bytes=size, node_expansion_required=False)
