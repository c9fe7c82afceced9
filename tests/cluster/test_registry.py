"""The etcd registry against a real 3-member etcd cluster (no Docker engine needed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dockvol import DriverError
from dockvol._cluster.registry import EtcdRegistry, open_registry
from dockvol._registry.base import Conflict, MountRecord, VolumeRecord

from .conftest import wait_for
from .etcd import CutProxy, EtcdCluster, make_pki

TTL = 2.0
Open = Callable[..., EtcdRegistry]


@pytest.fixture
def open_node(etcd: EtcdCluster, prefix: str, tmp_path: Path) -> Iterator[Open]:
    opened: list[EtcdRegistry] = []

    def _open(node: str, endpoints: list[str] | None = None, access: str = "multi") -> EtcdRegistry:
        url = "etcd://" + ",".join(endpoints or etcd.endpoints) + prefix
        reg = open_registry(url, node, tmp_path / node, TTL, default_access=access)
        assert isinstance(reg, EtcdRegistry)
        opened.append(reg)
        return reg

    yield _open
    for r in opened:
        r.close()


def vol(name: str, **options: str) -> VolumeRecord:
    return VolumeRecord(name, "k-" + name.replace("/", "_"), options, datetime.now(UTC))


def test_create_on_one_node_is_seen_by_the_others(open_node: Open) -> None:
    a, b, c = open_node("a"), open_node("b"), open_node("c")
    before = b.generation
    a.create(vol("v1", access="multi"))
    assert a.get("v1") is not None  # durable and in the view before create returns
    for r in (b, c):
        rec = wait_for(lambda r=r: r.get("v1"), what="the volume on another node")
        assert rec.key == "k-v1" and dict(rec.options) == {"access": "multi"}
    assert b.generation > before  # so List caches built on b's view are rebuilt


def test_names_with_slashes_and_unicode_round_trip(open_node: Open) -> None:
    a, b = open_node("a"), open_node("b")
    name = "team/a b/../ünï"
    a.create(vol(name))
    a.set_mount(name, MountRecord("m1", 1, "/mnt/x"))
    assert wait_for(lambda: b.get(name), what="the odd name on b").name == name
    assert wait_for(lambda: b.nodes_using(name), what="a's mount seen by b") == ["a"]


def test_concurrent_create_from_all_nodes_ends_with_one_volume(open_node: Open) -> None:
    nodes = [open_node(n) for n in ("a", "b", "c")]
    won: list[str] = []
    lost: list[str] = []
    start = threading.Barrier(len(nodes) * 3)

    def race(r: EtcdRegistry, i: int) -> None:
        start.wait()
        try:
            r.create(vol("race", attempt=f"{r.node}{i}"))
            won.append(f"{r.node}{i}")
        except Conflict as c:
            lost.append(c.existing.options["attempt"])

    threads = [threading.Thread(target=race, args=(r, i)) for r in nodes for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert lost == [won[0]] * 8  # every loser was told who won
    for r in nodes:
        rec = wait_for(lambda r=r: r.get("race"), what="the winner on every node")
        assert rec.options["attempt"] == won[0]


def test_mounts_are_per_node_and_block_removal_elsewhere(open_node: Open) -> None:
    a, b = open_node("a"), open_node("b")
    a.create(vol("used"))
    wait_for(lambda: b.get("used"), what="volume on b")
    a.set_mount("used", MountRecord("id1", 1, "/shared/used"))
    assert b.get("used").mounts == {}  # b's reference counts only see b's mounts
    assert wait_for(lambda: b.nodes_using("used")) == ["a"]
    assert b.status("used")["nodes"] == ["a"]
    with pytest.raises(DriverError, match="in use on node\\(s\\) a"):
        b.before_remove("used")
    a.delete_mount("used", "id1")
    wait_for(lambda: not b.nodes_using("used"), what="a's mount gone on b")
    b.before_remove("used")
    b.delete("used")
    wait_for(lambda: a.get("used") is None, what="removal seen by a")


def test_single_node_is_refused_elsewhere_while_held(open_node: Open) -> None:
    a, b = open_node("a", access="single-node"), open_node("b", access="single-node")
    a.create(vol("db"))
    wait_for(lambda: b.get("db"), what="volume on b")
    a.acquire("db")
    a.set_mount("db", MountRecord("id1", 1, "/shared/db"))
    with pytest.raises(DriverError, match="single-node and in use on node 'a'"):
        b.acquire("db")
    assert wait_for(lambda: b.status("db").get("holder"))["node"] == "a"
    a.delete_mount("db", "id1")
    a.release("db")
    b.acquire("db")  # free now
    assert wait_for(lambda: (a.status("db").get("holder") or {}).get("node") == "b")


def test_multi_volumes_never_take_a_holder(open_node: Open) -> None:
    a, b = open_node("a"), open_node("b")
    a.create(vol("shared", access="multi"))
    wait_for(lambda: b.get("shared"), what="volume on b")
    a.acquire("shared")
    b.acquire("shared")
    assert "holder" not in a.status("shared")


def test_dead_holder_is_released_after_the_ttl(open_node: Open) -> None:
    a, b = open_node("a", access="single-node"), open_node("b", access="single-node")
    a.create(vol("fo"))
    wait_for(lambda: b.get("fo"), what="volume on b")
    a.acquire("fo")
    a.set_mount("fo", MountRecord("id1", 1, "/shared/fo"))
    a.close()  # still mounted: the lease is kept, as for a plugin that dies or restarts
    with pytest.raises(DriverError, match="in use on node 'a'"):
        b.acquire("fo")

    def takes_over() -> bool:
        try:
            b.acquire("fo")
            return True
        except DriverError:
            return False

    wait_for(takes_over, timeout=TTL + 10, what="b taking the volume after a's lease expired")
    # a's mount record rode on the same lease: the dead node no longer keeps the volume in use.
    assert wait_for(lambda: b.nodes_using("fo") == [], what="a's mount record expiring")


def test_restart_within_ttl_keeps_the_holder_and_local_mounts(open_node: Open) -> None:
    a = open_node("a", access="single-node")
    b = open_node("b", access="single-node")
    a.create(vol("keep"))
    a.acquire("keep")
    a.set_mount("keep", MountRecord("id1", 1, "/shared/keep"))
    a.close()
    a2 = open_node("a", access="single-node")  # same node, same state dir
    assert a2.get("keep").mounts["id1"].count == 1  # durable locally
    wait_for(
        lambda: (b.status("keep").get("holder") or {}).get("lease") == f"{a2.session.lease:x}",
        what="the holder moved to a's new lease",
    )
    with pytest.raises(DriverError, match="in use on node 'a'"):
        b.acquire("keep")
    assert wait_for(lambda: b.nodes_using("keep")) == ["a"]


def test_one_member_killed_operations_go_on(etcd: EtcdCluster, open_node: Open) -> None:
    a, b = open_node("a"), open_node("b")
    a.create(vol("before"))
    etcd.kill(0)  # the member every client tries first
    try:
        a.create(vol("during"))
        a.set_mount("during", MountRecord("id1", 1, "/shared/during"))
        assert wait_for(lambda: b.get("during"), what="create seen by b with a member down")
        assert wait_for(lambda: b.nodes_using("during")) == ["a"]
        b.before_remove("before")
        b.delete("before")
        wait_for(lambda: a.get("before") is None, what="remove seen by a with a member down")
    finally:
        etcd.restart(0)


def test_unreachable_etcd_fences_single_node_mounts_only(
    etcd: EtcdCluster, open_node: Open
) -> None:
    proxies = [CutProxy(e) for e in etcd.endpoints]
    try:
        a = open_node("a", [p.endpoint for p in proxies])
        b = open_node("b")
        a.create(vol("one", access="single-node"))
        a.create(vol("many", access="multi"))
        a.acquire("one")
        a.set_mount("one", MountRecord("id1", 1, "/shared/one"))
        for p in proxies:
            p.cut()
        wait_for(lambda: not a.session.connected(), what="a noticing etcd is gone")
        # Reads still answer from the local view; the running mount is untouched.
        assert a.get("one").mounts["id1"].count == 1
        assert a.get("many") is not None
        a.release("one")  # (as if its container stopped) must not raise
        with pytest.raises(DriverError, match=r"cannot reach etcd.*single-node volume 'one'"):
            a.acquire("one")
        a.acquire("many")  # multi volumes need no etcd to mount
        a.set_mount("many", MountRecord("id2", 1, "/shared/many"))
        assert a.get("many").mounts["id2"].count == 1
        with pytest.raises(DriverError, match="etcd is unreachable from node 'a'"):
            a.create(vol("new"))
        assert "cannot reach etcd" in a.status("one")["cluster"]
        for p in proxies:
            p.heal()
        wait_for(a.session.connected, what="a reconnecting")
        # The mount made while cut off is published once etcd is back.
        assert wait_for(lambda: b.nodes_using("many"), what="republished mount") == ["a"]
    finally:
        for p in proxies:
            p.close()


def test_local_mirror_answers_when_etcd_is_down_at_start(
    etcd: EtcdCluster, open_node: Open
) -> None:
    a = open_node("a")
    a.create(vol("cached", size="1G"))
    a.set_mount("cached", MountRecord("id1", 2, "/shared/cached"))
    a.close()
    dead = CutProxy(etcd.endpoints[0])
    dead.cut()
    try:
        t = time.monotonic()
        a2 = open_node("a", [dead.endpoint])
        assert time.monotonic() - t < 15
        rec = a2.get("cached")
        assert rec is not None and rec.options["size"] == "1G"
        assert rec.mounts["id1"].count == 2
    finally:
        dead.close()


def test_volume_removed_elsewhere_while_mounted_here_is_kept_until_released(
    open_node: Open,
) -> None:
    a, b = open_node("a"), open_node("b")
    a.create(vol("orphan"))
    a.set_mount("orphan", MountRecord("id1", 1, "/shared/orphan"))
    wait_for(lambda: b.get("orphan"), what="volume on b")
    b.delete("orphan")  # (bypassing before_remove, as a partitioned node could)
    wait_for(lambda: "orphan" in a._orphans, what="a hearing of the removal")
    assert a.get("orphan").mounts["id1"].count == 1  # the running container keeps its record
    a.delete_mount("orphan", "id1")
    a.release("orphan")
    assert a.get("orphan") is None


def test_tls_with_client_certificates(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    secure = EtcdCluster.start(1, pki=pki)
    regs: list[EtcdRegistry] = []
    try:
        assert secure.url.startswith("etcds://")
        for node in ("a", "b"):
            r = open_registry(secure.url, node, tmp_path / node, TTL)
            assert isinstance(r, EtcdRegistry)
            regs.append(r)
        regs[0].create(vol("secret-transport"))
        assert wait_for(lambda: regs[1].get("secret-transport"), what="create seen over TLS")
        # Without a client certificate etcd refuses the connection: nothing is readable.
        anon = open_registry(
            "etcds://" + secure.endpoints[0] + f"/dockvol?ca={pki}/ca.pem", "c", tmp_path / "c", TTL
        )
        regs.append(anon)  # type: ignore[arg-type]
        assert anon.get("secret-transport") is None
        with pytest.raises(DriverError, match="etcd is unreachable"):
            anon.create(vol("nope"))
    finally:
        for r in regs:
            r.close()
        secure.stop()


def test_create_whose_reply_was_lost_and_retried_succeeds(open_node: Open) -> None:
    a = open_node("a")
    real = a.client.call
    lost: list[str] = []

    def reply_lost_once(path: str, body: dict[str, Any], deadline: float | None = None) -> Any:
        if path == "/v3/kv/txn" and not lost:
            real(path, body, deadline)  # etcd applies it; the reply never reaches us
            lost.append(path)
        return real(path, body, deadline)  # the retry, on the same or another member

    a.client.call = reply_lost_once  # type: ignore[method-assign]
    rec = vol("lost-reply")
    a.create(rec)  # no Conflict with itself
    assert lost and a.get("lost-reply") is not None
    with pytest.raises(Conflict):
        a.create(vol("lost-reply"))  # a real second create still conflicts


def test_silent_partition_fences_by_timeout_and_never_hangs_mounts(
    etcd: EtcdCluster, open_node: Open
) -> None:
    proxies = [CutProxy(e) for e in etcd.endpoints]
    try:
        a = open_node("a", [p.endpoint for p in proxies])
        a.create(vol("quiet-one", access="single-node"))
        a.create(vol("quiet-many", access="multi"))
        for p in proxies:
            p.blackhole()
        t = time.monotonic()
        with pytest.raises(DriverError, match="cannot reach etcd"):
            a.acquire("quiet-one")
        assert time.monotonic() - t < 10  # a deadline, not a hang (the engine waits 2 min)
        t = time.monotonic()
        a.acquire("quiet-many")
        a.set_mount("quiet-many", MountRecord("id1", 1, "/shared/quiet-many"))
        a.delete_mount("quiet-many", "id1")
        a.release("quiet-many")
        assert time.monotonic() - t < 5  # multi mounts only try to publish, briefly
        wait_for(lambda: not a.session.connected(), what="a noticing the silence")
        for p in proxies:
            p.heal()
        wait_for(a.session.connected, timeout=20, what="a reconnecting after the silence")
        a.acquire("quiet-one")
    finally:
        for p in proxies:
            p.close()


def test_a_reconcile_between_acquire_and_first_mount_record_keeps_the_hold(
    open_node: Open,
) -> None:
    a, b = open_node("a", access="single-node"), open_node("b", access="single-node")
    a.create(vol("mounting"))
    wait_for(lambda: b.get("mounting"), what="volume on b")
    a.acquire("mounting")  # the driver is mounting: no mount record yet
    a._dirty.set()
    a.session.kick()
    wait_for(lambda: not a._dirty.is_set(), what="a reconcile round on a")
    with pytest.raises(DriverError, match="in use on node 'a'"):
        b.acquire("mounting")


def test_concurrent_single_node_acquires_from_all_nodes_have_one_winner(open_node: Open) -> None:
    nodes = [open_node(n, access="single-node") for n in ("a", "b", "c")]
    nodes[0].create(vol("contended"))
    for r in nodes:
        wait_for(lambda r=r: r.get("contended"), what=f"volume on {r.node}")
    start = threading.Barrier(len(nodes))
    won: list[str] = []
    refused: list[str] = []

    def take(r: EtcdRegistry) -> None:
        start.wait()
        try:
            r.acquire("contended")
            won.append(r.node)
        except DriverError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=take, args=(r,)) for r in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert len(refused) == 2 and all(f"in use on node '{won[0]}'" in m for m in refused)
