"""The README's compose example through a real engine, with Debian's docker-compose (1.29).

The compose file is the README's own block, written out verbatim, so the two cannot drift. A
second compose file (compose merges it over the first) changes only what this machine lacks:
the image (no registry here: the local busybox, which has no default command, so one is given)
and the network (the private engines run without a bridge).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.docs.blocks import REPO, blocks, load_yaml
from tests.support.engine import BUSYBOX_IMAGE, Engine
from tests.support.plugin import Plugin

from ._util import inspect, run_once, volume_names, wait_until

pytestmark = pytest.mark.engine

TARGET = "/var/lib/postgresql/data"  # where the README's service mounts the volume


def readme_compose_file() -> str:
    found = [
        b.text
        for b in blocks(REPO / "README.md")
        if b.lang in ("yaml", "yml") and "driver: dockvol" in b.text
    ]
    assert len(found) == 1, (
        f"expected one compose block with `driver: dockvol` in README.md: {found}"
    )
    return found[0]


def compose(engine: Engine, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose not found: ./dev installs Debian's docker-compose"
    r = subprocess.run(
        [exe, "-p", project.name, "-f", "readme.yml", "-f", "here.yml", *args],
        cwd=project, capture_output=True, text=True, timeout=180,
        env={**os.environ, "DOCKER_HOST": f"unix://{engine.sock}"},
    )  # fmt: skip
    assert r.returncode == 0, f"docker-compose {' '.join(args)} failed:\n{r.stderr}{r.stdout}"
    return r


def test_readme_compose_file_creates_uses_and_removes_a_dockvol_volume(
    engine: Engine, plugin: Plugin, tmp_path: Path
) -> None:
    readme = readme_compose_file()
    doc = load_yaml(readme)
    assert isinstance(doc, dict), doc
    [service] = doc["services"]  # "db" in today's README
    [volume] = doc["volumes"]  # "pgdata"
    project = tmp_path / f"dvc{engine.release.replace('.', '')}"
    project.mkdir()
    (project / "readme.yml").write_text(readme)
    (project / "here.yml").write_text(
        f"services:\n  {service}:\n    image: {BUSYBOX_IMAGE}\n    network_mode: none\n"
        f'    command: ["sh", "-c", "echo written-by-compose > {TARGET}/greeting && sleep 600"]\n'
    )
    name = f"{project.name}_{volume}"  # compose prefixes volumes with the project name
    try:
        compose(engine, project, "up", "-d")

        info = inspect(engine, name)
        assert info["Driver"] == "dockvol"
        assert info["Status"]["options"] == {"uid": "999", "gid": "999", "mode": "0700"}
        assert name in volume_names(engine)
        code, reply = plugin.call("VolumeDriver.Get", {"Name": name})
        assert code == 200 and reply["Volume"]["Name"] == name, reply

        # The service wrote through the plugin's volume; another container reads it there.
        read = "cat /d/greeting 2>/dev/null; stat -c '%u %g %a' /d"
        out = wait_until(
            "the compose service's write",
            lambda: (o := run_once(engine, name, read, target="/d")).startswith("written") and o,
        )
        assert out.split("\n", 1) == ["written-by-compose", "999 999 700\n"]

        compose(engine, project, "down", "-v")
        assert name not in volume_names(engine)
        code, reply = plugin.call("VolumeDriver.Get", {"Name": name})
        assert "Err" in reply, reply  # removed from the plugin, not only forgotten by the engine
        ps = engine.docker(
            "ps", "-aq", "--filter", f"label=com.docker.compose.project={project.name}"
        )
        assert ps.stdout.split() == []
    finally:
        subprocess.run(
            [shutil.which("docker-compose") or "docker-compose", "-p", project.name,
             "-f", "readme.yml", "-f", "here.yml", "down", "-v"],
            cwd=project, capture_output=True, timeout=180,
            env={**os.environ, "DOCKER_HOST": f"unix://{engine.sock}"},
        )  # fmt: skip
