"""The CSI suite's per-run context and runner: deadlines, hang reports, what each check made
and its cleanup (unpublish, unstage, delete, in that order), and what is left at the end.

The verdicts, reports and docs are the Docker-protocol kit's (``verdict.py``, ``report.py``):
only the context differs. The checks are listed in ``checks.py`` (``SUITE``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from dockvol._csi import csi_pb2 as pb

from ..leftovers import mounted_paths
from ..verdict import (
    Check,
    CheckFailed,
    Hang,
    OutOfTime,
    Result,
    Skipped,
    bites,
    execute,
    run_checks,
)
from .client import Answer, CallTimeout, CsiClient, mount_capability

PluginService = pb.PluginCapability.Service
ControllerRPC = pb.ControllerServiceCapability.RPC
NodeRPC = pb.NodeServiceCapability.RPC
MiB = 1 << 20


@dataclass
class Config:
    """Tunables of a CSI run (documented in docs/conformance.md, "CSI plugins")."""

    prefix: str = "dvcsi-"
    #: CreateVolume parameters for every volume the kit creates (``{name}`` is replaced).
    parameters: dict[str, str] = field(default_factory=dict)
    #: The capacity the kit asks for (required_bytes); the incompatible retry asks twice this.
    capacity: int = 64 * MiB
    #: The longest the kit waits for one reply before it calls the plugin hung.
    call_timeout: float = 10.0
    #: The whole run's time; checks that do not fit are skipped, saying so.
    budget: float = 90.0
    #: Where the kit makes staging directories and the parents of target paths (the plugin
    #: must see the same paths: run it on the same host and mount namespace). ``None``: a new
    #: temporary directory, removed at the end when nothing is left mounted in it.
    staging_dir: Path | None = None
    target_dir: Path | None = None


class CsiLeftovers:
    """What the run could not undo, and how a person removes it."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.volumes: dict[str, str] = {}  # volume_id -> why
        self.mounts: dict[str, str] = {}  # path -> fs type
        self._lock = threading.Lock()

    def volume(self, volume_id: str, why: str) -> None:
        with self._lock:
            self.volumes[volume_id] = why

    def inspect_host(self, dirs: Iterable[Path]) -> None:
        """Mounts still under the kit's own directories."""
        bases = [str(d).rstrip("/") + "/" for d in dirs]
        for path, fstype in mounted_paths().items():
            if any(path.startswith(b) for b in bases):
                self.mounts[path] = fstype

    @property
    def empty(self) -> bool:
        return not (self.volumes or self.mounts)

    def render(self) -> str:
        if self.empty:
            return "left behind: nothing"
        out = ["left behind (the kit could not undo these; remove them by hand):"]
        sock = shlex.quote(self.endpoint.removeprefix("unix://"))
        for vid, why in sorted(self.volumes.items()):
            body = shlex.quote(json.dumps({"volume_id": vid}))
            out.append(
                f"  volume {vid!r} ({why}): grpcurl -plaintext -unix -proto csi.proto "
                f"-d {body} {sock} csi.v1.Controller/DeleteVolume"
            )
        for path, fstype in sorted(self.mounts.items(), reverse=True):
            out.append(f"  mount {path} ({fstype}) still mounted: umount {shlex.quote(path)}")
        return "\n".join(out)

    def to_dict(self) -> dict[str, object]:
        return {
            "volumes": dict(sorted(self.volumes.items())),
            "mounts": dict(sorted(self.mounts.items())),
            "mount_ids": [],
            "directories": [],
            "files": [],
        }


@dataclass
class Published:
    volume_id: str
    target: Path
    staging: Path | None


