"""Refusals as gRPC status codes, through the real CSI servicers in-process (a unix socket, the
real local driver); the registry raises what the etcd registry raises, with its messages. The
same refusals through Docker's front end keep their message as ``{"Err": ...}``.

The cluster's conditions with a real etcd: tests/cluster/test_csi_codes.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dockvol import DriverError, InUse, NotFound
from dockvol._cluster.errors import Contended, EtcdUnreachable, HeldElsewhere, InUseElsewhere
from dockvol._cluster.holders import Holders
from dockvol._cluster.keys import Layout
from dockvol._csi import csi_pb2 as pb
from dockvol._csi import csi_pb2_grpc as pb_grpc
from dockvol._csi.errors import code_for
from dockvol._csi.server import serve_csi
from dockvol._registry.memory import MemoryRegistry
from dockvol._sdk.context import HostContext
from dockvol._sdk.errors import DockvolError
from dockvol._service.service import VolumeService
from dockvol._wire.app import PluginApp
from dockvol.drivers.local import LocalDriver
from tests.csi.conftest import unmount_all_under
from tests.csi.test_controller import cap
from tests.unit.test_app_protocol import asgi

NODE = "n1"


class LosingClient:
    """An etcd client whose holder transactions always lose to another node that takes the
    key and lets it go in between: what five lost races in a row look like to ``hold``."""

    def __init__(self) -> None:
        self.txns = 0

    def txn(self, *args: Any, **kwargs: Any) -> tuple[bool, int, list[dict[str, Any]]]:
        self.txns += 1
        return False, 0, [{"response_range": {}}]  # refused, and already released again


def holders() -> Holders:
    return Holders(LosingClient(), Layout("/t"), NODE, 15)  # type: ignore[arg-type]


def contended() -> DriverError:
    """The real refusal of ``Holders.hold`` when it keeps losing the race."""
    with pytest.raises(DriverError) as info:
        holders().hold("v", lease=0x1)
    return info.value


def test_a_hold_that_keeps_losing_the_race_is_contended_and_still_a_driver_error() -> None:
    h = holders()
    with pytest.raises(Contended, match=r"^volume 'v' is contended by other nodes; try again$"):
        h.hold("v", lease=0x1)
    assert isinstance(h.client, LosingClient) and h.client.txns == 5  # it tried, then gave up
    assert issubclass(Contended, DriverError) and issubclass(EtcdUnreachable, DriverError)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (EtcdUnreachable("x"), grpc.StatusCode.UNAVAILABLE),
        (Contended("x"), grpc.StatusCode.ABORTED),
        (HeldElsewhere("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (InUseElsewhere("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (InUse("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (DriverError("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_code_for_each_class(exc: DockvolError, code: grpc.StatusCode) -> None:
    assert code_for(exc) == code


class FailingRegistry(MemoryRegistry):
    """A registry that refuses the next create, acquire or remove check as told."""

    def __init__(self) -> None:
        super().__init__()
        self.fail: dict[str, DockvolError] = {}

    def create(self, record: Any) -> None:
        if "create" in self.fail:
            raise self.fail["create"]
        super().create(record)

    def acquire(self, name: str) -> None:
        if "acquire" in self.fail:
            raise self.fail["acquire"]

    def before_remove(self, name: str) -> None:
        if "remove" in self.fail:
            raise self.fail["remove"]


def messages() -> dict[str, DockvolError]:
    """The refusals as the etcd registry words them (holders.py builds every message)."""
    h = holders()
    return {
        "unreachable": EtcdUnreachable(
            h.unreachable("create volume 'v2'", OSError("connection refused"))
        ),
        "fenced": EtcdUnreachable(h.fenced("v", "no valid lease")),
        "contended": contended(),
        "held": HeldElsewhere(h.held_elsewhere("v", {"node": "n2", "since": "now"})),
        "used": InUseElsewhere(h.in_use("v", {"n2"})),
    }


# (refusal, registry step it comes from, CSI call, expected code)
CASES = [
    ("unreachable", "create", "create", grpc.StatusCode.UNAVAILABLE),
    ("unreachable", "remove", "delete", grpc.StatusCode.UNAVAILABLE),
    ("fenced", "acquire", "publish", grpc.StatusCode.UNAVAILABLE),
    ("contended", "acquire", "publish", grpc.StatusCode.ABORTED),
    ("held", "acquire", "publish", grpc.StatusCode.FAILED_PRECONDITION),
    ("used", "remove", "delete", grpc.StatusCode.FAILED_PRECONDITION),
]


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    unmount_all_under(tmp_path)  # a bind a failed test left behind


def make_service(base: Path) -> tuple[VolumeService, FailingRegistry]:
    (base / "root").mkdir(exist_ok=True)
    driver = LocalDriver(
        base / "root", HostContext(plugin="dvtest", node=NODE, local_dir=base / "state")
    )
    driver.setup()
    registry = FailingRegistry()
    return VolumeService(driver, registry), registry


async def csi_call(base: Path, service: VolumeService, call: str) -> tuple[grpc.StatusCode, str]:
    endpoint = f"unix://{base}/csi.sock"
    async with (
        serve_csi(service, endpoint, node_id=NODE, name="dvtest") as sock,
        grpc.aio.insecure_channel(f"unix://{sock}") as channel,
    ):
        controller = pb_grpc.ControllerStub(channel)  # type: ignore[no-untyped-call]
        node = pb_grpc.NodeStub(channel)  # type: ignore[no-untyped-call]
        rpcs: dict[str, Callable[[], Any]] = {
            "create": lambda: controller.CreateVolume(
                pb.CreateVolumeRequest(name="v2", volume_capabilities=[cap()]), timeout=30
            ),
            "delete": lambda: controller.DeleteVolume(
                pb.DeleteVolumeRequest(volume_id="v"), timeout=30
            ),
            "publish": lambda: node.NodePublishVolume(
                pb.NodePublishVolumeRequest(
                    volume_id="v", target_path=str(base / "target"), volume_capability=cap()
                ),
                timeout=30,
            ),
        }
        try:
            await rpcs[call]()
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        raise AssertionError(f"{call} was not refused")


@pytest.mark.parametrize(("refusal", "step", "call", "code"), CASES)
def test_cluster_refusals_reach_csi_with_their_code_and_message(
    base: Path, refusal: str, step: str, call: str, code: grpc.StatusCode
) -> None:
    service, registry = make_service(base)
    try:
        asyncio.run(service.create("v", {}))
        exc = messages()[refusal]
        registry.fail[step] = exc
        got, message = asyncio.run(csi_call(base, service, call))
        assert (got, message) == (code, exc.message)
        assert not (base / "target").is_mount()
    finally:
        service.close()


# The engine's request for each registry step.
DOCKER = {
    "create": ("VolumeDriver.Create", {"Name": "v2", "Opts": {}}),
    "remove": ("VolumeDriver.Remove", {"Name": "v"}),
    "acquire": ("VolumeDriver.Mount", {"Name": "v", "ID": "1" * 64}),
}


@pytest.mark.parametrize(("refusal", "step"), sorted({(r, s) for r, s, _, _ in CASES}))
def test_cluster_refusals_reach_docker_unchanged(base: Path, refusal: str, step: str) -> None:
    service, registry = make_service(base)
    try:
        asyncio.run(service.create("v", {}))
        exc = messages()[refusal]
        registry.fail[step] = exc
        endpoint, request = DOCKER[step]
        body = json.dumps(request).encode() + b"\n"
        status, _, reply = asyncio.run(asgi(PluginApp(service), "/" + endpoint, body))
        assert (status, json.loads(reply)) == (200, {"Err": exc.message})
    finally:
        service.close()
