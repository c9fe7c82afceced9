"""``dockvol volume resize`` against a block plugin served in process (no engine)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockvol._cli.main import main
from dockvol.drivers.block import BlockDriver
from dockvol.testing.inprocess import InProcessPlugin

from .conftest import BASE_PREFIX, cleanup_under


@pytest.fixture
def served() -> Iterator[InProcessPlugin]:
    base = Path(tempfile.mkdtemp(prefix=Path(BASE_PREFIX).name, dir="/tmp"))
    plugin = InProcessPlugin(BlockDriver, base).start()
    try:
        yield plugin
    finally:
        plugin.stop()
        cleanup_under(base)
        shutil.rmtree(base, ignore_errors=True)


def resize(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["volume", "resize", *args])
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_resize_grows_and_says_so(
    served: InProcessPlugin, capsys: pytest.CaptureFixture[str]
) -> None:
    r = served.client.call("VolumeDriver.Create", {"Name": "v", "Opts": {"size": "64M"}})
    assert r.status == 200 and not r.err
    code, out, err = resize(capsys, "--socket", str(served.sock), "v", "128M")
    assert (code, err) == (0, "")
    assert out == "volume 'v' resized to 128M (134217728 bytes)\n"
    status = served.client.call("VolumeDriver.Get", {"Name": "v"})
    assert status.json["Volume"]["Status"]["size"] == 128 << 20
    served.client.call("VolumeDriver.Remove", {"Name": "v"})


def test_errors_are_one_clear_line(
    served: InProcessPlugin, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = resize(capsys, "--socket", str(served.sock), "missing", "1G")
    assert code == 1 and err.startswith("dockvol volume resize: ") and "not found" in err
    code, _, err = resize(capsys, "--socket", str(served.sock), "v", "10X")
    assert code == 2 and "is not a size" in err
    code, _, err = resize(capsys, "--socket", "/nonexistent/p.sock", "v", "1G")
    assert code == 1 and "cannot reach the plugin at /nonexistent/p.sock" in err
    assert "Traceback" not in err
