"""Wheels made from the host's installed packages, and rootfs flattening of ``docker save``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from dockvol._packaging import rootfs, wheels


def test_wheels_of_the_installed_closure_install_and_import_offline(tmp_path: Path) -> None:
    made = wheels.pack_installed(tmp_path / "wheels")
    names = {p.name.split("-")[0] for p in made}
    assert {"dockvol", "msgspec"} <= names
    site = tmp_path / "site"
    for wheel in made:
        with zipfile.ZipFile(wheel) as zf:
            assert zf.testzip() is None
            zf.extractall(site)
    # -I: ignore the host's site-packages and the editable install.
    code = (
        f"import sys; sys.path.insert(0, {str(site)!r}); import dockvol, dockvol._cli.main, "
        "dockvol._transport.server, msgspec; print(dockvol.__file__)"
    )
    r = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(str(site))
    # The image build needs the Dockerfile and installer shipped in the wheel.
    assert (site / "dockvol" / "_packaging" / "Dockerfile").exists()


def test_same_install_gives_byte_identical_wheels(tmp_path: Path) -> None:
    a = wheels.pack_installed(tmp_path / "a")
    b = wheels.pack_installed(tmp_path / "b")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def _layer(files: dict[str, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_flatten_applies_layers_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    lower = _layer(
        {
            "etc": None,
            "etc/keep": b"1",
            "etc/gone": b"2",
            "tmp": None,
            "tmp/build": None,
            "tmp/build/x": b"3",
            "opq": None,
            "opq/old": b"4",
        }
    )
    upper = _layer(
        {
            "etc/.wh.gone": b"",
            "etc/new": b"5",
            "tmp/.wh.build": b"",
            "opq/.wh..wh..opq": b"",
            "opq/fresh": b"6",
        }
    )
    saved = tmp_path / "image.tar"
    with tarfile.open(saved, "w") as tf:
        for name, data in (
            ("l1/layer.tar", lower),
            ("l2/layer.tar", upper),
            ("manifest.json", json.dumps([{"Layers": ["l1/layer.tar", "l2/layer.tar"]}]).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    out = tmp_path / "rootfs"
    rootfs.flatten(saved, out)
    found = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert found == ["etc/keep", "etc/new", "opq/fresh"]
    assert not (out / "tmp" / "build").exists()


def test_each_wheel_has_one_dist_info_with_metadata_wheel_and_record(tmp_path: Path) -> None:
    for wheel in wheels.pack_installed(tmp_path):
        with zipfile.ZipFile(wheel) as zf:
            infos = {n.split("/")[0] for n in zf.namelist() if ".dist-info/" in n}
            assert len(infos) == 1, (wheel.name, infos)
            info = infos.pop()
            for part in ("METADATA", "WHEEL", "RECORD"):
                assert f"{info}/{part}" in zf.namelist(), (wheel.name, part)


def test_other_targets_fetch_binary_wheels_for_that_python_and_machine(tmp_path: Path) -> None:
    cmd = wheels.fetch_command(tmp_path, "3.12", wheels.manylinux_platforms("aarch64"), ["x>=1"])
    assert cmd[1:4] == ["-m", "pip", "download"]
    assert "--only-binary=:all:" in cmd and cmd[-1] == "x>=1"
    assert cmd[cmd.index("--python-version") + 1] == "3.12"
    platforms = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--platform"]
    assert "manylinux2014_aarch64" in platforms and "manylinux_2_17_aarch64" in platforms
