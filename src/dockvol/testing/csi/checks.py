"""Every check of the CSI suite, listed explicitly (``SUITE``), in the order a run takes them.

Each judges what the CSI spec v1.9.0 requires of a call the plugin implements: FAIL for a
MUST whose breach hurts an orchestrator (Kubernetes, Nomad, Swarm retry calls and read their
codes), WARN for what orchestrators tolerate, SKIP when the plugin does not offer the call.
The ``engine`` text of each check names the spec section (rendered as "Spec" in the docs).
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import grpc

from dockvol._csi import csi_pb2 as pb

from ..verdict import Check, CheckFailed, Skipped, check
from .client import mount_capability
from .runner import ControllerRPC, CsiContext, NodeRPC, PluginService, Published, is_mount

SPEC = "CSI spec v1.9.0"
OK = grpc.StatusCode.OK
NOT_FOUND = grpc.StatusCode.NOT_FOUND
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
#: A volume id no plugin has made (the kit's prefix, so a plugin that creates it is told).
UNKNOWN = "dvcsi-unknown-volume-id"
PROBE_FILE = "dvcsi-probe"


def _name_ok(name: str) -> bool:
    # 63 characters or less, alphanumerics at both ends, dashes, dots and alphanumerics between.
    if not 0 < len(name) <= 63 or not (name[0].isalnum() and name[-1].isalnum()):
        return False
    return all(c.isascii() and (c.isalnum() or c in "-.") for c in name)


# -- Identity -----------------------------------------------------------------------------------


@check(
    "csi-plugin-info",
    title="GetPluginInfo names the plugin and its version",
    checks="GetPluginInfo answers OK with a name of at most 63 characters in domain-name "
    "notation (alphanumerics at both ends; dashes, dots, alphanumerics between) and a "
    "non-empty vendor_version.",
    why="Orchestrators key everything by the plugin's name: Kubernetes registers the driver "
    "under it (CSIDriver objects, the kubelet's plugin registry), Swarm matches it with the "
    "volume's driver. A missing or malformed name leaves the plugin unregistered.",
    engine=f"{SPEC}, GetPluginInfo: name and vendor_version are REQUIRED; the name MUST be "
    "63 characters or less, beginning and ending with an alphanumeric character.",
    fix="Answer name (e.g. io.example.myplugin) and vendor_version (e.g. 1.2.0).",
)
def plugin_info(ctx: CsiContext) -> None:
    r = ctx.ok("GetPluginInfo", pb.GetPluginInfoRequest())
    if not _name_ok(r.name):
        raise CheckFailed(f"GetPluginInfo: name {r.name!r} is not a valid plugin name")
    if not r.vendor_version:
        raise CheckFailed("GetPluginInfo: vendor_version is empty (it is REQUIRED)")
    ctx.info(f"{r.name} {r.vendor_version}")


@check(
    "csi-plugin-capabilities",
    title="GetPluginCapabilities answers",
    checks="GetPluginCapabilities answers OK; the services it names decide which checks below "
    "run (no CONTROLLER_SERVICE: the controller checks skip).",
    why="The orchestrator asks it first to decide whether to call the controller at all and "
    "whether volumes have topology; an error leaves the plugin unusable.",
    engine=f"{SPEC}, GetPluginCapabilities: REQUIRED of every plugin.",
    fix="Implement GetPluginCapabilities; list CONTROLLER_SERVICE when the plugin creates volumes.",
)
def plugin_capabilities(ctx: CsiContext) -> None:
    caps = ctx.plugin_caps()
    names = [PluginService.Type.Name(c) for c in sorted(caps) if c < 1000]
    ctx.info(f"services: {', '.join(names) or 'none'}")


@check(
    "csi-probe",
    title="Probe answers, ready",
    checks="Probe answers OK, and ready is true or unset (unset means ready).",
    why="Orchestrators probe the plugin before using it and as its liveness check (Kubernetes' "
    "livenessprobe sidecar); a Probe that fails gets the plugin restarted in a loop.",
    engine=f"{SPEC}, Probe: REQUIRED; a missing ready means ready. FAILED_PRECONDITION is "
    "the code for a plugin that is not healthy.",
    fix="Answer Probe cheaply (no backend round trip per call); set ready=false only while "
    "starting.",
    tolerated="ready=false: the plugin says it is still starting; it bites when it never "
    "becomes ready.",
)
def probe(ctx: CsiContext) -> None:
    r = ctx.ok("Probe", pb.ProbeRequest())
    if r.HasField("ready") and not r.ready.value:
        ctx.warn("Probe: ready is false", "when it stays false: the orchestrator never uses it")


# -- Controller ---------------------------------------------------------------------------------


@check(
    "csi-create-idempotent",
    title="CreateVolume twice with the same name is one volume",
    checks="CreateVolume with a name, capabilities, parameters and a capacity range, then the "
    "identical request again: both OK, the same volume_id.",
    why="An orchestrator retries CreateVolume whenever it does not know whether the first "
    "call worked (a timeout, a restart): an error leaves the volume pending for ever, a "
    "second volume leaks storage nobody will delete.",
    engine=f'{SPEC}, CreateVolume: "This operation MUST be idempotent"; a compatible '
    "existing volume of that name MUST be answered 0 OK with it.",
    fix="Key volumes by the request's name; when it exists with compatible arguments, "
    "answer it again.",
)
def create_idempotent(ctx: CsiContext) -> None:
    ctx.need_controller(ControllerRPC.CREATE_DELETE_VOLUME)
    req = ctx.create_request(ctx.name())
    first = ctx.try_create(req)
    if not first.ok:
        raise CheckFailed(f"CreateVolume {req.name!r}: expected OK, got {first.describe()}")
    again = ctx.try_create(req)
    if not again.ok:
        raise CheckFailed(f"CreateVolume {req.name!r} retried: expected OK, got {again.describe()}")
    a, b = first.reply.volume.volume_id, again.reply.volume.volume_id
    if not a or a != b:
        raise CheckFailed(f"CreateVolume {req.name!r} retried: volume_id {b!r}, first {a!r}")


@check(
    "csi-create-incompatible",
    title="CreateVolume of an existing name with another capacity is ALREADY_EXISTS",
    checks="CreateVolume, then the same name with twice the required_bytes: ALREADY_EXISTS.",
    why="The orchestrator would believe it has a volume of the size it asked for; the "
    "workload then runs out of space it was promised.",
    engine=f"{SPEC}, CreateVolume errors: 6 ALREADY_EXISTS when a volume of that name exists "
    "but is incompatible with the capacity_range.",
    fix="Remember the capacity range each name was created with (durably); refuse a "
    "different one with ALREADY_EXISTS.",
    tolerated="another error code than ALREADY_EXISTS: nothing is created, orchestrators "
    "report the error; it bites retry logic that treats ALREADY_EXISTS as final.",
)
def create_incompatible(ctx: CsiContext) -> None:
    ctx.need_controller(ControllerRPC.CREATE_DELETE_VOLUME)
    ctx.create()
    req = ctx.create_request(ctx.last_name, capacity=2 * ctx.config.capacity)
    a = ctx.try_create(req)
    if a.ok:
        raise CheckFailed(
            f"CreateVolume {req.name!r} with twice the capacity answered OK "
            f"(capacity_bytes {a.reply.volume.capacity_bytes}); expected ALREADY_EXISTS"
        )
    if a.code != ALREADY_EXISTS:
        ctx.warn(
            f"CreateVolume {req.name!r} with another capacity: {a.describe()}, not ALREADY_EXISTS",
            "orchestrators that retry other codes",
        )


@check(
    "csi-create-no-name",
    title="CreateVolume without a name is INVALID_ARGUMENT",
    checks="CreateVolume with capabilities but no name: INVALID_ARGUMENT, nothing created.",
    why="The name is what makes CreateVolume idempotent; a plugin that makes a volume without "
    "one makes a new volume on every retry.",
    engine=f"{SPEC}, CreateVolume: name is REQUIRED; 3 INVALID_ARGUMENT for a missing "
    "required field.",
    fix="Refuse a request without a name with INVALID_ARGUMENT before creating anything.",
    tolerated="another error code: nothing is created; it bites tools that report codes.",
)
def create_no_name(ctx: CsiContext) -> None:
    ctx.need_controller(ControllerRPC.CREATE_DELETE_VOLUME)
    a = ctx.try_create(pb.CreateVolumeRequest(volume_capabilities=[mount_capability()]))
    if a.ok:
        raise CheckFailed("CreateVolume without a name answered OK; expected INVALID_ARGUMENT")
    if a.code != INVALID_ARGUMENT:
        ctx.warn(f"CreateVolume without a name: {a.describe()}", "tools that read the code")


@check(
    "csi-create-no-caps",
    title="CreateVolume without capabilities is INVALID_ARGUMENT",
    checks="CreateVolume with a name but no volume_capabilities: INVALID_ARGUMENT.",
    why="Without capabilities the plugin cannot know how the volume will be used (mount or "
    "block, one node or many); creating one anyway gives a volume the CO may not be able to "
    "use.",
    engine=f"{SPEC}, CreateVolume: volume_capabilities is REQUIRED; 3 INVALID_ARGUMENT.",
    fix="Refuse an empty volume_capabilities list with INVALID_ARGUMENT.",
    tolerated="another error code: nothing is created.",
)
def create_no_capabilities(ctx: CsiContext) -> None:
    ctx.need_controller(ControllerRPC.CREATE_DELETE_VOLUME)
    name = ctx.name()
    a = ctx.try_create(pb.CreateVolumeRequest(name=name, parameters=ctx.parameters(name)))
    if a.ok:
        raise CheckFailed(f"CreateVolume {name!r} without capabilities answered OK")
    if a.code != INVALID_ARGUMENT:
        ctx.warn(f"CreateVolume without capabilities: {a.describe()}", "tools that read the code")


@check(
    "csi-delete-idempotent",
    title="DeleteVolume twice, and of an unknown id, is OK",
    checks="DeleteVolume of a volume the kit created, the same again, and of an id that was "
    "never created: all OK.",
    why="An orchestrator retries DeleteVolume until it gets OK: NOT_FOUND for a volume already "
    "gone leaves the volume object stuck in deletion for ever (Kubernetes PVs in 'Released', "
    "Swarm volumes that `docker volume rm` cannot remove).",
    engine=f'{SPEC}, DeleteVolume: "If a volume corresponding to the specified volume_id '
    "does not exist or the artifacts associated with the volume do not exist anymore, the "
    'Plugin MUST reply 0 OK."',
    fix="Treat an unknown volume_id as already deleted: answer OK.",
)
def delete_idempotent(ctx: CsiContext) -> None:
    ctx.need_controller(ControllerRPC.CREATE_DELETE_VOLUME)
    vol = ctx.create()
    ctx.delete(vol.volume_id)
    for vid, what in ((vol.volume_id, "deleted already"), (UNKNOWN, "never created")):
        a = ctx.call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=vid))
        if not a.ok:
            raise CheckFailed(f"DeleteVolume {vid!r} ({what}): expected OK, got {a.describe()}")


@check(
    "csi-validate-caps",
    title="ValidateVolumeCapabilities: NOT_FOUND for unknown, confirms its own",
    checks="ValidateVolumeCapabilities of an unknown volume_id: NOT_FOUND; of a volume the kit "
    "created, with the capability it was created with: OK, confirmed with those "
    "capabilities (or not confirmed, with a message).",
    why="Orchestrators validate pre-provisioned volumes before using them; OK for a volume "
    "that does not exist lets them schedule a workload that cannot start.",
    engine=f"{SPEC}, ValidateVolumeCapabilities: 5 NOT_FOUND when the volume does not exist; "
    "confirmed SHALL only be set when every capability is supported.",
    fix="Look the volume up first (NOT_FOUND); confirm only the capabilities asked.",
    tolerated="another code than NOT_FOUND for an unknown volume; its own capability not "
    "confirmed: the CO only refuses to use the volume that way.",
)
def validate_capabilities(ctx: CsiContext) -> None:
    ctx.need_controller()
    req = pb.ValidateVolumeCapabilitiesRequest(
        volume_id=UNKNOWN, volume_capabilities=[mount_capability()]
    )
    a = ctx.call("ValidateVolumeCapabilities", req)
    if a.ok:
        raise CheckFailed(
            f"ValidateVolumeCapabilities {UNKNOWN!r} (never created): OK; expected NOT_FOUND"
        )
    if a.code != NOT_FOUND:
        ctx.warn(
            f"ValidateVolumeCapabilities of an unknown volume: {a.describe()}, not NOT_FOUND",
            "tools that read the code",
        )
    if ControllerRPC.CREATE_DELETE_VOLUME not in ctx.controller_caps():
        ctx.info("no CREATE_DELETE_VOLUME: only the unknown id was validated")
        return
    vol = ctx.create()
    req = pb.ValidateVolumeCapabilitiesRequest(
        volume_id=vol.volume_id,
        volume_context=dict(vol.volume_context),
        volume_capabilities=[mount_capability()],
        parameters=ctx.parameters(ctx.last_name),
    )
    r = ctx.ok("ValidateVolumeCapabilities", req, repr(vol.volume_id))
    if not r.HasField("confirmed"):
        ctx.warn(
            f"ValidateVolumeCapabilities {vol.volume_id!r}: the capability it was created "
            f"with is not confirmed ({r.message!r})",
            "when the CO validates before use",
        )
    elif list(r.confirmed.volume_capabilities) != [mount_capability()]:
        raise CheckFailed(
            f"ValidateVolumeCapabilities {vol.volume_id!r}: confirmed "
            "capabilities that differ from those asked"
        )


@check(
    "csi-list-volumes",
    title="ListVolumes lists the volumes created",
    checks="With LIST_VOLUMES: two volumes created, ListVolumes (following next_token, two "
    "entries a page) lists both, each once.",
    why="Orchestrators reconcile their volume objects with ListVolumes (Kubernetes' health "
    "monitor, Nomad's `volume status`); a volume missing from it is reported lost, a "
    "volume listed twice confuses paging.",
    engine=f'{SPEC}, ListVolumes: "The Plugin SHALL return the information about all the '
    'volumes that it knows about"; next_token pages through the rest.',
    fix="List every volume; make next_token resume after the last entry of the page.",
    tolerated="a volume listed twice across pages.",
)
def list_volumes(ctx: CsiContext) -> None:
    ctx.need_controller(ControllerRPC.LIST_VOLUMES)
    made = [ctx.create("a").volume_id, ctx.create("b").volume_id]
    seen: list[str] = []
    token = ""
    for _ in range(10000):
        req = pb.ListVolumesRequest(max_entries=2, starting_token=token)
        r = ctx.ok("ListVolumes", req)
        seen += [e.volume.volume_id for e in r.entries]
        if len(r.entries) > 2:
            raise CheckFailed(f"ListVolumes max_entries=2 returned {len(r.entries)} entries")
        if not r.next_token:
            break
        token = r.next_token
    missing = [v for v in made if v not in seen]
    if missing:
        raise CheckFailed(f"ListVolumes does not list {missing} (listed {len(seen)} volumes)")
    twice = [v for v in made if seen.count(v) > 1]
    if twice:
        ctx.warn(
            f"ListVolumes lists {twice} more than once across pages",
            "a CO that counts volumes from the list (the spec allows duplicates only when "
            "volumes change while it pages)",
        )


@check(
    "csi-get-capacity",
    title="GetCapacity answers",
    checks="With GET_CAPACITY: GetCapacity for the kit's capability answers OK with a "
    "non-negative available_capacity.",
    why="Schedulers that track storage capacity (Kubernetes' CSIStorageCapacity) call it for "
    "every topology; an error there stops volumes from being placed.",
    engine=f"{SPEC}, GetCapacity: MUST be implemented when GET_CAPACITY is advertised.",
    fix="Answer the space a new volume could take (0 when none or not applicable).",
)
def get_capacity(ctx: CsiContext) -> None:
    ctx.need_controller(ControllerRPC.GET_CAPACITY)
    r = ctx.ok("GetCapacity", pb.GetCapacityRequest(volume_capabilities=[mount_capability()]))
    if r.available_capacity < 0:
        raise CheckFailed(f"GetCapacity: available_capacity {r.available_capacity} < 0")
    ctx.info(f"available {r.available_capacity} bytes")


@check(
    "csi-expand-volume",
    title="ControllerExpandVolume grows a volume, idempotently",
    checks="With EXPAND_VOLUME: a volume created at the kit's capacity is expanded to twice "
    "that: OK, capacity_bytes at least what was asked; the same call again: OK.",
    why="Orchestrators retry an expansion until it succeeds; an error on the retry leaves the "
    "claim stuck in 'resizing'.",
    engine=f"{SPEC}, ControllerExpandVolume: MUST be idempotent; capacity_bytes is REQUIRED.",
    fix="When the volume is already at least the size asked, answer OK with its size.",
)
def expand_volume(ctx: CsiContext) -> None:
    ctx.need_controller(ControllerRPC.EXPAND_VOLUME)
    vol = ctx.create()
    want = 2 * ctx.config.capacity
    req = pb.ControllerExpandVolumeRequest(
        volume_id=vol.volume_id,
        capacity_range=pb.CapacityRange(required_bytes=want),
        volume_capability=mount_capability(),
    )
    for attempt in ("", " again"):
        r = ctx.ok("ControllerExpandVolume", req, repr(vol.volume_id) + attempt)
        if r.capacity_bytes < want:
            raise CheckFailed(
                f"ControllerExpandVolume{attempt}: capacity_bytes "
                f"{r.capacity_bytes} < required {want}"
            )


# -- Node -------------------------------------------------------------------------------------


@check(
    "csi-node-info",
    title="NodeGetInfo names the node",
    checks="NodeGetInfo answers OK with a non-empty node_id of at most 256 bytes.",
    why="The node_id is how the controller and the orchestrator address this node "
    "(ControllerPublish, topology, Swarm's placement); an empty one makes the node unusable.",
    engine=f"{SPEC}, NodeGetInfo: node_id is REQUIRED, at most 256 bytes.",
    fix="Answer a stable, unique id of the host (its hostname, or the backend's node id).",
)
def node_info(ctx: CsiContext) -> None:
    r = ctx.ok("NodeGetInfo", pb.NodeGetInfoRequest())
    if not r.node_id:
        raise CheckFailed("NodeGetInfo: node_id is empty")
    if len(r.node_id.encode()) > 256:
        raise CheckFailed(f"NodeGetInfo: node_id is {len(r.node_id.encode())} bytes (max 256)")
    ctx.info(f"node {r.node_id!r}")


@check(
    "csi-node-capabilities",
    title="NodeGetCapabilities answers",
    checks="NodeGetCapabilities answers OK; STAGE_UNSTAGE_VOLUME decides whether the kit "
    "stages before it publishes.",
    why="The orchestrator asks it before every stage and publish; an error stops every "
    "workload on the node.",
    engine=f"{SPEC}, NodeGetCapabilities: REQUIRED of every node plugin.",
    fix="Implement NodeGetCapabilities (an empty list is a valid answer).",
)
def node_capabilities(ctx: CsiContext) -> None:
    caps = ctx.node_caps()
    ctx.info("capabilities: " + (", ".join(NodeRPC.Type.Name(c) for c in sorted(caps)) or "none"))


@check(
    "csi-stage-idempotent",
    title="NodeStage and NodeUnstage twice are OK",
    checks="With STAGE_UNSTAGE_VOLUME: NodeStageVolume twice at the same staging path: OK "
    "both; NodeUnstageVolume twice: OK both; NodeUnstageVolume of a path never staged: OK.",
    why="The orchestrator retries both until they succeed (after a kubelet or plugin "
    "restart); an error on the retry leaves the pod stuck in ContainerCreating or the "
    "volume never released.",
    engine=f'{SPEC}, NodeStageVolume and NodeUnstageVolume: "This operation MUST be '
    'idempotent"; unstaging a volume not staged at the path MUST reply 0 OK.',
    fix="When the staging path already holds this volume, answer OK; when nothing is staged "
    "there, answer OK.",
)
def stage_idempotent(ctx: CsiContext) -> None:
    if not ctx.stages():
        raise Skipped("the node does not stage (no STAGE_UNSTAGE_VOLUME)")
    vol = ctx.create()
    staging = ctx.path("stage", "s")
    ctx.stage(vol, staging)
    ctx.ok("NodeStageVolume", ctx.stage_request(vol, staging), repr(vol.volume_id) + " again")
    ctx.unstage(vol.volume_id, staging)
    ctx.unstage(vol.volume_id, staging)
    never = ctx.path("stage", "never")
    ctx.unstage(vol.volume_id, never)


def _mounts_at(path: Path) -> int:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return sum(1 for line in f if line.split(" ", 5)[4] == real)


@check(
    "csi-publish-idempotent",
    title="NodePublish twice at the same target is OK, and mounts once",
    checks="NodePublishVolume twice with the same volume and target path: OK both, and the "
    "second adds no mount on top of the first.",
    why="The orchestrator retries NodePublish until it succeeds; an error leaves the workload "
    "stuck starting, a second mount stacked on the first survives NodeUnpublish (one layer "
    "is removed) and keeps the volume busy.",
    engine=f'{SPEC}, NodePublishVolume: "This operation MUST be idempotent"; a volume '
    "already published at the target with the same arguments MUST reply 0 OK.",
    fix="When the target is already a mount of this volume, answer OK without mounting again.",
)
def publish_idempotent(ctx: CsiContext) -> None:
    vol = ctx.create()
    pub = ctx.publish(vol)
    layers = _mounts_at(pub.target)
    ctx.ok("NodePublishVolume", ctx.publish_request(vol, pub.target, pub.staging),
           repr(vol.volume_id) + " again")  # fmt: skip
    after = _mounts_at(pub.target)
    if after > layers:
        raise CheckFailed(
            f"NodePublishVolume again stacked a mount: {after} mounts at "
            f"{pub.target}, {layers} after the first call"
        )


@check(
    "csi-publish-mounts",
    title="NodePublish mounts the volume at the target",
    checks="After NodePublishVolume the target path is a mount point; a file written through "
    "it is read back through another target after NodeUnpublish and a new NodePublish.",
    why="The workload writes into the target: if it is not the volume, the data lands on the "
    "node's disk and is lost when the workload moves or the target is removed.",
    engine=f'{SPEC}, NodePublishVolume: for access type mount, "the SP SHALL place the '
    'mounted directory at target_path".',
    fix="Mount (or bind) the volume at target_path, creating the directory first if needed.",
)
def publish_is_the_volume(ctx: CsiContext) -> None:
    vol = ctx.create()
    pub = ctx.publish(vol, "a")
    if not is_mount(pub.target):
        raise CheckFailed(f"NodePublishVolume answered OK but nothing is mounted at {pub.target}")
    token = secrets.token_hex(8)
    _write(pub.target / PROBE_FILE, token)
    ctx.unpublish(pub)
    pub2 = ctx.publish_at(vol, ctx.path("target", "b"), pub.staging)
    try:
        seen = (pub2.target / PROBE_FILE).read_text()
    except OSError as e:
        raise CheckFailed(
            f"a file written through {pub.target} is not in the volume at "
            f"{pub2.target}: {e.strerror}"
        ) from e
    if seen != token:
        raise CheckFailed(f"{pub2.target / PROBE_FILE} holds {seen!r}, not what was written")


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@check(
    "csi-publish-readonly",
    title="A read-only publish refuses writes",
    checks="NodePublishVolume with readonly=true: writing a file under the target fails (EROFS).",
    why="The orchestrator publishes read-only for read-only claims and mounts (Swarm "
    "--sharing readonly, Kubernetes readOnly: true); a writable mount lets a reader corrupt "
    "a volume others write.",
    engine=f'{SPEC}, NodePublishVolumeRequest.readonly: "Indicates SP MUST publish the '
    'volume in readonly mode."',
    fix="Mount read-only (for a bind mount: bind, then remount with MS_RDONLY).",
)
def publish_readonly(ctx: CsiContext) -> None:
    vol = ctx.create()
    pub = ctx.publish(vol, "ro", readonly=True)
    if not is_mount(pub.target):
        raise Skipped(f"nothing is mounted at {pub.target} to test (see csi-publish-mounts)")
    try:
        _write(pub.target / PROBE_FILE, "x")
    except OSError as e:
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return
        raise
    raise CheckFailed(f"a file was written under {pub.target}, published with readonly=true")


@check(
    "csi-unpublish",
    title="NodeUnpublish removes the mount, and is idempotent",
    checks="NodeUnpublishVolume of a published target: OK, the target is no longer a mount and "
    "the directory the plugin made there is gone; the same call again: OK; of a target path "
    "the volume was never published at: OK.",
    why="The orchestrator retries NodeUnpublish until it gets OK and then considers the "
    "volume free: a mount left behind keeps the volume in use on this node (a single-node "
    "volume cannot move; the storage cannot be deleted), an error on the retry blocks the "
    "workload's teardown for ever.",
    engine=f'{SPEC}, NodeUnpublishVolume: "This RPC MUST undo the work by the corresponding '
    'NodePublishVolume"; "This operation MUST be idempotent"; "The SP MUST delete the '
    'file or directory it created at this path."',
    fix="Unmount target_path (all layers), remove the directory, answer OK also when there "
    "is nothing to unmount.",
    tolerated="the target directory left after the unmount (kubelet removes it itself; it "
    "bites orchestrators that do not); an error for a target never published (the spec "
    "only requires idempotency; it bites a CO that unpublishes after a node reboot).",
)
def unpublish(ctx: CsiContext) -> None:
    vol = ctx.create()
    pub = ctx.publish(vol)
    if not is_mount(pub.target):
        raise Skipped(
            f"NodePublishVolume mounted nothing at {pub.target}: no mount to see "
            "removed (see csi-publish-mounts)"
        )
    ctx.unpublish(pub)
    if is_mount(pub.target):
        ctx.published.append(pub)  # cleanup tries again; the end of the report lists it
        raise CheckFailed(f"NodeUnpublishVolume answered OK but {pub.target} is still mounted")
    if os.path.lexists(pub.target):
        ctx.warn(
            f"NodeUnpublishVolume left the target path {pub.target} (the SP MUST delete it)",
            "orchestrators that do not remove it themselves",
        )
    ctx.unpublish(pub)
    never = pb.NodeUnpublishVolumeRequest(
        volume_id=vol.volume_id, target_path=str(ctx.path("target", "never"))
    )
    a = ctx.call("NodeUnpublishVolume", never)
    if not a.ok:
        ctx.warn(
            f"NodeUnpublishVolume of a target never published: {a.describe()}",
            "a CO that unpublishes what a node reboot already unmounted",
        )


@check(
    "csi-volume-stats",
    title="NodeGetVolumeStats on a published path",
    checks="With GET_VOLUME_STATS: NodeGetVolumeStats of a published target answers OK with "
    "usage, each entry with non-negative numbers.",
    why="Orchestrators poll it for every published volume (kubelet's volume metrics and "
    "disk-pressure eviction); errors flood their logs and hide full volumes.",
    engine=f"{SPEC}, NodeGetVolumeStats: MUST be implemented when GET_VOLUME_STATS is "
    "advertised; usage is a list of VolumeUsage.",
    fix="statvfs the volume path; answer bytes and inodes.",
)
def volume_stats(ctx: CsiContext) -> None:
    if NodeRPC.GET_VOLUME_STATS not in ctx.node_caps():
        raise Skipped("the node does not offer GET_VOLUME_STATS")
    vol = ctx.create()
    pub = ctx.publish(vol)
    req = pb.NodeGetVolumeStatsRequest(volume_id=vol.volume_id, volume_path=str(pub.target))
    r = ctx.ok("NodeGetVolumeStats", req, repr(vol.volume_id))
    if not r.usage:
        ctx.warn("NodeGetVolumeStats: no usage entries", "when the CO alerts on full volumes")
    for u in r.usage:
        if min(u.total, u.available, u.used) < 0:
            raise CheckFailed(f"NodeGetVolumeStats: negative usage {u}")


@check(
    "csi-publish-unknown",
    title="NodePublish (or NodeStage) of an unknown volume is NOT_FOUND",
    checks="NodeStageVolume (when the node stages) or else NodePublishVolume of a volume_id "
    "that was never created, with an empty volume context: NOT_FOUND, nothing mounted.",
    why="An OK for a volume that does not exist hands the workload an empty directory: it "
    "writes data that belongs to no volume and is lost.",
    engine=f"{SPEC}, NodeStageVolume and NodePublishVolume errors: 5 NOT_FOUND when the "
    "volume does not exist.",
    fix="Look the volume up before staging or publishing; refuse an unknown id with NOT_FOUND.",
    tolerated="another error code: nothing is mounted; it bites tools that read the code.",
)
def publish_unknown(ctx: CsiContext) -> None:
    fake = pb.Volume(volume_id=UNKNOWN)
    if ctx.stages():
        staging = ctx.path("stage", "unknown")
        ctx.staged.append((UNKNOWN, staging))
        rpc, a = "NodeStageVolume", ctx.call("NodeStageVolume", ctx.stage_request(fake, staging))
    else:
        target = ctx.path("target", "unknown")
        ctx.published.append(Published(UNKNOWN, target, None))
        rpc = "NodePublishVolume"
        a = ctx.call(rpc, ctx.publish_request(fake, target, None))
    if a.ok:
        raise CheckFailed(f"{rpc} of {UNKNOWN!r} (never created) answered OK; expected NOT_FOUND")
    if a.code != NOT_FOUND:
        ctx.warn(f"{rpc} of an unknown volume: {a.describe()}", "tools that read the code")


@check(
    "csi-lifecycle",
    title="Create, publish, unpublish, delete: the volume is gone",
    checks="A volume created, staged and published (as the node offers), written, then "
    "unpublished, unstaged and deleted: every call OK; afterwards ValidateVolumeCapabilities "
    "is NOT_FOUND and ListVolumes (when offered) no longer lists it.",
    why="This is every workload's life; a DeleteVolume refused after a clean unpublish, or a "
    "volume that survives it, leaks storage the orchestrator believes freed.",
    engine=f"{SPEC}, DeleteVolume after NodeUnpublishVolume and NodeUnstageVolume (the "
    "lifecycle of a volume, section 'Volume Lifecycle').",
    fix="Release everything a stage or publish holds when it is undone; delete the storage "
    "on DeleteVolume.",
)
def lifecycle(ctx: CsiContext) -> None:
    vol = ctx.create()
    pub = ctx.publish(vol)
    if is_mount(pub.target):
        _write(pub.target / PROBE_FILE, "data")
    ctx.unpublish_all(pub)
    ctx.delete(vol.volume_id)
    req = pb.ValidateVolumeCapabilitiesRequest(
        volume_id=vol.volume_id, volume_capabilities=[mount_capability()]
    )
    a = ctx.call("ValidateVolumeCapabilities", req)
    if a.code != NOT_FOUND:
        raise CheckFailed(
            f"ValidateVolumeCapabilities {vol.volume_id!r} after DeleteVolume: "
            f"{a.describe()}; expected NOT_FOUND (is it still there?)"
        )
    if ControllerRPC.LIST_VOLUMES in ctx.controller_caps():
        listed = ctx.ok("ListVolumes", pb.ListVolumesRequest())
        if any(e.volume.volume_id == vol.volume_id for e in listed.entries):
            raise CheckFailed(f"ListVolumes still lists {vol.volume_id!r} after DeleteVolume")


SUITE: tuple[Check[CsiContext], ...] = (
    # identity
    plugin_info,
    plugin_capabilities,
    probe,
    # controller
    create_idempotent,
    create_incompatible,
    create_no_name,
    create_no_capabilities,
    delete_idempotent,
    validate_capabilities,
    list_volumes,
    get_capacity,
    expand_volume,
    # node
    node_info,
    node_capabilities,
    stage_idempotent,
    publish_idempotent,
    publish_is_the_volume,
    publish_readonly,
    unpublish,
    volume_stats,
    publish_unknown,
    # ordering and cleanup
    lifecycle,
)

#: The checks by name (read-only).
CHECKS: Mapping[str, Check[CsiContext]] = MappingProxyType({k.name: k for k in SUITE})
assert len(CHECKS) == len(SUITE), "two CSI checks share a name"


def select(
    only: list[str] | tuple[str, ...] = (), skip: list[str] | tuple[str, ...] = ()
) -> list[Check[CsiContext]]:
    """The checks to run, in suite order; unknown names raise ``KeyError`` with the choices."""
    for name in [*only, *skip]:
        if name not in CHECKS:
            raise KeyError(f"unknown CSI check {name!r}; the checks are: {', '.join(CHECKS)}")
    return [k for k in SUITE if (not only or k.name in only) and k.name not in skip]
