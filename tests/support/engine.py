"""Private Docker engines for tests (see ../shared/ENGINE.md).

Each engine runs in its own mount namespace with its own /run/docker/plugins (bound from
``<dir>/plugins``) and, optionally, its own /etc/docker/plugins (``<dir>/specs``), data root, exec
root, API socket and containerd namespace, so it sees only the plugins a test puts there and never
touches the host's daemon. Engines that cannot start raise: tests must fail, not skip.

Engines: Debian 12's 20.10 (the default, installed by ``./dev``) and Debian 13's 26.1.5,
unpacked by ``./dev`` into ``$DOCKVOL_ENGINE26`` (default /var/cache/dockvol/engine26) and run with
Debian 12's runc first in PATH; and, for Swarm cluster volumes only (engines 26.0 to 28.1 cannot
address managed CSI plugins, moby/moby#49961), Debian sid's (28.5.2 when written), unpacked the
same way into ``$DOCKVOL_ENGINE_SID`` (default /var/cache/dockvol/engine-sid). Each is driven by
its own CLI.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

BUSYBOX_IMAGE = "busybox:local"
_BUSYBOX_LINKS = (
    "sh",
    "cat",
    "echo",
    "ls",
    "sleep",
    "touch",
    "mkdir",
    "dd",
    "stat",
    "df",
    "rm",
    "true",
    "id",
    "head",
    "wc",
    "sync",
    "test",
)


#: The engines every core engine test runs on.
ENGINE_VERSIONS = ("20.10", "26")
#: Where ``./dev`` unpacks the other engines: version -> (environment variable, default).
UNPACKED = {
    "26": ("DOCKVOL_ENGINE26", "/var/cache/dockvol/engine26"),
    "sid": ("DOCKVOL_ENGINE_SID", "/var/cache/dockvol/engine-sid"),
}


class EngineError(RuntimeError):
    pass


def unpacked_dir(version: str) -> Path:
    """Where ``./dev`` unpacked engine ``version``; raises if it has not (run ``./dev setup``)."""
    var, default = UNPACKED[version]
    c = Path(os.environ.get(var) or default)
    if not (c / ".ready").is_file():
        raise EngineError(f"engine {version} is not prepared in {c}: run ./dev setup (see dev)")
    return c


def _binaries(version: str) -> tuple[str, dict[str, str] | None]:
    """The CLI for ``version`` and the environment its dockerd runs with (None: inherited)."""
    if version == "20.10":
        # Debian's docker.io CLI, not whatever `docker` comes first in PATH: the same CLI on
        # every machine, and the one a user of this engine has.
        if shutil.which("dockerd") is None or not Path("/usr/bin/docker").exists():
            raise EngineError("dockerd not found: install Debian's docker.io (see ./dev)")
        return "/usr/bin/docker", None
    if version in UNPACKED:
        c = unpacked_dir(version)
        path = f"{c}/runc:{c}/root/usr/sbin:{c}/root/usr/bin:{os.environ.get('PATH', '')}"
        return f"{c}/root/usr/bin/docker", {**os.environ, "PATH": path}
    raise EngineError(f"unknown engine version {version!r}: use 20.10, {', '.join(UNPACKED)}")


class Engine:
    """One private dockerd. ``Engine.start()`` returns it running; ``stop()`` ends it.

    ``Engine.start(version="26")`` runs engine 26.1.5 instead of 20.10 (``"sid"``: Debian sid's);
    ``engine.release`` says which ("20.10", "26" or "sid"), ``engine.version`` is the server's
    full version string.
    """

    def __init__(
        self,
        base: Path,
        *,
        version: str = "20.10",
        extra_args: Sequence[str] = (),
        bind_specs: bool = True,
        extra_binds: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.dir = base
        self.plugins_dir = base / "plugins"  # = /run/docker/plugins inside the engine
        self.specs_dir = base / "specs"  # = /etc/docker/plugins inside the engine
        self.sock = base / "docker.sock"
        self.pidfile = base / "docker.pid"
        self.log = base / "dockerd.log"
        self.ns = "dv" + uuid.uuid4().hex[:8]
        self.extra_args = list(extra_args)
        self.bind_specs = bind_specs
        self.extra_binds = list(extra_binds)
        self.proc: subprocess.Popen[bytes] | None = None
        self.release = version
        self.cli, self.env = _binaries(version)
        self.version = ""

    @classmethod
    def start(
        cls,
        base: Path | None = None,
        timeout: float = 60.0,
        *,
        version: str = "20.10",
        **kw: object,
    ) -> Engine:
        _binaries(version)  # raises before any directory is made if the engine is missing
        if base is None:
            # Short path: unix socket paths are limited to 107 bytes.
            base = Path(tempfile.mkdtemp(prefix="dve", dir="/tmp"))
        eng = cls(base, version=version, **kw)  # type: ignore[arg-type]
        eng._launch(timeout)
        return eng

    def _launch(self, timeout: float) -> None:
        for d in (self.plugins_dir, self.specs_dir, self.dir / "data", self.dir / "exec"):
            d.mkdir(parents=True, exist_ok=True)
        binds = [(str(self.plugins_dir), "/run/docker/plugins")]
        if self.bind_specs:
            binds.append((str(self.specs_dir), "/etc/docker/plugins"))
        binds += self.extra_binds
        script = ["set -e", "mount --make-rprivate /"]
        for src, dst in binds:
            script.append(f"mkdir -p {dst} && mount --bind {src} {dst}")
        script.append(
            "exec dockerd --storage-driver=vfs --iptables=false --ip-masq=false --bridge=none"
            f" --data-root {self.dir}/data --exec-root {self.dir}/exec"
            f" -H unix://{self.sock} --pidfile {self.pidfile}"
            f" --containerd-namespace {self.ns} --containerd-plugins-namespace {self.ns}p"
            + "".join(" " + a for a in self.extra_args)
        )
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["unshare", "-m", "sh", "-c", "\n".join(script)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EngineError(
                    f"dockerd {self.release} exited ({self.proc.returncode}):\n{self.tail_log()}"
                )
            if self.sock.exists():
                r = subprocess.run(
                    self.cli_args("version", "--format", "{{.Server.Version}}"),
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                if r.returncode == 0:
                    self.version = r.stdout.strip()
                    return
            time.sleep(0.2)  # polling for readiness, not synchronising a test
        self.stop()
        raise EngineError(
            f"dockerd {self.release} did not answer within {timeout}s:\n{self.tail_log()}"
        )

    def enter_args(self) -> list[str]:
        """A command prefix that runs a program in this engine's mount namespace.

        The engine's namespace is private (``mount --make-rprivate /``): mounts made outside it
        after it started are invisible to it and to its containers. A plugin that mounts
        filesystems (the block driver) must run inside, as it would beside a host's dockerd.
        """
        assert self.proc is not None, "the engine is not running"
        # dockerd is the process Popen started: unshare and sh exec into it.
        return ["nsenter", f"--mount=/proc/{self.proc.pid}/ns/mnt", "--"]

    def tail_log(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def cli_args(self, *args: str) -> list[str]:
        return [self.cli, "-H", f"unix://{self.sock}", *args]

    def docker(
        self, *args: str, check: bool = True, timeout: float = 180.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this engine."""
        r = subprocess.run(
            self.cli_args(*args), capture_output=True, text=True, timeout=timeout, input=input
        )
        if check and r.returncode != 0:
            raise EngineError(
                f"docker {' '.join(args)} failed ({r.returncode}):\n{r.stderr}{r.stdout}"
            )
        return r

    def ensure_busybox(self) -> str:
        """Import a tiny busybox image (no registry here) as ``busybox:local``."""
        if self.docker("image", "inspect", BUSYBOX_IMAGE, check=False).returncode == 0:
            return BUSYBOX_IMAGE
        busybox = shutil.which("busybox") or "/bin/busybox"
        if not Path(busybox).exists():
            raise EngineError("busybox not found: install Debian's busybox-static (see .ci/run)")
        root = self.dir / "bbroot"
        (root / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(busybox, root / "bin" / "busybox")
        for name in _BUSYBOX_LINKS:
            link = root / "bin" / name
            if not link.exists():
                link.symlink_to("busybox")
        (root / "tmp").mkdir(exist_ok=True)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        r = subprocess.run(
            self.cli_args("import", "-", BUSYBOX_IMAGE),
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            timeout=120,
        )
        tar.wait()
        if r.returncode != 0:
            raise EngineError(f"docker import failed: {r.stderr}")
        return BUSYBOX_IMAGE

    def restart(self, timeout: float = 60.0) -> None:
        """Stop dockerd as a host shutdown would (SIGTERM: it stops its containers) and start it
        again on the same data root: containers, images and volume records are kept."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._launch(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the engine (SIGTERM, then SIGKILL) and remove its files."""
        if self.proc is None:
            return
        try:
            for cid in self.docker("ps", "-aq", check=False, timeout=30).stdout.split():
                self.docker("rm", "-f", cid, check=False, timeout=60)
        except (subprocess.TimeoutExpired, OSError):
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        # vfs layers and container state live under data/: unmount anything left, then delete.
        subprocess.run(
            [
                "sh",
                "-c",
                f"grep -o ' {self.dir}/[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
            ],
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)
