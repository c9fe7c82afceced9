"""No two writers: a node cut off from etcd fences its block volumes before another node can take
them, through two real private engines and a real 3-member etcd.

Node a reaches etcd only through :class:`CutProxy` (one per member), so the test cuts a off etcd
while its engine, its plugin and its container keep running. The container on a writes numbered,
timestamped lines to a single-node block volume, ``sync`` after each. Every timestamp is the
host's ``/proc/uptime`` (one clock for the test, both engines and their containers). Then:

* a's writer gets an error (the fence) before b's first container starts on the volume;
* b sees every line a's writer had made durable before the error, the filesystem needs no repair
  (the block driver checks it at attach), and no write a tries after b took over ever reaches b.
"""

from __future__ import annotations

import os
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dockvol._service.names import volume_key
from dockvol.drivers.block import fscrypt, loop
from tests.cluster.nodes import block_root, lines, start_all
from tests.support.engine import BUSYBOX_IMAGE, Engine
from tests.support.plugin import Plugin, call
from tests.support.ports import free_port

from .conftest import wait_for
from .etcd import CutProxy, EtcdCluster

pytestmark = pytest.mark.engine

DRIVER = "block"
TTL = 3.0
PASSPHRASE = "correct horse battery staple, fenced"

#: Appends "<uptime> <n>" and syncs, every 50 ms, until a write fails; then says when.
WRITER = (
    "i=0; "
    'while read up _ < /proc/uptime && echo "$up $i" >> /d/log && busybox sync; '
    "do i=$((i+1)); busybox usleep 50000; done; "
    'read up _ < /proc/uptime; echo "FAILED $up $((i-1))"; exec sleep 600'
)


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


@dataclass
class Node:
    name: str
    engine: Engine
    plugin: Plugin
    prefix: str
    proxies: list[CutProxy] = field(default_factory=list)
    metrics: str = ""  # host:port of its /metrics

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise AssertionError(f"no metric {name}")

    def docker(self, *args: str) -> tuple[bool, str]:
        r = self.engine.docker(*args, check=False)
        return r.returncode == 0, (r.stdout if r.returncode == 0 else r.stderr).strip()


def _start(name: str, etcd: EtcdCluster, root: Path, prefix: str, cuttable: bool) -> Node:
    proxies = [CutProxy(e) for e in etcd.endpoints] if cuttable else []
    url = "etcd://" + ",".join(p.endpoint for p in proxies) if proxies else etcd.url
    metrics = f"127.0.0.1:{free_port()}"
    engine = Engine.start()
    try:
        engine.ensure_busybox()
        secrets = engine.dir / "secrets"
        secrets.mkdir(mode=0o700, exist_ok=True)
        (secrets / "key").write_text(PASSPHRASE)
        plugin = Plugin.start(
            engine.plugins_dir / f"{DRIVER}.sock", root, engine.dir / "dvstate",
            "--driver", "block", "--registry", url + prefix, "--node", name,
            "--lease-ttl", str(TTL), "--secrets-dir", str(secrets), "--log-level", "debug",
            "--metrics", metrics,
            name=DRIVER, wrap=engine.enter_args(),
        )  # fmt: skip
    except BaseException:
        engine.stop()
        for p in proxies:
            p.close()
        raise
    return Node(name, engine, plugin, prefix, proxies, metrics)


@pytest.fixture(scope="module")
def shared_root() -> Iterator[Path]:
    yield from block_root("dvbf")


@pytest.fixture(scope="module")
def nodes(etcd: EtcdCluster, shared_root: Path) -> Iterator[dict[str, Node]]:
    prefix = "/bf" + uuid.uuid4().hex[:8]
    started, errors = start_all(lambda n: _start(n, etcd, shared_root, prefix, n == "a"), "ab")
    try:
        if errors:
            raise errors[0]
        yield started
    finally:
        for node in started.values():
            for p in node.proxies:
                p.heal()
        for node in started.values():
            for cid in node.docker("ps", "-aq")[1].split():
                node.docker("rm", "-f", cid)
        for node in started.values():
            for v in node.docker("volume", "ls", "-q")[1].split():
                node.docker("volume", "rm", v)
        for node in started.values():
            node.plugin.stop()
            node.engine.stop()
            for p in node.proxies:
                p.close()


def serves_single_node(n: Node) -> bool:
    """A fresh single-node volume mounts on ``n`` (its registry session has a valid lease)."""
    probe = "probe-" + uuid.uuid4().hex[:6]
    ok, out = n.docker("volume", "create", "-d", DRIVER, "-o", "size=16M", probe)
    assert ok, out
    try:
        ok, out = n.docker("run", "--rm", "-v", f"{probe}:/d", BUSYBOX_IMAGE, "true")
        assert ok or "cannot reach etcd" in out, out  # only the lease may be missing
        return ok
    finally:
        n.docker("volume", "rm", probe)


