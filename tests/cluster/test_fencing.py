"""Self-fencing of the etcd registry against a real 3-member etcd cluster (no engine needed).

A node cut off from etcd hands its single-node volumes to its fence callback while its lease is
still alive in etcd (another node cannot hold them yet), and never takes them back. The fence
callback here records the call; the engine tests fence real filesystems.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dockvol import DriverError
from dockvol._cluster.client import EtcdClient
from dockvol._cluster.registry import EtcdRegistry, open_registry
from dockvol._cluster.session import fence_margin
from dockvol._registry.base import MountRecord, VolumeRecord

from .conftest import wait_for
from .etcd import CutProxy, EtcdCluster

TTL = 3.0
Open = Callable[..., EtcdRegistry]


@dataclass
class FenceLog:
    """The fence callback: what it was asked, when, and whether etcd still held the volume."""

    holder_key: Callable[[str], bytes]
    direct: EtcdClient
    calls: list[tuple[float, list[str], str, bool]] = field(default_factory=list)
    can_fence: bool = True  # False: a driver that cannot fence (a plain directory)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, names: Sequence[str], reason: str) -> Mapping[str, bool]:
        at = time.monotonic()
        # Read through the healthy side: is the hold still in etcd (the lease alive)?
        still_held = all(self.direct.get(self.holder_key(n)) is not None for n in names)
        with self.lock:
            self.calls.append((at, list(names), reason, still_held))
        return dict.fromkeys(names, self.can_fence)

    def fenced_names(self) -> list[str]:
        with self.lock:
            return sorted({n for _, names, _, _ in self.calls for n in names})


@pytest.fixture
def proxies(etcd: EtcdCluster) -> Iterator[list[CutProxy]]:
    ps = [CutProxy(e) for e in etcd.endpoints]
    yield ps
    for p in ps:
        p.close()


@pytest.fixture
def open_node(etcd: EtcdCluster, prefix: str, tmp_path: Path) -> Iterator[Open]:
    opened: list[EtcdRegistry] = []

    def _open(node: str, endpoints: list[str] | None = None) -> EtcdRegistry:
        url = "etcd://" + ",".join(endpoints or etcd.endpoints) + prefix
        reg = open_registry(url, node, tmp_path / node, TTL, default_access="single-node")
        assert isinstance(reg, EtcdRegistry)
        opened.append(reg)
        return reg

    yield _open
    for r in opened:
        r.close()


def vol(name: str, access: str) -> VolumeRecord:
    return VolumeRecord(name, "k-" + name, {"access": access}, datetime.now(UTC))


def _wire(a: EtcdRegistry, etcd: EtcdCluster) -> FenceLog:
    fences = FenceLog(a.layout.holder, EtcdClient(etcd.endpoints, timeout=1.0, deadline=2.0))
    a.on_hold_lost = fences
    return fences


@pytest.mark.parametrize("how", ["cut", "blackhole"])
def test_a_cut_off_node_fences_its_single_node_volumes_before_its_lease_can_lapse(
    etcd: EtcdCluster, open_node: Open, proxies: list[CutProxy], how: str
) -> None:
    a = open_node("a", [p.endpoint for p in proxies])
    b = open_node("b")
    fences = _wire(a, etcd)
    a.create(vol("one", "single-node"))
    a.create(vol("many", "multi"))
    for name in ("one", "many"):
        a.acquire(name)
        a.set_mount(name, MountRecord("id-" + name, 1, "/mnt/" + name))
    wait_for(lambda: b.status("one").get("holder"), what="a's hold seen by b")

    cut_at = time.monotonic()
    for p in proxies:
        getattr(p, how)()  # "blackhole": requests hang; only the watchdog's clock tells
    wait_for(lambda: fences.calls, timeout=TTL + 2, what="a fencing itself")
    # b takes the volume as soon as etcd lets it: the lease's expiry, never earlier.
    took_at = wait_for(lambda: _try_acquire(b, "one"), timeout=TTL + 5, what="b taking over")

    fenced_at, names, reason, still_held = fences.calls[0]
    assert names == ["one"], "only single-node volumes are fenced; multi ones are shared"
    assert still_held, "the fence must come while etcd still holds the volume for a"
    assert "not renewed" in reason and "ttl" in reason, reason
    # Within the TTL (less the margin) of the cut, and before b could take over.
    assert fenced_at - cut_at <= TTL - fence_margin(TTL) + 0.5, fenced_at - cut_at
    assert took_at is not None and took_at > fenced_at
    assert a.fenced() == {"one": reason}
    # A node that cannot prove its lease takes no new single-node mounts meanwhile.
    with pytest.raises(DriverError, match="cannot reach etcd"):
        a.acquire("other")


def _try_acquire(r: EtcdRegistry, name: str) -> float | None:
    try:
        r.acquire(name)
    except DriverError:
        return None
    return time.monotonic()


def test_a_fenced_volume_is_not_taken_back_when_etcd_answers_again(
    etcd: EtcdCluster,
    open_node: Open,
    proxies: list[CutProxy],
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = open_node("a", [p.endpoint for p in proxies])
    b = open_node("b")
    fences = _wire(a, etcd)
    a.create(vol("kept", "single-node"))
    a.acquire("kept")
    a.set_mount("kept", MountRecord("id1", 1, "/mnt/kept"))
    for p in proxies:
        p.cut()
    wait_for(lambda: fences.fenced_names() == ["kept"], timeout=TTL + 2, what="the fence")
    # Heal before the lease can lapse: the hold would still be a's, but a drops it.
    for p in proxies:
        p.heal()
    wait_for(a.session.connected, timeout=10, what="a reconnecting")
    wait_for(lambda: _try_acquire(b, "kept"), timeout=TTL + 5, what="b taking the hold")
    wait_for(
        lambda: (b.status("kept").get("holder") or {}).get("node") == "b", what="b's hold seen"
    )
    assert a.held_here() == [], "a fenced volume is never held again by this process"
    wait_for(
        lambda: any("need a restart" in r.getMessage() for r in caplog.records),
        timeout=5,
        what="the message that the containers need a restart",
    )
    assert len(fences.calls) == 1, "fenced once, not again"


def test_no_fence_while_the_lease_is_renewed(
    etcd: EtcdCluster, open_node: Open, proxies: list[CutProxy]
) -> None:
    a = open_node("a", [p.endpoint for p in proxies])
    fences = _wire(a, etcd)
    a.create(vol("calm", "single-node"))
    a.acquire("calm")
    a.set_mount("calm", MountRecord("id1", 1, "/mnt/calm"))
    # Several TTLs of healthy renewals: the watchdog must stay quiet.
    deadline = time.monotonic() + 2 * TTL
    while time.monotonic() < deadline:
        assert a.session.valid_lease() is not None
        time.sleep(0.2)  # sampling a state over a period, not synchronising
    assert fences.calls == []


def test_a_volume_the_driver_cannot_fence_keeps_its_hold_and_is_offered_once(
    etcd: EtcdCluster, open_node: Open, proxies: list[CutProxy]
) -> None:
    a = open_node("a", [p.endpoint for p in proxies])
    b = open_node("b")
    fences = _wire(a, etcd)
    fences.can_fence = False
    a.create(vol("dir", "single-node"))
    a.acquire("dir")
    a.set_mount("dir", MountRecord("id1", 1, "/mnt/dir"))
    for p in proxies:
        p.cut()
    wait_for(lambda: fences.calls, timeout=TTL + 2, what="the fence offered")
    for p in proxies:
        p.heal()
    wait_for(a.session.connected, timeout=10, what="a reconnecting")
    # Its writers go on: a keeps (or takes back) the hold, so b is still refused.
    wait_for(
        lambda: (b.status("dir").get("holder") or {}).get("node") == "a", what="a holding again"
    )
    with pytest.raises(DriverError, match="in use on node 'a'"):
        b.acquire("dir")
    assert a.fenced() == {} and len(fences.calls) == 1


def test_a_plugin_restarted_while_cut_off_fences_what_it_still_has_mounted(
    etcd: EtcdCluster, open_node: Open, proxies: list[CutProxy]
) -> None:
    a = open_node("a", [p.endpoint for p in proxies])
    a.create(vol("survivor", "single-node"))
    a.acquire("survivor")
    a.set_mount("survivor", MountRecord("id1", 1, "/mnt/survivor"))
    a.close()  # a restart: containers keep the volume mounted, the old lease is not revoked
    for p in proxies:
        p.cut()
    # The new process cannot prove the old lease (nor get a new one): the old one may lapse any
    # moment, so what is still mounted here is fenced as soon as the fence is wired.
    a2 = open_node("a", [p.endpoint for p in proxies])
    fences = _wire(a2, etcd)
    wait_for(lambda: fences.fenced_names() == ["survivor"], timeout=5, what="the fence")
    assert "no etcd lease since the plugin started" in fences.calls[0][2]


def test_several_volumes_are_fenced_at_once_not_one_after_the_other(
    etcd: EtcdCluster, open_node: Open, proxies: list[CutProxy]
) -> None:
    a = open_node("a", [p.endpoint for p in proxies])
    fences = _wire(a, etcd)
    both = threading.Barrier(2, timeout=5)  # each fence waits for the other: only in parallel

    def fence_together(names: Sequence[str], reason: str) -> Mapping[str, bool]:
        both.wait()
        return fences(names, reason)

    a.on_hold_lost = fence_together
    for name in ("p1", "p2"):
        a.create(vol(name, "single-node"))
        a.acquire(name)
        a.set_mount(name, MountRecord("id-" + name, 1, "/mnt/" + name))
    for p in proxies:
        p.cut()
    wait_for(lambda: fences.fenced_names() == ["p1", "p2"], timeout=TTL + 2, what="both fenced")
    assert sorted(n for _, names, _, _ in fences.calls for n in names) == ["p1", "p2"]
    assert a.fenced().keys() == {"p1", "p2"}
