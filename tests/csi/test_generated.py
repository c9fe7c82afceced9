"""The checked-in CSI modules are exactly what ``python -m dockvol._csi.generate`` makes."""

from __future__ import annotations

from pathlib import Path

from dockvol._csi import generate


def test_checked_in_modules_are_current(tmp_path: Path) -> None:
    made = generate.generate(tmp_path)
    stale = [
        name
        for name in generate.OUTPUTS
        if (made / name).read_bytes() != (generate.here() / name).read_bytes()
    ]
    assert not stale, (
        f"{', '.join(stale)} differ from csi.proto: run `{generate.COMMAND}` and commit the result"
    )


def test_services_are_the_spec_names() -> None:
    from dockvol._csi import csi_pb2

    services = {
        s.full_name: sorted(s.methods_by_name) for s in csi_pb2.DESCRIPTOR.services_by_name.values()
    }
    assert set(services) == {"csi.v1.Identity", "csi.v1.Controller", "csi.v1.Node"}
    assert "CreateVolume" in services["csi.v1.Controller"]
    assert "NodeStageVolume" in services["csi.v1.Node"]
