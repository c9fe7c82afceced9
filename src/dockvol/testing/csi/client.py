"""A CSI client for the kit: one gRPC channel to a plugin's unix socket, every call with a
deadline, replies and refusals as plain values (the kit judges them, gRPC does not raise)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import grpc

from dockvol._csi import csi_pb2 as pb
from dockvol._csi import csi_pb2_grpc as pb_grpc

#: Which service answers each RPC the kit makes.
SERVICE_OF = {
    **{m: "Identity" for m in ("GetPluginInfo", "GetPluginCapabilities", "Probe")},
    **{
        m: "Controller"
        for m in (
            "CreateVolume",
            "DeleteVolume",
            "ValidateVolumeCapabilities",
            "ListVolumes",
            "GetCapacity",
            "ControllerGetCapabilities",
            "ControllerExpandVolume",
        )
    },
    **{
        m: "Node"
        for m in (
            "NodeStageVolume",
            "NodeUnstageVolume",
            "NodePublishVolume",
            "NodeUnpublishVolume",
            "NodeGetVolumeStats",
            "NodeGetCapabilities",
            "NodeGetInfo",
        )
    },
}


def socket_path(endpoint: str) -> str:
    """``unix:///path`` or a bare absolute path -> the path; anything else is refused."""
    if endpoint.startswith("unix://"):
        path = endpoint.removeprefix("unix://")
    elif "://" in endpoint:
        raise ValueError(f"CSI endpoint {endpoint!r}: only unix sockets; use unix:///path/csi.sock")
    else:
        path = endpoint
    if not path.startswith("/"):
        raise ValueError(f"CSI endpoint {endpoint!r}: the socket path must be absolute")
    return path


class CallTimeout(TimeoutError):
    """The call did not answer within its deadline."""


@dataclass
class Answer:
    """What one RPC came back with: a reply (``code`` OK) or a status code and its message."""

    rpc: str
    code: grpc.StatusCode
    message: str = ""
    reply: Any = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.code == grpc.StatusCode.OK)

    def describe(self) -> str:
        if self.ok:
            return "OK"
        return f"{self.code.name}: {self.message[:160]}" if self.message else self.code.name


class CsiClient:
    """The plugin at ``endpoint``; ``call("CreateVolume", request, timeout)``."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.path = socket_path(endpoint)
        self._channel: grpc.Channel | None = None
        self._stubs: dict[str, Any] = {}

    def _stub(self, service: str) -> Any:
        if self._channel is None:
            self._channel = grpc.insecure_channel(f"unix://{self.path}")
            self._stubs = {
                "Identity": pb_grpc.IdentityStub(self._channel),  # type: ignore[no-untyped-call]
                "Controller": pb_grpc.ControllerStub(self._channel),  # type: ignore[no-untyped-call]
                "Node": pb_grpc.NodeStub(self._channel),  # type: ignore[no-untyped-call]
            }
        return self._stubs[service]

    def call(self, rpc: str, request: Any, timeout: float) -> Answer:
        """One RPC. A reply or a status is an :class:`Answer`; no answer within ``timeout`` is
        :class:`CallTimeout`; a plugin that cannot be reached is ``ConnectionError``."""
        method = getattr(self._stub(SERVICE_OF[rpc]), rpc)
        t0 = time.monotonic()
        try:
            reply = method(request, timeout=timeout, wait_for_ready=False)
        except grpc.RpcError as e:
            took = time.monotonic() - t0
            code = e.code()
            details = e.details() or ""
            if code == grpc.StatusCode.DEADLINE_EXCEEDED and took >= timeout * 0.9:
                raise CallTimeout(f"{rpc} did not answer within {timeout:g}s") from None
            if code == grpc.StatusCode.UNAVAILABLE and _transport(details):
                raise ConnectionError(f"{rpc}: the plugin is unreachable: {details}") from None
            return Answer(rpc, code, details, None, took)
        return Answer(rpc, grpc.StatusCode.OK, "", reply, time.monotonic() - t0)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


#: What gRPC's own UNAVAILABLE says when the socket is gone (a plugin's UNAVAILABLE is a reply).
_TRANSPORT = ("failed to connect", "connect failed", "socket closed", "connection reset")


def _transport(details: str) -> bool:
    low = details.lower()
    return any(t in low for t in _TRANSPORT)


def mount_capability(mode: Any = None, fs_type: str = "") -> Any:
    """A volume capability of access type mount (SINGLE_NODE_WRITER unless told)."""
    Mode = pb.VolumeCapability.AccessMode.Mode
    return pb.VolumeCapability(
        mount=pb.VolumeCapability.MountVolume(fs_type=fs_type),
        access_mode=pb.VolumeCapability.AccessMode(
            mode=Mode.SINGLE_NODE_WRITER if mode is None else mode
        ),
    )
