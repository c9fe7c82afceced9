"""The cluster's refusals as CSI status codes, and unchanged through Docker's protocol: two
``dockvol serve --driver shared --registry etcd://... --csi-endpoint`` processes on one shared
root and a real 3-member etcd (no Docker engine). Node a reaches etcd through proxies the test
cuts; b reaches it directly.

* a volume b uses: a's DeleteVolume is FAILED_PRECONDITION naming b (was INTERNAL);
* a cut off etcd: CreateVolume and the NodePublishVolume of a single-node volume are
  UNAVAILABLE (was INTERNAL), the spec's "retry later"; once etcd answers the same calls
  succeed. Docker's Remove, Create and Mount get the same messages as ``Err``.

A lost race for a holder key (ABORTED) needs five lost races in a row: tests/csi/test_errors.py
drives it, and every other refusal, through the servicers in-process.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dockvol._csi import csi_pb2 as pb
from tests.csi.conftest import unmount_all_under
from tests.csi.test_controller import cap, code_of
from tests.support.plugin import call

from . import csi_nodes
from .conftest import wait_for
from .etcd import EtcdCluster

TTL = 3.0
NAME = "dvcsicodes"
ID = "c" * 64


class Node(csi_nodes.CsiNode):
    def create(self, vol: str, **params: str) -> pb.Volume:
        req = pb.CreateVolumeRequest(name=vol, volume_capabilities=[cap()], parameters=params)
        reply: pb.CreateVolumeResponse = self.controller.CreateVolume(req, timeout=30)
        return reply.volume

    def delete(self, vol: str) -> None:
        self.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol), timeout=30)

    def publish(self, vol: str) -> None:
        req = pb.NodePublishVolumeRequest(
            volume_id=vol, target_path=str(self.dir / "target" / vol), volume_capability=cap()
        )
        self.node.NodePublishVolume(req, timeout=30)

    def docker(self, endpoint: str, body: dict[str, Any]) -> Any:
        status, reply = call(self.plugin.sock, f"VolumeDriver.{endpoint}", body)
        assert status == 200, (status, reply)
        return reply

    def docker_err(self, endpoint: str, body: dict[str, Any]) -> str:
        err = self.docker(endpoint, body).get("Err", "")
        assert err, f"Docker's {endpoint} was not refused"
        return str(err)


@pytest.fixture
def pair(etcd: EtcdCluster) -> Iterator[tuple[Node, Node]]:
    base = Path(tempfile.mkdtemp(prefix="dvcc", dir="/tmp"))  # short: socket paths are limited
    (base / "root").mkdir()
    try:
        yield from csi_nodes.csi_pair(
            Node, base, base / "root", etcd, "/cc" + uuid.uuid4().hex[:8],
            "--driver", "shared", "--lease-ttl", str(TTL), plugin=NAME,
        )  # fmt: skip
    finally:
        unmount_all_under(base)
        shutil.rmtree(base, ignore_errors=True)


def test_cluster_refusals_have_their_csi_codes_and_docker_messages(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    a.create("one", access="single-node")
    a.create("many", access="multi")
    wait_for(lambda: "Err" not in b.docker("Get", {"Name": "many"}), what="'many' on b")

    # Used on another node: "in use" (FAILED_PRECONDITION), naming the node.
    b.docker("Mount", {"Name": "many", "ID": ID})
    code, msg = code_of(lambda: a.delete("many"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION, (code, msg)
    assert msg.startswith("volume 'many' is in use on node(s) b;"), msg
    assert a.docker_err("Remove", {"Name": "many"}) == msg
    b.docker("Unmount", {"Name": "many", "ID": ID})

    # a cut off etcd: UNAVAILABLE, for as long as the cut lasts. (Each refused create waits for
    # the client's 5 s deadline; the refused remove, the same path, is left to test_errors.py.)
    for p in a.proxies:
        p.cut()
    code, msg = code_of(lambda: a.create("two"))
    assert code == grpc.StatusCode.UNAVAILABLE, (code, msg)
    assert msg.startswith("cannot create volume 'two': etcd is unreachable from node 'a'"), msg
    err = a.docker_err("Create", {"Name": "three", "Opts": {}})
    assert err.startswith("cannot create volume 'three': etcd is unreachable from node 'a'"), err

    code, msg = code_of(lambda: a.publish("one"))
    assert code == grpc.StatusCode.UNAVAILABLE, (code, msg)
    assert msg.startswith("node 'a' cannot reach etcd ("), msg
    assert "so it cannot mount single-node volume 'one'" in msg, msg
    err = a.docker_err("Mount", {"Name": "one", "ID": ID})
    assert err.startswith("node 'a' cannot reach etcd ("), err
    assert "so it cannot mount single-node volume 'one'" in err, err

    # A passing condition: once etcd answers, the same request succeeds.
    for p in a.proxies:
        p.heal()
    wait_for(lambda: _done(lambda: a.create("two")), timeout=20, what="CreateVolume after the heal")
    wait_for(lambda: _done(lambda: a.publish("one")), timeout=20, what="a's lease renewed")


def _done(rpc: Callable[[], object]) -> bool:
    """``rpc`` succeeded; False while a still says it cannot reach etcd (and nothing else)."""
    try:
        rpc()
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
        return False
    return True
