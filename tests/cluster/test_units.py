"""Pure pieces of the cluster code: URLs, key layout, access modes (no etcd needed)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from dockvol import DriverError
from dockvol._cluster.access import access_of, access_option
from dockvol._cluster.client import EtcdURL, prefix_end
from dockvol._cluster.keys import MOUNTS, VOLUMES, Layout, decode_volume, encode_volume
from dockvol._cluster.registry import open_registry
from dockvol._registry.base import VolumeRecord
from dockvol._registry.sqlite import SqliteRegistry
from dockvol._sdk.options import parse_options


def test_etcd_url_endpoints_prefix_and_tls() -> None:
    u = EtcdURL.parse("etcd://10.0.0.1:2379,10.0.0.2:2379")
    assert u.endpoints == ("10.0.0.1:2379", "10.0.0.2:2379")
    assert (u.prefix, u.tls) == (None, False)  # the registry then uses /dockvol/<plugin name>
    t = EtcdURL.parse("etcds://h:1/team/vols?ca=/c.pem&cert=/x.pem&key=/k.pem")
    assert (t.prefix, t.tls, t.ca, t.cert, t.key) == (
        "/team/vols",
        True,
        "/c.pem",
        "/x.pem",
        "/k.pem",
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h:1", "not an etcd URL"),
        ("etcd://", "names no etcd endpoint"),
        ("etcd://host", "must be HOST:PORT"),
        ("etcd://h:1?tls=1", "unknown etcd URL parameter"),
    ],
)
def test_bad_etcd_urls_are_explained(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EtcdURL.parse(url)


def test_open_registry_refuses_bad_settings_clearly(tmp_path: Path) -> None:
    with pytest.raises(DriverError, match="--registry"):
        open_registry("etcd://nohostport", "n", tmp_path, 15)
    with pytest.raises(DriverError, match="--node"):
        open_registry("etcd://h:1", "a/b", tmp_path, 15)
    with pytest.raises(DriverError, match="--lease-ttl"):
        open_registry("etcd://h:1", "n", tmp_path, 0)
    assert isinstance(open_registry("sqlite:", "n", tmp_path, 15), SqliteRegistry)


def test_keys_split_back_for_names_with_slashes() -> None:
    lay = Layout("/dockvol")
    key = lay.mount("a/b c/ü", "node/1", "id")
    assert key.startswith(lay.mounts_of("a/b c/ü"))
    assert lay.parse(key) == (MOUNTS, ["a/b c/ü", "node/1", "id"])
    assert lay.parse(lay.volume("x/../y")) == (VOLUMES, ["x/../y"])
    assert lay.parse(b"/other/volumes/x") is None
    # A volume's mount prefix never covers another volume whose name extends it.
    assert not lay.mount("ab", "n", "i").startswith(lay.mounts_of("a"))


def test_volume_records_round_trip() -> None:
    rec = VolumeRecord("v", "v-1", {"access": "single-node"}, datetime(2026, 1, 2, tzinfo=UTC))
    assert decode_volume(encode_volume(rec)) == rec


def test_prefix_end() -> None:
    assert prefix_end(b"/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"


def test_access_option_and_default() -> None:
    schema = {"access": access_option("single-node")}
    assert parse_options(schema, {})["access"] == "single-node"
    with pytest.raises(ValueError, match="choose one of: multi, single-node"):
        parse_options(schema, {"access": "many"})
    assert access_of({}, "single-node") == "single-node"
    assert access_of({"access": "multi"}, "single-node") == "multi"
