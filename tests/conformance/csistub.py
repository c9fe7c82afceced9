"""A small CSI plugin for the kit's own tests: volumes are directories, stage and publish are
bind mounts (mount(8)), served by a plain gRPC server on a unix socket in this process.

Correct, it passes every CSI check with no warning. Each defect (``DEFECTS``) gives it one
known bug; the tests require that exactly the check written for it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from dockvol._csi import csi_pb2 as pb
from dockvol._csi import csi_pb2_grpc as pb_grpc

DEFECTS = {
    "create-not-idempotent": "CreateVolume of an existing name answers ALREADY_EXISTS, always",
    "delete-unknown-not-found": "DeleteVolume of an unknown id answers NOT_FOUND",
    "publish-no-mount": "NodePublishVolume makes the target directory and mounts nothing",
    "unpublish-leaves-mount": "NodeUnpublishVolume answers OK and leaves the mount",
    "list-hangs": "ListVolumes never answers",
    "delete-refuses": "DeleteVolume of an existing volume answers FAILED_PRECONDITION",
}
#: What orchestrators tolerate: a warning from the named check, and a conformant run.
QUIRKS = {
    "no-name-internal": "CreateVolume without a name answers INTERNAL, not INVALID_ARGUMENT",
}
RPC = pb.ControllerServiceCapability.RPC
NRPC = pb.NodeServiceCapability.RPC


def _mounted(path: Path) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return any(line.split(" ", 5)[4] == real for line in f)


def _bind(src: Path, dst: Path, readonly: bool = False) -> None:
    subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)
    if readonly:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], check=True)


def _unmount(path: Path) -> None:
    while _mounted(path):
        subprocess.run(["umount", str(path)], check=True)


class StubPlugin(pb_grpc.IdentityServicer, pb_grpc.ControllerServicer, pb_grpc.NodeServicer):
    def __init__(self, root: Path, defect: str = "") -> None:
        if defect and defect not in DEFECTS and defect not in QUIRKS:
            raise ValueError(f"unknown defect {defect!r}")
        self.root, self.defect = root, defect
        self.capacity: dict[str, int] = {}  # name -> required bytes
        self.lock = threading.Lock()
        self.stop_hanging = threading.Event()

    def _abort(self, context: Any, code: grpc.StatusCode, msg: str) -> Any:
        context.abort(code, msg)

    # Identity
    def GetPluginInfo(self, request: Any, context: Any) -> Any:
        return pb.GetPluginInfoResponse(name="stub.dockvol.test", vendor_version="0.1")

    def GetPluginCapabilities(self, request: Any, context: Any) -> Any:
        S = pb.PluginCapability.Service
        return pb.GetPluginCapabilitiesResponse(
            capabilities=[pb.PluginCapability(service=S(type=S.CONTROLLER_SERVICE))]
        )

    def Probe(self, request: Any, context: Any) -> Any:
        return pb.ProbeResponse()

    # Controller
    def _volume(self, name: str) -> Any:
        return pb.Volume(volume_id=name, capacity_bytes=self.capacity.get(name, 0))

    def CreateVolume(self, request: Any, context: Any) -> Any:
        if not request.name:
            code = grpc.StatusCode.INVALID_ARGUMENT
            if self.defect == "no-name-internal":
                code = grpc.StatusCode.INTERNAL
            self._abort(context, code, "name is required")
        if not request.volume_capabilities:
            self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, "capabilities are required")
        want = request.capacity_range.required_bytes
        with self.lock:
            if request.name in self.capacity:
                if self.defect == "create-not-idempotent" or self.capacity[request.name] != want:
                    self._abort(context, grpc.StatusCode.ALREADY_EXISTS, "exists")
                return pb.CreateVolumeResponse(volume=self._volume(request.name))
            (self.root / request.name).mkdir()
            self.capacity[request.name] = want
            return pb.CreateVolumeResponse(volume=self._volume(request.name))

    def DeleteVolume(self, request: Any, context: Any) -> Any:
        with self.lock:
            if request.volume_id not in self.capacity:
                if self.defect == "delete-unknown-not-found":
                    self._abort(context, grpc.StatusCode.NOT_FOUND, "no such volume")
                return pb.DeleteVolumeResponse()
            if self.defect == "delete-refuses":
                self._abort(context, grpc.StatusCode.FAILED_PRECONDITION, "volume in use")
            shutil.rmtree(self.root / request.volume_id)
            del self.capacity[request.volume_id]
        return pb.DeleteVolumeResponse()

    def ValidateVolumeCapabilities(self, request: Any, context: Any) -> Any:
        if request.volume_id not in self.capacity:
            self._abort(context, grpc.StatusCode.NOT_FOUND, "no such volume")
        return pb.ValidateVolumeCapabilitiesResponse(
            confirmed=pb.ValidateVolumeCapabilitiesResponse.Confirmed(
                volume_capabilities=request.volume_capabilities
            )
        )

    def ListVolumes(self, request: Any, context: Any) -> Any:
        if self.defect == "list-hangs":
            self.stop_hanging.wait(60)
        names = sorted(self.capacity)
        start = int(request.starting_token or 0)
        end = start + request.max_entries if request.max_entries else len(names)
        entries = [pb.ListVolumesResponse.Entry(volume=self._volume(n)) for n in names[start:end]]
        return pb.ListVolumesResponse(
            entries=entries, next_token=str(end) if end < len(names) else ""
        )

    def GetCapacity(self, request: Any, context: Any) -> Any:
        st = os.statvfs(self.root)
        return pb.GetCapacityResponse(available_capacity=st.f_bavail * st.f_frsize)

    def ControllerGetCapabilities(self, request: Any, context: Any) -> Any:
        types = [RPC.CREATE_DELETE_VOLUME, RPC.LIST_VOLUMES, RPC.GET_CAPACITY, RPC.EXPAND_VOLUME]
        return pb.ControllerGetCapabilitiesResponse(
            capabilities=[pb.ControllerServiceCapability(rpc=RPC(type=t)) for t in types]
        )

    def ControllerExpandVolume(self, request: Any, context: Any) -> Any:
        if request.volume_id not in self.capacity:
            self._abort(context, grpc.StatusCode.NOT_FOUND, "no such volume")
        with self.lock:
            want = request.capacity_range.required_bytes
            self.capacity[request.volume_id] = max(self.capacity[request.volume_id], want)
            got = self.capacity[request.volume_id]
        return pb.ControllerExpandVolumeResponse(capacity_bytes=got)

    # Node
    def NodeGetInfo(self, request: Any, context: Any) -> Any:
        return pb.NodeGetInfoResponse(node_id="stub-node")

    def NodeGetCapabilities(self, request: Any, context: Any) -> Any:
        types = [NRPC.STAGE_UNSTAGE_VOLUME, NRPC.GET_VOLUME_STATS]
        return pb.NodeGetCapabilitiesResponse(
            capabilities=[pb.NodeServiceCapability(rpc=NRPC(type=t)) for t in types]
        )

    def NodeStageVolume(self, request: Any, context: Any) -> Any:
        if request.volume_id not in self.capacity:
            self._abort(context, grpc.StatusCode.NOT_FOUND, "no such volume")
        staging = Path(request.staging_target_path)
        if not _mounted(staging):
            _bind(self.root / request.volume_id, staging)
        return pb.NodeStageVolumeResponse()

    def NodeUnstageVolume(self, request: Any, context: Any) -> Any:
        _unmount(Path(request.staging_target_path))
        return pb.NodeUnstageVolumeResponse()

    def NodePublishVolume(self, request: Any, context: Any) -> Any:
        if request.volume_id not in self.capacity:
            self._abort(context, grpc.StatusCode.NOT_FOUND, "no such volume")
        target = Path(request.target_path)
        target.mkdir(exist_ok=True)
        if self.defect != "publish-no-mount" and not _mounted(target):
            _bind(Path(request.staging_target_path), target, request.readonly)
        return pb.NodePublishVolumeResponse()

    def NodeUnpublishVolume(self, request: Any, context: Any) -> Any:
        target = Path(request.target_path)
        if self.defect != "unpublish-leaves-mount":
            _unmount(target)
            if target.is_dir():
                target.rmdir()
        return pb.NodeUnpublishVolumeResponse()

    def NodeGetVolumeStats(self, request: Any, context: Any) -> Any:
        st = os.statvfs(request.volume_path)
        B = pb.VolumeUsage.Unit.BYTES
        return pb.NodeGetVolumeStatsResponse(
            usage=[pb.VolumeUsage(unit=B, total=st.f_blocks * st.f_frsize,
                                  available=st.f_bavail * st.f_frsize,
                                  used=(st.f_blocks - st.f_bfree) * st.f_frsize)]
        )  # fmt: skip


class StubServer:
    """The stub on ``directory/csi.sock`` (volumes under ``directory/root``) while entered."""

    def __init__(self, directory: Path, defect: str = "") -> None:
        self.dir = directory
        (directory / "root").mkdir(parents=True, exist_ok=True)
        self.plugin = StubPlugin(directory / "root", defect)
        self.sock = directory / "csi.sock"
        self.endpoint = f"unix://{self.sock}"
        self.server: Any = None

    def __enter__(self) -> StubServer:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_IdentityServicer_to_server(self.plugin, server)  # type: ignore[no-untyped-call]
        pb_grpc.add_ControllerServicer_to_server(self.plugin, server)  # type: ignore[no-untyped-call]
        pb_grpc.add_NodeServicer_to_server(self.plugin, server)  # type: ignore[no-untyped-call]
        server.add_insecure_port(self.endpoint)
        server.start()
        self.server = server
        deadline = time.monotonic() + 10
        while not self.sock.exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # polling for the socket file
        return self

    def __exit__(self, *exc: object) -> None:
        self.plugin.stop_hanging.set()
        self.server.stop(1).wait(5)