@pytest.mark.parametrize("kind", ["ext4", "encrypted"])
def test_a_cut_off_writer_is_fenced_before_the_volume_moves(
    nodes: dict[str, Node], shared_root: Path, kind: str
) -> None:
    a, b = nodes["a"], nodes["b"]
    # After an earlier cut was healed, a refuses single-node mounts until it holds a lease
    # again (it cannot prove otherwise that no other node holds them): start from there.
    wait_for(lambda: serves_single_node(a), timeout=30, what="node a holding a lease again")
    vol = f"f{kind[:3]}-" + uuid.uuid4().hex[:6]
    opts = ["-o", "size=32M"]
    if kind == "encrypted":
        opts += ["-o", "encrypt=true", "-o", "passphrase=secret:key"]
    ok, out = a.docker("volume", "create", "-d", DRIVER, *opts, vol)
    assert ok, out
    image = shared_root / "images" / f"{volume_key(vol)}.img"
    wait_for(lambda: vol in b.docker("volume", "ls", "-q")[1].split(), what="the volume on b")
    ok, cid = a.docker(
        "run", "-d", "--network", "none", "-v", f"{vol}:/d", BUSYBOX_IMAGE, "sh", "-c", WRITER
    )
    assert ok, cid
    wait_for(lambda: len(lines(a.docker("exec", cid, "cat", "/d/log")[1])) >= 5, what="writes")
    refused_ok, refused = b.docker("run", "--rm", "-v", f"{vol}:/d", BUSYBOX_IMAGE, "true")
    assert not refused_ok and "in use on node 'a'" in refused, refused
    # The container's view of the volume, held open as the container holds it: the key's
    # status stays readable through it after the fence.
    pid = a.docker("inspect", "-f", "{{.State.Pid}}", cid)[1]
    held = os.open(f"/proc/{pid}/root/d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        ident = None
        if kind == "encrypted":  # (a filesystem made without encryption cannot be asked)
            ident = fscrypt.policy_identifier(Path(f"/proc/{pid}/root/d"))
            assert ident is not None
            assert fscrypt.key_status_of(held, ident) == fscrypt.KEY_STATUS_PRESENT

        # -- the cut: a keeps running, only etcd is out of its reach ----------------------------
        cut_at = uptime()
        for p in a.proxies:
            p.cut()
        # b takes the hold as soon as etcd lets it (a's lease expired), when asked to mount: it
        # is asked again and again. The first attempt not refused for a's hold is the takeover;
        # its start time is a lower bound of the moment b took the hold (so the margin below is
        # never overstated). On this one test machine both "nodes" share a kernel: b's mount
        # reuses a's loop device, which holds a's shut-down filesystem until a's container lets
        # go, so b's containers may fail with EIO here; a real second host attaches the image
        # afresh (phase two does that).
        took_at = None
        while took_at is None and uptime() < cut_at + TTL + 20:
            asked_at = uptime()
            ok, out = b.docker("run", "--rm", "-v", f"{vol}:/d", BUSYBOX_IMAGE, "true")
            if ok or "in use on node 'a'" not in out:
                took_at = asked_at
        assert took_at is not None, "b never took the volume over\n" + b.plugin.output()[-3000:]
        failed = wait_for(
            lambda: next((x for x in a.docker("logs", cid)[1].splitlines() if "FAILED" in x), 0),
            timeout=5,
            what="a's writer reporting its error",
        )
        _, failed_at_s, last_s = str(failed).split()
        failed_at, last_good = float(failed_at_s), int(last_s)
        # The fenced writer got its error first, less than a TTL after the cut.
        assert cut_at < failed_at < took_at, (cut_at, failed_at, took_at)
        assert failed_at - cut_at < TTL, failed_at - cut_at
        if ident is not None:
            assert fscrypt.key_status_of(held, ident) != fscrypt.KEY_STATUS_PRESENT
    finally:
        os.close(held)

    # a's container writes again after the takeover: refused.
    late_ok, _ = a.docker("exec", cid, "sh", "-c", "echo late >> /d/log && busybox sync")
    assert not late_ok, "a write on the fenced node must fail"
    # a says so: fenced in its Status and log, and no new mount of it there.
    code, body = call(a.plugin.sock, "VolumeDriver.Get", {"Name": vol})
    assert code == 200 and "fenced" in body["Volume"]["Status"], body
    assert f"fenced single-node volume(s) {vol}" in a.plugin.output()
    assert a.metric("dockvol_fenced_volumes") >= 1

    # -- phase two: a's container goes (a is still cut off); its loop device is freed; b
    # attaches the image afresh, as a second host would, and reads what a had made durable.
    ok, out = a.docker("rm", "-f", cid)
    assert ok, out
    wait_for(lambda: not loop.backing(image), timeout=30, what="a's loop device freed")
    ok, seen = b.docker("run", "--rm", "-v", f"{vol}:/d", BUSYBOX_IMAGE, "cat", "/d/log")
    assert ok, seen + b.plugin.output()[-2000:]
    got = lines(seen)
    assert sorted(got) == list(range(last_good + 1)), (last_good, sorted(got)[-5:])
    assert "late" not in seen and max(got.values()) < failed_at
    print(
        f"FENCE-TIMING {kind}: cut->writer error {failed_at - cut_at:.2f}s, "
        f"cut->takeover {took_at - cut_at:.2f}s, margin {took_at - failed_at:.2f}s (ttl {TTL})"
    )
    for p in a.proxies:
        p.heal()
    wait_for(lambda: b.docker("volume", "rm", vol)[0], timeout=30, what="the volume removed")
