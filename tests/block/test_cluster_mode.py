"""The block driver on a root shared by several hosts (``HostContext.shared_root``: a cluster registry).

Against the real kernel (root), no engine: mounts stay on the node, and start-up recovery never
touches what another node may own (its create in progress, its attached image).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from dockvol import DriverError, HostContext
from dockvol._sdk.options import parse_options
from dockvol.drivers.block import BlockDriver, loop, mounttable
from dockvol.drivers.block.driver import NEW_FILE_GRACE

from .conftest import Holder, MakeVolume


def cluster_driver(root: Path) -> BlockDriver:
    root.mkdir(exist_ok=True)
    d = BlockDriver(root, shared_root_context(root))
    d.setup()
    return d


def shared_root_context(root: Path) -> HostContext:
    return HostContext(
        plugin="blk", node="a", local_dir=root.parent / "node-state", shared_root=True
    )


def test_access_defaults_to_single_node_and_multi_is_refused() -> None:
    assert parse_options(BlockDriver.options, {})["access"] == "single-node"
    with pytest.raises(ValueError, match=r"single-node only.*corrupted"):
        parse_options(BlockDriver.options, {"access": "multi"})


def test_a_missing_shared_root_is_refused_not_created(root: Path) -> None:
    d = BlockDriver(root, shared_root_context(root))
    with pytest.raises(DriverError, match="does not exist: mount the shared filesystem"):
        d.setup()
    assert not root.exists()


def test_mounts_are_on_the_node_not_on_the_shared_root(root: Path, make_volume: MakeVolume) -> None:
    d = cluster_driver(root)
    vol = make_volume("v", size="16M")
    d.create(vol)
    served = d.mount(vol)
    try:
        assert served == root.parent / "node-state" / "mounts" / vol.key
        assert mounttable.mounted_at(served) is not None
        assert not (root / "mounts").exists()
    finally:
        d.unmount(vol)
    d.remove(vol)
    assert not d.image_path(vol).exists()


def test_audit_keeps_a_young_new_image_and_deletes_an_old_one(
    root: Path, make_volume: MakeVolume
) -> None:
    d = cluster_driver(root)
    new = d.images / "other-node-creating.img.new"
    new.write_bytes(b"")
    assert d.audit([]) == []
    assert new.exists(), "another node's create in progress must not be deleted"
    old = time.time() - NEW_FILE_GRACE - 60
    os.utime(new, (old, old))
    d.audit([])
    assert not new.exists()


def test_recover_never_creates_a_missing_image(root: Path, make_volume: MakeVolume) -> None:
    d = cluster_driver(root)
    vol = make_volume("elsewhere", size="16M")
    assert d.recover(vol, None) is None
    assert not d.image_path(vol).exists(), "another node may be creating it"


def test_a_device_another_node_mounted_is_left_alone(
    root: Path, make_volume: MakeVolume, namespace_holder: Holder
) -> None:
    first = cluster_driver(root)
    vol = make_volume("held", size="16M")
    first.create(vol)
    image = first.image_path(vol)
    # "Another node" on the same kernel: its device, mounted in its own namespace.
    other = namespace_holder()
    device = loop.attach(image)
    target = root.parent / "other-node-mnt"
    target.mkdir()
    nsenter = ["nsenter", "-t", str(other.pid), "-m", "--"]
    subprocess.run([*nsenter, "mount", device, str(target)], check=True)
    try:
        d = cluster_driver(root)  # a restart of this node: sweep, recover, audit
        assert d.recover(vol, None) is None
        assert d.audit([vol]) == []
        assert d.status(vol, None)["attached"] is False
        assert [lp.device for lp in loop.backing(image)] == [device]
    finally:
        subprocess.run([*nsenter, "umount", str(target)], check=True)
        loop.detach(device, image)
    first.remove(vol)


def test_reattach_at_start_needs_the_hold(root: Path, make_volume: MakeVolume) -> None:
    """Records say a container used it here, but a reboot lost the attachment: another node may
    have taken the volume meanwhile, so it is attached again only with the hold."""
    first = cluster_driver(root)
    vol = make_volume("rebooted", size="16M")
    first.create(vol)
    served = first.mountpoint(vol)
    d = cluster_driver(root)  # the node after a reboot: nothing attached

    def held_elsewhere(name: str) -> None:
        raise DriverError(f"volume {name!r} is single-node and in use on node 'b'")

    d.cluster_hold = held_elsewhere
    with pytest.raises(DriverError, match="in use on node 'b'"):
        d.recover(vol, served)
    assert loop.backing(d.image_path(vol)) == []

    asked: list[str] = []
    d.cluster_hold = asked.append
    assert d.recover(vol, served) == served
    assert asked == ["rebooted"] and mounttable.mounted_at(served) is not None
    # Already attached here (a plugin restart under running containers): no hold needed.
    asked.clear()
    assert d.recover(vol, served) == served and asked == []
    d.unmount(vol)
    d.remove(vol)
