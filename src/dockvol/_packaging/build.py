"""``dockvol plugin build`` and ``push``: rootfs from the shipped Dockerfile, config.json from the
driver's needs, then ``docker plugin create``."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from dockvol._sdk.driver import Driver

from . import custom, rootfs, wheels
from .config import plugin_config
from .docker import Docker, StepError

#: Repository of the rootfs images: kept as the build cache (docker rmi frees them).
ROOTFS_REPO = "dockvol-plugin-rootfs"

_MACHINES = {
    "amd64": "x86_64",
    "arm64": "aarch64",
    "arm64/v8": "aarch64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}


def host_python() -> str:
    return "{}.{}".format(*sys.version_info[:2])


def default_base_image(python: str | None = None) -> str:
    """An official Python image with the target's (by default the host's) Python, so the
    wheels fit it."""
    return f"python:{python or host_python()}-slim"


def load_driver(name: str) -> type[Driver]:
    """The Driver subclass of ``dockvol.drivers.<name>``, or of ``module:Class`` found as
    ``dockvol serve --driver`` finds it (the current directory first)."""
    if custom.is_custom(name):
        from dockvol._cli.serve import Refused
        from dockvol._cli.serve import load_driver as load_custom

        try:
            found: type[Driver] = load_custom(name)
        except Refused as e:
            raise StepError(
                "choosing the driver",
                str(e),
                "build from the directory that has the driver's module, as you would serve it",
            ) from None
        return found
    try:
        module = importlib.import_module(f"dockvol.drivers.{name}")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("dockvol.drivers"):
            raise StepError(
                "choosing the driver",
                f"no driver named {name!r}",
                "use a shipped driver (--driver local, block or shared) or your own class "
                "(--driver module:Class, from the directory that has the module)",
            ) from None
        raise
    cls = getattr(module, "DRIVER", None)
    if not (inspect.isclass(cls) and issubclass(cls, Driver)):
        raise StepError(
            "choosing the driver",
            f"dockvol.drivers.{name} has no DRIVER (a Driver subclass)",
            "a driver module names its class in DRIVER = MyDriver",
        )
    return cls


@dataclass
class BuildOptions:
    name: str
    driver: str = "local"
    base_image: str | None = None
    platform: str | None = None
    python_version: str | None = None
    apt_packages: list[str] = field(default_factory=list)
    log_level: str = "info"
    #: A CSI plugin (Swarm cluster volumes) instead of a Docker volume plugin.
    csi: bool = False


@dataclass
class BuildResult:
    name: str
    config: dict[str, object]
    rootfs_bytes: int
    seconds: float
    image: str

    def summary(self) -> str:
        return (
            f"built plugin {self.name}: driver {self.config_driver}, rootfs "
            f"{self.rootfs_bytes / 1e6:.0f} MB, in {self.seconds:.1f} s; next: "
            f"docker plugin enable {self.name} (build cache: image {self.image})"
        )

    @property
    def config_driver(self) -> str:
        env = self.config.get("env")
        assert isinstance(env, list)
        return str(next(e["value"] for e in env if e["name"] == "DOCKVOL_DRIVER"))


def _target_machine(plat: str | None) -> str:
    if not plat:
        return platform.machine()
    arch = plat.split("/", 1)[1] if "/" in plat else plat
    return _MACHINES.get(arch, arch)


def _du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def _prepare_context(ctx: Path, opts: BuildOptions) -> None:
    pkg = resources.files("dockvol._packaging")
    for name in ("Dockerfile", "install_wheels.py"):
        (ctx / name).write_bytes(pkg.joinpath(name).read_bytes())
    machine = _target_machine(opts.platform)
    python = opts.python_version or host_python()
    if custom.is_custom(opts.driver):
        custom.add_to_context(ctx, opts.driver)
    extras = ("csi",) if opts.csi else ()  # gRPC for the CSI front end
    if machine == platform.machine() and python == host_python():
        wheels.pack_installed(ctx / "wheels", extras=extras)
    else:
        wheels.fetch_wheels(ctx / "wheels", python, machine, extras)


def _context_key(ctx: Path, base_id: str, opts: BuildOptions) -> str:
    """Names the rootfs image: the same inputs give the same image, so a rebuild reuses it."""
    h = hashlib.sha256()
    for part in (base_id, opts.platform or "", " ".join(opts.apt_packages)):
        h.update(part.encode() + b"\0")
    for path in sorted(p for p in ctx.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(ctx)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def build(opts: BuildOptions, docker: Docker) -> BuildResult:
    start = time.monotonic()

    def say(line: str) -> None:
        docker.progress(f"{line} (at {time.monotonic() - start:.1f} s)")

    driver_cls = load_driver(opts.driver)
    base = opts.base_image or default_base_image(opts.python_version)
    exists = subprocess.run(docker.argv("plugin", "inspect", opts.name), capture_output=True)
    if exists.returncode == 0:
        raise StepError(
            "checking the name",
            f"plugin {opts.name} already exists in this engine",
            f"remove it (docker plugin disable {opts.name}; docker plugin rm {opts.name}) or "
            "build under a new tag and switch with docker plugin upgrade",
        )
    work = Path(tempfile.mkdtemp(prefix="dockvol-plugin-"))
    try:
        say(f"[1/5] packing dockvol and its requirements as wheels (driver {opts.driver})")
        ctx = work / "context"
        ctx.mkdir()
        try:
            _prepare_context(ctx, opts)
        except RuntimeError as e:
            raise StepError(
                "packing wheels", str(e), "install dockvol with its requirements in this Python"
            ) from None

        base_id = subprocess.run(
            docker.argv("image", "inspect", "--format", "{{.Id}}", base),
            capture_output=True,
            text=True,
        ).stdout.strip()
        image = f"{ROOTFS_REPO}:{_context_key(ctx, base_id or base, opts)}"
        cached = (
            bool(base_id)
            and subprocess.run(
                docker.argv("image", "inspect", image), capture_output=True
            ).returncode
            == 0
        )
        if cached:
            say(f"[2/5] reusing the rootfs image {image} (same base, wheels and options)")
        else:
            say(f"[2/5] building the rootfs image {image} from {base}")
            args = ["build", "--pull=false", "--build-arg", f"BASE_IMAGE={base}", "-t", image]
            if opts.platform:
                args += ["--platform", opts.platform]
            if opts.apt_packages:
                args += [
                    "--network",
                    "host",
                    "--build-arg",
                    f"APT_PACKAGES={' '.join(opts.apt_packages)}",
                ]
            docker.stream(
                "building the rootfs image",
                *args,
                str(ctx),
                show=lambda line: line.startswith(("Step ", "installing", "dockvol does")),
                hint=f"check that the engine has {base} (docker images) and that it runs "
                f"python3 {opts.python_version or host_python()}; or pass --base-image",
                env={"DOCKER_BUILDKIT": "0"},
            )

        say("[3/5] unpacking the rootfs")
        saved = work / "image.tar"
        docker.run(
            "unpacking the rootfs",
            "save",
            "-o",
            str(saved),
            image,
            hint=f"check free space under {tempfile.gettempdir()}",
        )
        plugin_dir = work / "plugin"
        try:
            rootfs.flatten(saved, plugin_dir / "rootfs")
        except (RuntimeError, OSError, KeyError, tarfile.TarError) as e:
            raise StepError(
                "unpacking the rootfs", str(e), f"check free space under {tempfile.gettempdir()}"
            ) from None
        saved.unlink()
        size = _du(plugin_dir / "rootfs")

        say("[4/5] writing config.json")
        config = plugin_config(
            opts.name, opts.driver, driver_cls, log_level=opts.log_level, csi=opts.csi
        )
        (plugin_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")

        say(f"[5/5] docker plugin create {opts.name}")
        docker.run("docker plugin create", "plugin", "create", opts.name, str(plugin_dir))
        return BuildResult(opts.name, config, size, time.monotonic() - start, image)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def push(name: str, docker: Docker) -> str:
    """``docker plugin push`` with progress; returns the one-line summary."""
    start = time.monotonic()
    docker.progress(f"pushing plugin {name}")
    seen: set[str] = set()

    def show(line: str) -> bool:
        # The engine repeats layer states; show each once, and only the ones that move.
        new = line not in seen
        seen.add(line)
        return new and not line.endswith(("Waiting", "Preparing"))

    lines = docker.stream(
        "docker plugin push",
        "plugin",
        "push",
        name,
        show=show,
        hint="build the plugin first (dockvol plugin build NAME), and name it after the "
        "registry: REGISTRY/REPO:TAG",
    )
    digest = next((w for line in lines for w in line.split() if w.startswith("sha256:")), "")
    return (
        f"pushed plugin {name}{' (' + digest + ')' if digest else ''} in "
        f"{time.monotonic() - start:.1f} s; install it with: docker plugin install {name}"
    )
