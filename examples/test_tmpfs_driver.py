"""The example driver's own test: its volumes are size-limited, mounted once, unmounted last."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tmpfs_driver import TmpfsDriver

import dockvol

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting tmpfs needs root")


def test_a_tmpfs_volume_is_size_limited_and_refcounted(tmp_path: Path) -> None:
    app = dockvol.create_app(TmpfsDriver(tmp_path / "root"), state_dir=tmp_path / "state")
    service = app.service
    service.driver.setup()
    service.reconcile()

    async def scenario() -> None:
        await service.create("scratch", {"size": "1M"})
        path = Path(await service.mount("scratch", "a" * 64))
        assert path.is_mount()
        assert await service.mount("scratch", "b" * 64) == str(path)
        with pytest.raises(OSError, match="No space left"):
            (path / "big").write_bytes(b"x" * (2 << 20))
        await service.unmount("scratch", "a" * 64)
        assert path.is_mount()  # b still uses it
        await service.unmount("scratch", "b" * 64)
        assert not path.is_mount()
        await service.remove("scratch")

    asyncio.run(scenario())
    service.close()