class CsiContext:
    """What a CSI check uses: calls with deadlines and helpers that remember what to undo."""

    def __init__(self, runner: CsiRunner, check_name: str) -> None:
        self.runner = runner
        self.config = runner.config
        self.check_name = check_name
        self.warnings: list[str] = []
        self.infos: list[str] = []
        self.volumes: list[str] = []
        #: The name of the last volume :meth:`create` made.
        self.last_name = ""
        self.staged: list[tuple[str, Path]] = []
        self.published: list[Published] = []

    # -- words -------------------------------------------------------------------------------
    def warn(self, text: str, when: str) -> None:
        """Tolerated by the orchestrators; ``when`` says when it would bite."""
        self.warnings.append(bites(text, when).replace("by the engine", "by orchestrators"))

    def info(self, text: str) -> None:
        self.infos.append(text)

    def name(self, tag: str = "v") -> str:
        return (
            f"{self.config.prefix}{self.runner.run_id}-{self.check_name}-{tag}-{self.runner.seq()}"
        )

    # -- calls ---------------------------------------------------------------------------------
    def call(self, rpc: str, request: Any) -> Answer:
        return self.runner.call(rpc, request)

    def ok(self, rpc: str, request: Any, what: str = "") -> Any:
        """Call and require OK; returns the reply."""
        a = self.call(rpc, request)
        if not a.ok:
            raise CheckFailed(f"{rpc}{' ' + what if what else ''}: expected OK, got {a.describe()}")
        return a.reply

    # -- capabilities (asked once per run) -----------------------------------------------------
    def plugin_caps(self) -> set[int]:
        return self.runner.caps("plugin", self)

    def controller_caps(self) -> set[int]:
        return self.runner.caps("controller", self)

    def node_caps(self) -> set[int]:
        return self.runner.caps("node", self)

    def need_controller(self, rpc: int | None = None) -> None:
        """Skip unless the plugin offers the controller service (and ``rpc``)."""
        if PluginService.CONTROLLER_SERVICE not in self.plugin_caps():
            raise Skipped("the plugin does not offer the controller service (CONTROLLER_SERVICE)")
        if rpc is not None and rpc not in self.controller_caps():
            raise Skipped(f"the controller does not offer {ControllerRPC.Type.Name(rpc)}")

    def stages(self) -> bool:
        return NodeRPC.STAGE_UNSTAGE_VOLUME in self.node_caps()

    # -- volumes -------------------------------------------------------------------------------
    def parameters(self, name: str) -> dict[str, str]:
        return {k: v.replace("{name}", name) for k, v in self.config.parameters.items()}

    def create_request(self, name: str, capacity: int | None = None, **kw: Any) -> Any:
        req = pb.CreateVolumeRequest(
            name=name,
            volume_capabilities=[mount_capability()],
            parameters=self.parameters(name),
            capacity_range=pb.CapacityRange(
                required_bytes=self.config.capacity if capacity is None else capacity
            ),
            **kw,
        )
        return req

    def try_create(self, request: Any) -> Answer:
        """CreateVolume; a volume it made is remembered for cleanup."""
        a = self.call("CreateVolume", request)
        if a.ok and a.reply.volume.volume_id and a.reply.volume.volume_id not in self.volumes:
            self.volumes.append(a.reply.volume.volume_id)
        return a

    def create(self, tag: str = "v", capacity: int | None = None) -> Any:
        """A new volume (the controller's, or a fake id on a node-only plugin); its Volume."""
        if PluginService.CONTROLLER_SERVICE not in self.plugin_caps() or (
            ControllerRPC.CREATE_DELETE_VOLUME not in self.controller_caps()
        ):
            raise Skipped("the plugin cannot create volumes (no CREATE_DELETE_VOLUME)")
        req = self.create_request(self.name(tag), capacity)
        self.last_name = req.name
        a = self.try_create(req)
        if not a.ok:
            raise CheckFailed(f"CreateVolume {req.name!r}: expected OK, got {a.describe()}")
        if not a.reply.volume.volume_id:
            raise CheckFailed(f"CreateVolume {req.name!r}: the reply has no volume_id")
        return a.reply.volume

    def delete(self, volume_id: str) -> None:
        self.ok("DeleteVolume", pb.DeleteVolumeRequest(volume_id=volume_id), repr(volume_id))
        with contextlib.suppress(ValueError):
            self.volumes.remove(volume_id)

    # -- node ----------------------------------------------------------------------------------
    def path(self, kind: str, tag: str) -> Path:
        """A staging directory (made: the CO makes it) or a target path (its parent made: the
        plugin makes the target itself, as the spec says)."""
        base = self.runner.staging_dir if kind == "stage" else self.runner.target_dir
        p = base / f"{self.check_name}-{tag}-{self.runner.seq()}"
        if kind == "stage":
            p.mkdir(parents=True)
        return p

    def stage(self, vol: Any, staging: Path) -> None:
        self.staged.append((vol.volume_id, staging))
        self.ok("NodeStageVolume", self.stage_request(vol, staging), repr(vol.volume_id))

    def stage_request(self, vol: Any, staging: Path) -> Any:
        return pb.NodeStageVolumeRequest(
            volume_id=vol.volume_id,
            staging_target_path=str(staging),
            volume_capability=mount_capability(),
            volume_context=dict(vol.volume_context),
        )

    def unstage(self, volume_id: str, staging: Path) -> None:
        req = pb.NodeUnstageVolumeRequest(volume_id=volume_id, staging_target_path=str(staging))
        self.ok("NodeUnstageVolume", req, repr(volume_id))
        with contextlib.suppress(ValueError):
            self.staged.remove((volume_id, staging))

    def publish_request(
        self, vol: Any, target: Path, staging: Path | None, readonly: bool = False
    ) -> Any:
        return pb.NodePublishVolumeRequest(
            volume_id=vol.volume_id,
            staging_target_path=str(staging) if staging else "",
            target_path=str(target),
            volume_capability=mount_capability(),
            readonly=readonly,
            volume_context=dict(vol.volume_context),
        )

    def publish(self, vol: Any, tag: str = "t", readonly: bool = False) -> Published:
        """Stage (when the plugin stages) and publish ``vol`` at a new target path."""
        staging = None
        if self.stages():
            staging = self.path("stage", tag)
            self.stage(vol, staging)
        target = self.path("target", tag)
        return self.publish_at(vol, target, staging, readonly)

    def publish_at(
        self, vol: Any, target: Path, staging: Path | None, readonly: bool = False
    ) -> Published:
        pub = Published(vol.volume_id, target, staging)
        self.published.append(pub)  # before the call: a publish whose reply is lost may be done
        req = self.publish_request(vol, target, staging, readonly)
        self.ok("NodePublishVolume", req, repr(vol.volume_id))
        return pub

    def unpublish(self, pub: Published) -> None:
        req = pb.NodeUnpublishVolumeRequest(volume_id=pub.volume_id, target_path=str(pub.target))
        self.ok("NodeUnpublishVolume", req, repr(pub.volume_id))
        with contextlib.suppress(ValueError):
            self.published.remove(pub)

    def unpublish_all(self, pub: Published) -> None:
        """Unpublish and unstage (what the CO does before DeleteVolume)."""
        self.unpublish(pub)
        if pub.staging is not None:
            self.unstage(pub.volume_id, pub.staging)

    # -- cleanup -------------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Unpublish, unstage, delete what the check left, in the order a CO would."""
        r = self.runner
        for pub in list(self.published):
            req = pb.NodeUnpublishVolumeRequest(
                volume_id=pub.volume_id, target_path=str(pub.target)
            )
            r.quiet("NodeUnpublishVolume", req)
        for vid, staging in list(self.staged):
            req2 = pb.NodeUnstageVolumeRequest(volume_id=vid, staging_target_path=str(staging))
            r.quiet("NodeUnstageVolume", req2)
        for vid in list(self.volumes):
            answered = r.quiet("DeleteVolume", pb.DeleteVolumeRequest(volume_id=vid))
            if answered is None:
                r.leftovers.volume(vid, "DeleteVolume did not answer")
            elif not answered.ok:
                r.leftovers.volume(vid, f"DeleteVolume: {answered.describe()}")


class CsiRunner:
    """Runs CSI checks one at a time against one plugin and keeps their results."""

    def __init__(
        self,
        client: CsiClient,
        config: Config | None = None,
        *,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.config = config or Config()
        self.run_id = secrets.token_hex(3)
        self.results: dict[str, Result] = {}
        self.leftovers = CsiLeftovers(client.endpoint)
        self._say = say
        self._seq = 0
        self._lock = threading.Lock()
        self._caps: dict[str, set[int]] = {}
        self._made: list[Path] = []
        self.staging_dir = self._dir(self.config.staging_dir, "stage")
        self.target_dir = self._dir(self.config.target_dir, "target")
        #: Why the run stopped early (the plugin stopped answering), or "".
        self.stopped = ""
        self.hangs = 0
        self._deadline: float | None = None

    def _dir(self, given: Path | None, kind: str) -> Path:
        if given is not None:
            d = Path(given) / f"{self.config.prefix}{self.run_id}-{kind}"
        else:
            d = Path(tempfile.mkdtemp(prefix=f"{self.config.prefix}{kind}-"))
        d.mkdir(parents=True, exist_ok=True)
        self._made.append(d)
        return d

    def seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def say(self, text: str) -> None:
        if self._say is not None:
            self._say(text)

    def remaining(self) -> float:
        if self._deadline is None:
            self._deadline = time.monotonic() + self.config.budget
        return self._deadline - time.monotonic()

    def call(self, rpc: str, request: Any) -> Answer:
        left = self.remaining()
        if left <= 0:
            raise OutOfTime(self.out_of_time())
        timeout = min(self.config.call_timeout, left)
        try:
            return self.client.call(rpc, request, timeout)
        except CallTimeout as e:
            if timeout < self.config.call_timeout:
                raise OutOfTime(self.out_of_time()) from e
            self.hangs += 1
            raise Hang(
                f"csi.v1.{rpc}",
                timeout,
                "orchestrators retry a call that times out, with the same arguments; a plugin "
                "that never answers blocks every task that needs the volume",
            ) from e
        except ConnectionError as e:
            # Gone (crashed, socket removed): the checks after this one would only repeat it.
            self.stopped = f"the plugin became unreachable ({rpc})"
            raise CheckFailed(str(e)) from e

    def out_of_time(self) -> str:
        return (
            f"the run's time budget of {self.config.budget:g}s is used up; raise --budget to "
            f"run the rest"
        )

    def quiet(self, rpc: str, request: Any) -> Answer | None:
        """A cleanup call: the answer, or ``None`` when there was none; never raises."""
        if self.stopped:
            return None
        try:
            return self.client.call(rpc, request, self.config.call_timeout)
        except CallTimeout:
            return None
        except Exception:
            return Answer(rpc, grpc.StatusCode.UNAVAILABLE, "unreachable")

    def caps(self, kind: str, ctx: CsiContext) -> set[int]:
        """The plugin's, controller's or node's capabilities, asked once per run."""
        if kind not in self._caps:
            if kind == "plugin":
                r = ctx.ok("GetPluginCapabilities", pb.GetPluginCapabilitiesRequest())
                found = {c.service.type for c in r.capabilities if c.HasField("service")}
                found |= {
                    1000 + c.volume_expansion.type
                    for c in r.capabilities
                    if c.HasField("volume_expansion")
                }
            elif kind == "controller":
                r = ctx.ok("ControllerGetCapabilities", pb.ControllerGetCapabilitiesRequest())
                found = {c.rpc.type for c in r.capabilities if c.HasField("rpc")}
            else:
                r = ctx.ok("NodeGetCapabilities", pb.NodeGetCapabilitiesRequest())
                found = {c.rpc.type for c in r.capabilities if c.HasField("rpc")}
            self._caps[kind] = found
        return self._caps[kind]

    def probe(self) -> tuple[list[str], list[str]]:
        """Which cheap calls still answer (short deadline): (answering, not)."""
        probes: list[tuple[str, Any]] = [
            ("GetPluginInfo", pb.GetPluginInfoRequest()),
            ("Probe", pb.ProbeRequest()),
            ("NodeGetInfo", pb.NodeGetInfoRequest()),
        ]
        answering, silent = [], []
        for rpc, req in probes:
            try:
                self.client.call(rpc, req, min(3.0, self.config.call_timeout))
                answering.append(rpc)
            except Exception:
                silent.append(rpc)
        return answering, silent

    def run_one(self, chk: Check[Any]) -> Result:
        ctx = CsiContext(self, chk.name)
        t0 = time.monotonic()
        if self.stopped:
            res = Result(chk, "skip", f"not run: {self.stopped}")
        elif self.remaining() <= 0:
            res = Result(chk, "skip", f"not run: {self.out_of_time()}")
        else:
            hangs = self.hangs
            res = execute(chk, ctx, ctx.warnings, ctx.infos)
            if self.hangs > hangs and res.outcome == "fail":
                answering, silent = self.probe()
                res.message += (
                    f"; still answering: {', '.join(answering) or 'nothing'}"
                    f"; not answering: {', '.join(silent) or 'nothing'}"
                )
                if not answering:
                    self.stopped = f"the plugin hung in {chk.name} (nothing answers any more)"
            with contextlib.suppress(Exception):  # best effort by design
                ctx.cleanup()
        res.seconds = time.monotonic() - t0
        self.results[chk.name] = res
        return res

    def run(
        self, checks: Sequence[Check[Any]], progress: Callable[[Result], None] | None = None
    ) -> list[Result]:
        return run_checks(self, checks, progress)

    def finish(self) -> None:
        """Look for mounts left under the kit's directories; remove the directories the kit
        made when nothing is mounted in them any more."""
        self.leftovers.mounts.clear()
        self.leftovers.inspect_host(self._made)
        if not self.leftovers.mounts:
            for d in self._made:
                remove_unmounted(d)
            self._made = [d for d in self._made if d.exists()]

    def close(self) -> None:
        self.client.close()


def remove_unmounted(top: Path) -> None:
    """Remove the kit's directory ``top``, never through a mount: a directory with anything
    mounted at or below it is kept (it would be the plugin's volume)."""
    mounted = mounted_paths()
    base = str(top)
    if any(p == base or p.startswith(base + "/") for p in mounted):
        return
    for here, dirs, files in os.walk(top, topdown=False):
        for f in files:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(here, f))
        for d in dirs:
            full = os.path.join(here, d)
            with contextlib.suppress(OSError):
                if os.path.islink(full):
                    os.unlink(full)
                elif not os.path.ismount(full):
                    os.rmdir(full)
    with contextlib.suppress(OSError):
        top.rmdir()


def is_mount(path: Path) -> bool:
    """Is something mounted exactly at ``path`` (in this mount namespace)?"""
    return os.path.realpath(path) in mounted_paths()
