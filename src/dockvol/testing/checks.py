"""The non-destructive checks of the Docker volume suite (listed, in order, in ``catalog.py``).

Each check's words (``checks``, ``why``, ``engine``, ``fix``, ``tolerated``) are rendered into
docs/conformance.md by ``docs.py``; edit them here, never in the doc.
"""

from __future__ import annotations

import os
import posixpath
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._http import ACCEPT, USER_AGENT
from .suite import Context, new_id
from .verdict import CheckFailed, Hang, Skipped, check

ENGINES = "engines 20.10 to 26.1"

# -- wire ----------------------------------------------------------------------------------


@check(
    "activate",
    title="Plugin.Activate answers at once with VolumeDriver",
    checks="An empty POST to `/Plugin.Activate` answers HTTP 200 with a JSON object whose "
    "`Implements` contains `VolumeDriver`. Taking over a second is a warning.",
    why="A legacy plugin is activated once per engine lifetime with an empty body; without "
    "`VolumeDriver` in `Implements` the engine never uses it as a volume driver: every "
    "`docker volume create -d` fails.",
    engine=f"`pkg/plugins/client.go` and `plugins.go`: Activate once per engine lifetime, empty "
    f"body, `Manifest.Implements` ({ENGINES}).",
    fix='Reply `{"Implements": ["VolumeDriver"]}` with HTTP 200 to an empty POST, immediately; '
    "do no initialisation in Activate.",
    tolerated="A slow Activate (over 1 s): the engine waits, but every first use of the driver "
    "after an engine start waits with it.",
)
def activate(ctx: Context) -> None:
    r = ctx.call("Plugin.Activate", raw=b"")
    if r.status != 200:
        raise CheckFailed(f"Activate: expected HTTP 200, got {r.describe()}")
    out = ctx.decode(r)
    if out.get("Err"):
        raise CheckFailed(f"Activate: Err {out['Err']!r}")
    impl = out.get("Implements") or []
    if "VolumeDriver" not in impl:
        raise CheckFailed(f"Activate: Implements is {impl!r}, it must contain 'VolumeDriver'")
    if r.seconds > 1.0:
        ctx.warn(f"Activate took {r.seconds:.2f}s", "at every first use after an engine start")


@check(
    "capabilities",
    title="Capabilities reports a scope",
    checks="`VolumeDriver.Capabilities` answers HTTP 200 with a JSON object the engine decodes. "
    "A missing or unknown `Scope` is a warning.",
    why="The engine asks for Capabilities on every lookup of a managed plugin; a failure or an "
    "unreadable reply is retried on the next lookup.",
    engine=f"`volume/drivers/adapter.go` and `extpoint.go`: any failure or any Scope other "
    f"than `global` means `local` ({ENGINES}).",
    fix='Reply `{"Capabilities": {"Scope": "local"}}` (or `"global"`), from memory, fast.',
    tolerated="No `Scope`, or a scope other than `local` and `global`: the engine treats it as "
    "`local`, which bites when the volumes are really shared between hosts (Swarm then treats "
    "them as per-node).",
)
def capabilities(ctx: Context) -> None:
    out = ctx.ok("VolumeDriver.Capabilities", {})
    caps = out.get("Capabilities")
    scope = (caps or {}).get("Scope")
    if not scope:
        ctx.warn("Capabilities has no Scope: the engine assumes 'local'", "for shared storage")
    elif scope not in ("local", "global"):
        ctx.warn(
            f"Scope is {scope!r}; the engine knows only 'local' and 'global' and takes it as "
            f"'local'",
            "when the volumes are shared between hosts (Swarm treats them as per-node)",
        )


@check(
    "request-tolerance",
    title="Docker-shaped requests are accepted",
    checks="List as sent by engine 20.10 (empty `Host`, no `Content-Type`), by newer engines "
    "(`Host: plugin.moby.localhost`) and by Go over TCP (`Accept-Encoding: gzip`) succeeds; "
    "a Get whose body ends with a newline succeeds.",
    why="Frameworks that require a JSON content type or a Host header refuse every call the "
    "engine makes: nothing works.",
    engine="`pkg/plugins/client.go`: no Content-Type; Host empty on 20.10, 23.0.0-23.0.6 and "
    "24.0.0-24.0.4, `plugin.moby.localhost` on newer engines (26.1 seen here); bodies written "
    "by Go's JSON encoder end with a newline.",
    fix="Parse the body as JSON whatever the headers say; never require Content-Type or Host; "
    "accept trailing whitespace after the JSON value.",
)
def request_tolerance(ctx: Context) -> None:
    variants: list[tuple[str, str | None, list[tuple[str, str]] | None]] = [
        ("engine 20.10 (empty Host, no Content-Type)", "", None),
        ("newer engines (Host plugin.moby.localhost)", "plugin.moby.localhost", None),
        (
            "Go over TCP (Accept-Encoding: gzip)",
            None,
            [
                ("User-Agent", USER_AGENT),
                ("Content-Length", "3"),
                ("Accept", ACCEPT),
                ("Accept-Encoding", "gzip"),
            ],
        ),
    ]
    for label, host, headers in variants:
        r = ctx.call("VolumeDriver.List", {}, host=host, headers=headers)
        if r.status != 200 or r.object() is None or r.err:
            raise CheckFailed(f"List as sent by {label}: {r.describe()}")
    name = ctx.name()
    ctx.create(name)
    # A name-carrying body with its trailing newline, as Go's encoder writes it.
    r = ctx.call("VolumeDriver.Get", raw=b'{"Name":"' + name.encode() + b'"}\n')
    if r.status != 200 or r.err:
        raise CheckFailed(f"Get with a trailing newline: {r.describe()}")


@check(
    "keep-alive",
    title="Kept-alive connections stay usable after idling",
    checks="Three Lists on one kept-alive connection; the connection idles for `--idle-seconds` "
    "(6 s) and is used again. Skipped when the plugin closes every connection after its reply "
    "(safe: there is then no idle connection to close).",
    why="If the plugin closes an idle connection, the engine's next POST on it fails, is not "
    "replayed by Go's transport, and the engine's own retry re-sends it a second later, "
    "possibly with an empty body and possibly after the first attempt was executed.",
    engine="`pkg/plugins/client.go` (Go `net/http` Transport): connections kept alive, never "
    f"closed when idle on 20.10; POST never replayed ({ENGINES}).",
    fix="Disable or lengthen the server's idle (keep-alive) timeout to minutes, not seconds "
    "(uvicorn: `timeout_keep_alive`; Go: leave `IdleTimeout` at 0).",
)
def keep_alive(ctx: Context) -> None:
    with ctx.client.connection() as conn:
        for _ in range(3):
            r = ctx.call("VolumeDriver.List", {}, conn=conn)
            if r.status != 200:
                raise CheckFailed(f"List on a kept-alive connection: {r.describe()}")
        if conn.reconnects > 0:
            raise Skipped("the plugin closes the connection after every reply (safe, slower)")
        deadline = time.monotonic() + ctx.config.idle_seconds
        while time.monotonic() < deadline:  # idling is the point of this check
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        try:
            ctx.call("VolumeDriver.List", {}, conn=conn)
        except CheckFailed as e:
            if isinstance(e, Hang):
                raise
            raise CheckFailed(
                f"the plugin closed a connection idle for {ctx.config.idle_seconds:g}s "
                f"({e}); the engine would see an error on its next call"
            ) from e
        if conn.reconnects > 0:
            raise CheckFailed(
                f"the plugin closed a connection idle for {ctx.config.idle_seconds:g}s"
            )


_NAMED = (
    "VolumeDriver.Create",
    "VolumeDriver.Get",
    "VolumeDriver.Mount",
    "VolumeDriver.Path",
    "VolumeDriver.Unmount",
    "VolumeDriver.Remove",
)


@check(
    "empty-body",
    title="Empty bodies (engine retries) harm nothing",
    checks="Create, Get, Mount, Path, Unmount and Remove with an empty body answer in time "
    "(any error is fine: an `Err`, or any status other than 200 with any body); Get reports "
    'no volume; no volume named `""` appears in List. List and Capabilities with an empty '
    "body should succeed like `{}` (a warning otherwise).",
    why="After a transport error the engine retries, and the retry can arrive with an empty "
    'body. A plugin that acts on it (creates a volume named `""`, reports a volume) turns a '
    "hiccup into a wrong state; refusing it only fails the command that had already hit the "
    "transport error.",
    engine="`pkg/plugins/client.go` `callWithRetry` reuses a request body already consumed "
    "(seen on 20.10.24: a Create whose connection dropped was re-sent with `Content-Length: "
    "0`). Any status other than 200 is an error whose text is `Err` or else the raw body, so "
    f"a `400 EOF` from a Go helper library is an ordinary error ({ENGINES}).",
    fix='Treat an empty body as `{}`; refuse calls without a Name with `{"Err": "..."}`; never '
    'create or remove a volume named `""`.',
    tolerated="List or Capabilities refusing an empty body: only a List retried after a "
    "transport error fails (`docker volume ls` then warns that this driver failed); Capabilities "
    "failing means `local` and is asked again.",
)
def empty_body(ctx: Context) -> None:
    for ep in ("VolumeDriver.List", "VolumeDriver.Capabilities"):
        r = ctx.call(ep, raw=b"")
        if r.status != 200 or r.err or r.object() is None:
            ctx.warn(
                f"{ep} with an empty body fails ({r.describe()})",
                f"only when the engine retries a {ep.split('.')[1]} after a transport error",
            )
    ctx.created.add("")  # if the plugin creates a volume named "", clean it up
    for ep in _NAMED:
        r = ctx.call(ep, raw=b"")
        if ep == "VolumeDriver.Get" and r.status == 200 and not r.err:
            vol = (r.object() or {}).get("Volume")
            if vol:
                raise CheckFailed(f"Get with an empty body reported a volume: {vol!r}")
    names = ctx.list_names()
    if "" in names:
        raise CheckFailed('after requests with empty bodies, List shows a volume named ""')
    ctx.created.discard("")


@check(
    "reply-shape",
    title="Every endpoint replies HTTP 200 with a JSON object",
    checks="A fresh volume's Create, Get, List, Mount, Path, Unmount and Remove each answer "
    "HTTP 200 with a JSON object the engine's Go types decode, with no `Err`; Path returns the "
    "same Mountpoint as Mount.",
    why="Only 200 is success; an empty body is an `EOF` error; a field of the wrong type (a "
    "number for `Mountpoint`, a string for `Volumes`) fails the whole call, and the user's "
    "command with it.",
    engine="`pkg/plugins/client.go` (only 200 is success; the body is decoded into Go "
    "structs), `volume/drivers/proxy.go` (reply types); keys are matched case-insensitively "
    f"and unknown keys ignored, as the kit does ({ENGINES}).",
    fix="Reply `{}` for plain success and the documented fields otherwise, with status 200; "
    "keep field types (strings, objects, arrays) exactly as documented; answer Path like Mount "
    "while the volume is mounted.",
)
def reply_shape(ctx: Context) -> None:
    name, mid = ctx.name(), new_id()
    ctx.create(name, {})
    ctx.ok("VolumeDriver.Get", {"Name": name})
    ctx.ok("VolumeDriver.List", {})
    path = ctx.mount(name, mid)
    got = ctx.ok("VolumeDriver.Path", {"Name": name}).get("Mountpoint")
    if got != path:
        raise CheckFailed(f"Path returned Mountpoint {got!r} while Mount returned {path!r}")
    ctx.unmount(name, mid)
    ctx.remove(name)


@check(
    "error-replies",
    title="Errors are errors, readable ones",
    checks="Mount and Path of a volume that does not exist are refused. An error that is not "
    "a JSON object with `Err` (plain text, HTML) is a warning.",
    why="A Mount that succeeds for a volume that does not exist gives a container a path "
    "with nobody's data. The user reads the error text: `Err` as is with HTTP 200, prefixed "
    "with `VolumeDriver.Mount: ` with another status.",
    engine="`pkg/plugins/client.go`: any status other than 200 is an error; its text is the "
    f"JSON `Err` field if there is one, else the raw body ({ENGINES}).",
    fix='Answer every failure with `{"Err": "what went wrong and what to do"}`, preferably '
    "with HTTP 200; never an HTML or plain-text error page or a stack trace.",
    tolerated="A non-JSON error body: the engine shows it verbatim; it bites when it is an HTML "
    "page or a stack trace.",
)
def error_replies(ctx: Context) -> None:
    missing = ctx.name("missing")
    ctx.track(missing)
    ctx.refused("VolumeDriver.Mount", {"Name": missing, "ID": new_id()})
    r = ctx.call("VolumeDriver.Path", {"Name": missing})
    if r.status == 200 and not r.err and (r.object() or {}).get("Mountpoint"):
        ctx.warn(
            f"Path of a volume that does not exist answered a Mountpoint ({r.describe()})",
            "on engines before 20.10, which still call Path",
        )
    ctx.untrack(missing)


# -- volumes -------------------------------------------------------------------------------


@check(
    "get-created-at",
    title="CreatedAt parses as the engine parses it",
    checks="`CreatedAt` in Get (fresh and mounted) and in List is absent, `null`, or RFC 3339 "
    "as Go parses it: `2006-01-02T15:04:05Z` or `+07:00`, optional fraction, upper-case `T` "
    "and `Z`, values in range. The kit accepts only what both old and new Go parsers accept "
    "(engine 20.10.24 still accepts a one-digit hour or a comma before the fraction, newer "
    'engines refuse them). `""` fails. A test feeds the same Get replies to a real engine and '
    "to the kit's decoder and requires the kit never to accept what the engine refuses.",
    why="A `CreatedAt` the engine cannot parse fails Get, and a failed Get makes the engine "
    "forget the volume with its labels and options. It is the most common bug among volume "
    "plugins.",
    engine="`volume/drivers/adapter.go`: CreatedAt parsed with Go's `time.RFC3339`; strict "
    "since Go 1.20 (engines 24 and later), lenient on 20.10.",
    fix="Record the creation time once and send it as RFC 3339 UTC "
    '(`2026-11-28T11:00:00.123456Z`), or leave the field out; never `"CreatedAt": ""`.',
)
def get_created_at(ctx: Context) -> None:
    ctx.strict = {"time"}
    name, mid = ctx.name(), new_id()
    ctx.create(name)
    ctx.must_exist(name)  # decoding validates CreatedAt
    ctx.mount(name, mid)
    ctx.must_exist(name, " while mounted")
    ctx.ok("VolumeDriver.List", {})
    if "CreatedAt" not in ctx.must_exist(name):
        ctx.info("Get has no CreatedAt (allowed; docker volume inspect shows none)")


@check(
    "get-status",
    title="Status is an object",
    checks="`Status` in Get (fresh and mounted) and in List is absent, `null` or a JSON object.",
    why="`Status` is decoded into a Go map: a string, number or array there fails the whole "
    "Get, and the engine then forgets the volume.",
    engine=f"`volume/drivers/proxy.go`: `Status map[string]interface{{}}` ({ENGINES}).",
    fix='Send `"Status"` as a JSON object (`{"size": "1G"}`) or leave it out.',
)
def get_status(ctx: Context) -> None:
    ctx.strict = {"map"}
    name, mid = ctx.name(), new_id()
    ctx.create(name)
    ctx.must_exist(name)
    ctx.mount(name, mid)
    ctx.must_exist(name, " while mounted")
    ctx.ok("VolumeDriver.List", {})


@check(
    "get-not-found",
    title="'Not found' is said the way the engine understands",
    checks="Get of a name that does not exist answers an error (an `Err`, or any status other "
    "than 200) or a `null` (or absent) Volume; it must not report a volume. An error that is "
    "not JSON is a warning.",
    why="The engine sends Get before every Create and to every driver for a name it does not "
    "know (`-v name:/data` without a driver). A plugin that claims unknown volumes makes "
    "`docker volume create` a silent no-op and captures other drivers' volumes.",
    engine="`volume/drivers/adapter.go` Get: any error, or `Volume == nil`, means no such "
    f"volume ({ENGINES}).",
    fix='Reply `{"Err": "no such volume"}`.',
    tolerated="A non-JSON error (`404 page not found`): the engine reads it as 'not found' "
    "like any error; it bites only callers that show the text.",
)
def get_not_found(ctx: Context) -> None:
    name = ctx.name("missing")
    r = ctx.call("VolumeDriver.Get", {"Name": name})
    if r.err:
        return
    if r.status != 200 or r.object() is None:
        ctx.warn(f"Get of an unknown name: {r.describe()}", "only callers that show the text")
        return
    if ctx.decode(r).get("Volume"):
        ctx.track(name)
        raise CheckFailed(f"Get of the unknown name {name!r} reported a volume")


@check(
    "create-idempotent",
    title="Create takes Opts as null or {} and repeats harmlessly",
    checks="Create with `Opts` `null` and with `{}` (or with the options given by `-o`) "
    "succeeds; a second Create of the same name leaves exactly one volume, listed once. An "
    "error on the second Create is a warning.",
    why="The engine sends `Opts` as `null` or `{}` when the user gave no options: a plugin "
    "refusing them cannot be used without `-o`. A Create that duplicates or loses the volume "
    "corrupts what `docker volume ls` shows.",
    engine="`volume/service`: Get, then Create only if Get said not found, under a lock per "
    f"name; a retried Create arrives with an empty body ({ENGINES}).",
    fix="When the volume exists with the same options, reply `{}`; accept Opts `null`, `{}` "
    "or a map.",
    tolerated="An error on a second Create: one engine never sends it (it asks Get first); it "
    "bites with a `global` scope used by several engines (Swarm creates the volume on every "
    "node a task lands on) and with callers that are not the engine.",
)
def create_idempotent(ctx: Context) -> None:
    opts: dict[str, str] | None
    if ctx.config.opts is not None:
        ctx.info("Create with the configured options only; Opts null and {} not tried")
    for opts in (None, {}) if ctx.config.opts is None else ({"configured": "yes"},):
        name = ctx.name()
        ctx.create(name, opts)
        r = ctx.call("VolumeDriver.Create", {"Name": name, "Opts": ctx.opts(name, opts)})
        if r.status != 200 or r.err or r.object() is None:
            ctx.warn(
                f"a second Create of an existing volume fails ({r.err or r.describe()})",
                "with a global scope used by several engines (Swarm) or a non-engine caller",
            )
        ctx.must_exist(name, " after a repeated Create")
        if ctx.list_names().count(name) != 1:
            raise CheckFailed(f"List shows {name!r} other than exactly once after two Creates")


@check(
    "mount-path",
    title="Mount returns a usable, distinct path",
    checks="Mount returns an absolute, normalised path; two volumes get different paths; "
    "Get's `Mountpoint`, if sent, agrees with Mount. Whether the path is a directory on the "
    "kit's host is reported, not judged (a managed plugin's paths live under its "
    "`propagatedMount`).",
    why="The engine bind-mounts the path into containers; a shared path mixes two volumes' "
    "data, a relative or non-existent path fails container start with an opaque error.",
    engine="`volume/mounts`: the Mountpoint is bind-mounted; managed plugins: mapped to the "
    f"host by a string-prefix match on `propagatedMount` ({ENGINES}).",
    fix="One directory per volume under the plugin's root (managed: strictly under "
    '`propagatedMount + "/"`), derived from a safe key rather than the raw name.',
)
def mount_path(ctx: Context) -> None:
    a, b = ctx.name(), ctx.name()
    ctx.create(a)
    ctx.create(b)
    pa, pb = ctx.mount(a, new_id()), ctx.mount(b, new_id())
    for p in (pa, pb):
        if not p.startswith("/") or (posixpath.normpath(p) != p.rstrip("/") and p != "/"):
            raise CheckFailed(f"Mountpoint {p!r} is not an absolute, normalised path")
        if not os.path.isdir(p):
            ctx.info(f"Mountpoint {p!r} is not a directory on this host (a managed plugin?)")
    if pa == pb:
        raise CheckFailed(f"two volumes share the Mountpoint {pa!r}")
    vm = ctx.must_exist(a).get("Mountpoint")
    if vm and vm != pa:
        raise CheckFailed(f"Get returned Mountpoint {vm!r} while Mount returned {pa!r}")


@check(
    "mount-same-id",
    title="Mount twice with one ID returns the same path",
    checks="Mount twice with one ID returns the same path both times; two Unmounts with that "
    "ID succeed.",
    why="`docker cp` on a running container mounts the volume again with the same mount ID; "
    "an error fails the copy, a different path copies into the wrong place.",
    engine="the daemon's archive path mounts a container's volumes again with the same IDs "
    f"({ENGINES}).",
    fix="A Mount with an ID that is already mounted returns the same path and succeeds.",
)
def mount_same_id(ctx: Context) -> None:
    name, mid = ctx.name(), new_id()
    ctx.create(name)
    p1 = ctx.mount(name, mid)
    p2 = ctx.mount(name, mid)
    if p1 != p2:
        raise CheckFailed(f"the second Mount with one ID returned {p2!r}, the first {p1!r}")
    ctx.unmount(name, mid)
    ctx.unmount(name, mid)


@check(
    "unmount-unknown-id",
    title="Unmount of an unknown ID disturbs nothing",
    checks="Unmount with an ID the plugin never saw, before and while the volume is mounted by "
    "another ID, leaves the other mount in place (same Mountpoint, still in use). An error "
    "answer is a warning.",
    why="After a failed Mount or a plugin restart the engine can send an Unmount the plugin "
    "never saw. A plugin that then releases the volume pulls it from under running "
    "containers.",
    engine="`volume/mounts` Cleanup sends Unmount with the ID of the mount point; the daemon "
    "only logs a failed Unmount (`Failed to umount volumes`), `docker stop` and `rm` succeed "
    f"({ENGINES}).",
    fix="Treat Unmount with an unknown ID as success, without touching other IDs' mounts.",
    tolerated="An error for an unknown ID: the engine logs it; it bites callers that are not "
    "the engine (orchestrators that retry or stop on a failed unmount).",
)
def unmount_unknown_id(ctx: Context) -> None:
    name, id1, id2 = ctx.name(), new_id(), new_id()
    ctx.create(name)
    errors = []
    r = ctx.call("VolumeDriver.Unmount", {"Name": name, "ID": new_id()})
    if r.status != 200 or r.err or r.object() is None:
        errors.append(r.err or r.describe())
    path = ctx.mount(name, id1)
    r = ctx.call("VolumeDriver.Unmount", {"Name": name, "ID": new_id()})
    if r.status != 200 or r.err or r.object() is None:
        errors.append(r.err or r.describe())
    if ctx.refuses_remove_in_use():
        _still_in_use(ctx, name, "after an Unmount with an unknown ID")
    if ctx.mount(name, id2) != path:
        raise CheckFailed("an Unmount with an unknown ID changed the volume's Mountpoint")
    ctx.unmount(name, id1)
    ctx.unmount(name, id2)
    if errors:
        ctx.warn(
            f"Unmount of an unknown ID fails ({errors[0]})",
            "with callers that are not the engine",
        )


def _still_in_use(ctx: Context, name: str, when: str) -> None:
    r = ctx.call("VolumeDriver.Remove", {"Name": name})
    if r.status == 200 and not r.err and r.object() is not None:
        ctx.untrack(name)
        raise CheckFailed(
            f"{when}, Remove of {name!r} succeeded: the volume was released under the "
            f"container still using it"
        )


@check(
    "remove-while-mounted",
    title="Remove is refused while mounted",
    checks="Remove of a mounted volume is refused; the volume still exists; after the "
    "Unmount, Remove succeeds. A Remove that succeeds while mounted is a warning.",
    why="Removing a volume under a live mount deletes data a container is using. Through one "
    "engine this cannot happen: the engine refuses to remove a volume any container uses.",
    engine="`volume/service` Remove: the engine refuses `docker volume rm` (even `-f`) of a "
    f"volume a container references, before asking the plugin ({ENGINES}).",
    fix="Refuse Remove with an Err while any mount ID holds the volume; allow it after the "
    "last Unmount.",
    tolerated="Removing a mounted volume: it bites with a `global` scope shared by several "
    "engines (another host removes what this one uses) and with callers that are not the "
    "engine. The checks that observe 'still in use' through a refused Remove "
    "(`mount-same-id-counted`, `mount-concurrent`, the crash checks) then skip that "
    "observation.",
)
def remove_while_mounted(ctx: Context) -> None:
    name, mid = ctx.name(), new_id()
    ctx.create(name)
    ctx.mount(name, mid)
    r = ctx.call("VolumeDriver.Remove", {"Name": name})
    if r.status == 200 and not r.err and r.object() is not None:
        ctx.untrack(name)
        ctx.warn(
            "Remove of a mounted volume succeeded",
            "with a global scope shared by several engines, or a caller that is not the engine",
        )
        return
    ctx.must_exist(name, " after a refused Remove")
    ctx.unmount(name, mid)
    ctx.remove(name)


@check(
    "mount-same-id-counted",
    title="A second Mount with one ID is counted",
    checks="Mount, Mount, Unmount with one ID leaves the volume in use (Remove still refused); "
    "the second Unmount frees it. Skipped when 'in use' cannot be observed "
    "(`remove-while-mounted` did not pass) or `mount-same-id` failed.",
    why="`docker cp` on a running container mounts with the same ID and unmounts once "
    "afterwards; a plugin that keeps IDs in a set then releases (for a real filesystem, "
    "unmounts) the volume under the running container.",
    engine=f"the daemon's archive path: Mount(ID) again, then Unmount(ID) ({ENGINES}).",
    fix="Count mounts per ID; release the volume only when every count is back to zero.",
)
def mount_same_id_counted(ctx: Context) -> None:
    if not ctx.refuses_remove_in_use():
        raise Skipped("'in use' is observed through a refused Remove, which this plugin allows")
    if ctx.outcome("mount-same-id") not in (None, "pass", "warn"):
        raise Skipped("builds on mount-same-id, which failed in this run")
    name, mid = ctx.name(), new_id()
    ctx.create(name)
    ctx.mount(name, mid)
    ctx.mount(name, mid)
    ctx.unmount(name, mid)
    r = ctx.call("VolumeDriver.Remove", {"Name": name})
    if r.status == 200 and not r.err:
        ctx.untrack(name)
        raise CheckFailed(
            "after Mount, Mount, Unmount with one ID, Remove succeeded: the second Mount was "
            "not counted, and the volume was released under the container still using it"
        )
    ctx.unmount(name, mid)
    ctx.remove(name)


@check(
    "mount-concurrent",
    title="Concurrent Mounts and Unmounts of one volume",
    checks="16 Mounts of one volume with 16 IDs at once all return the same path; the IDs are "
    "released one at a time and, until the last, the volume stays in use; after the last, "
    "Remove succeeds. Three rounds with different release orders, because which update a race "
    "loses depends on timing ('in use' is observed only when `remove-while-mounted` passed; "
    "otherwise one round checks paths and that nothing is stuck).",
    why="Containers start and stop in parallel; lost updates to the mount records leave "
    "volumes released under running containers or stuck in use forever.",
    engine="the daemon mounts each container's volumes on its own goroutine; `docker compose "
    f"up` starts services in parallel ({ENGINES}).",
    fix="Serialise changes per volume (a lock, or a transaction) and keep a count per mount ID.",
)
def mount_concurrent(ctx: Context) -> None:
    counts = ctx.refuses_remove_in_use()
    for order in ("reverse", "forward", "shuffle")[: 3 if counts else 1]:
        _mount_round(ctx, counts, order)


def _mount_round(ctx: Context, counts: bool, order: str) -> None:
    name = ctx.name()
    ctx.create(name)
    ids = [new_id() for _ in range(ctx.config.concurrency)]
    with ThreadPoolExecutor(len(ids)) as pool:
        paths = set(pool.map(lambda i: ctx.mount(name, i), ids))
    if len(paths) != 1:
        raise CheckFailed(f"concurrent Mounts of one volume returned different paths: {paths}")
    if order == "reverse":
        ids.reverse()
    elif order == "shuffle":
        random.shuffle(ids)
    for k, i in enumerate(ids[:-1]):
        ctx.unmount(name, i)
        if counts:
            r = ctx.call("VolumeDriver.Remove", {"Name": name})
            if r.status == 200 and not r.err:
                ctx.untrack(name)
                raise CheckFailed(
                    f"after {len(ids)} concurrent Mounts and {k + 1} Unmounts, Remove "
                    f"succeeded: concurrent Mounts were lost (a race on the mount records)"
                )
    ctx.unmount(name, ids[-1])
    r = ctx.call("VolumeDriver.Remove", {"Name": name})
    if r.status != 200 or r.err:
        raise CheckFailed(
            f"after all {len(ids)} IDs unmounted, Remove still fails ({r.err or r.describe()}): "
            f"a reference count is stuck"
        )
    ctx.untrack(name)


@check(
    "answers-while-mounting",
    title="Get and List keep answering while different volumes mount",
    checks="Four volumes are mounted and unmounted at once, each by its own client, over and "
    "over for a second (at least three times), while Get and List are sent again and again. Every call must answer within "
    "`--call-timeout`; a call that does not is reported as a hang, naming the call that "
    "stopped answering and which calls still answer. Nothing is destroyed.",
    why="The engine mounts the volumes of containers that start together at once. A plugin "
    "that deadlocks there (a Mount holding a lock while it waits for something that needs the "
    "same lock) stops answering Get and List for good: every `docker` command that touches "
    "its volumes hangs until the engine gives up, and only a restart helps.",
    engine="the daemon mounts each container's volumes on its own goroutine and calls Get "
    "before every volume operation; it waits 2 min for Mount and 1 min for Get and List, then "
    f"fails the command ({ENGINES}).",
    fix="Never hold the plugin's global lock while waiting for another goroutine or thread, a "
    "channel, a mount helper or the network; take per-volume locks, and answer Get and List "
    "from a view that no Mount holds.",
)
def answers_while_mounting(ctx: Context) -> None:
    names = [ctx.name("busy") for _ in range(4)]
    for n in names:
        ctx.create(n)
    lock = threading.Lock()
    inflight = [0]
    answered_during = [0]
    hangs: list[str] = []

    t0 = time.monotonic()

    def worker(name: str) -> None:
        rounds = 0
        try:
            # At least three rounds, and a second's worth, so that Gets overlap Mounts.
            while rounds < 3 or (time.monotonic() - t0 < 1.0 and rounds < 50):
                rounds += 1
                mid = new_id()
                with lock:
                    inflight[0] += 1
                try:
                    ctx.mount(name, mid)
                    ctx.unmount(name, mid)
                finally:
                    with lock:
                        inflight[0] -= 1
        except Hang as e:
            hangs.append(f"{e.endpoint.split('.')[-1]} of {name!r}")
        except CheckFailed:
            pass  # refusals are other checks' business; this one is about answering

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in names]
    for t in threads:
        t.start()
    silent = ""
    try:
        while any(t.is_alive() for t in threads) and not hangs and not silent:
            for ep, body in (
                ("VolumeDriver.Get", {"Name": names[0]}),
                ("VolumeDriver.List", {}),
            ):
                with lock:
                    busy = inflight[0] > 0
                try:
                    ctx.call(ep, body)
                except Hang:
                    silent = ep.split(".")[1]
                    break
                if busy:
                    answered_during[0] += 1
    finally:
        for t in threads:
            t.join(ctx.config.call_timeout * 2 + 5)
    if silent or hangs:
        first = silent or hangs[0].split(" of ")[0]
        also = f"; {', '.join(hangs)} did not answer either" if silent and hangs else ""
        if not silent:
            also = f" ({', '.join(hangs)})"
        raise Hang(
            f"VolumeDriver.{first}",
            ctx.config.call_timeout,
            f"while 4 different volumes were mounted at once{also}. The engine waits 60s "
            f"for Get and List, 120s for Mount, then fails the docker command",
        )
    if answered_during[0] == 0:
        raise Skipped("no Get or List was answered while a Mount was in flight (too fast)")
    ctx.info(f"{answered_during[0]} Gets and Lists answered while Mounts were in flight")


@check(
    "list-consistency",
    title="List agrees with Create and Remove",
    checks="Five created volumes are each listed exactly once; after two are removed they are "
    "no longer listed and the other three still are.",
    why="`docker volume ls` shows List. A removed volume still listed reappears in the engine "
    "(after `docker volume rm -f` the engine forgets it, then List revives it); a volume "
    "missing from List is invisible to users.",
    engine=f"`volume/service` List: `docker volume ls` across all drivers ({ENGINES}).",
    fix="Answer List from the same registry as Get; list each volume exactly once.",
)
def list_consistency(ctx: Context) -> None:
    names = [ctx.name() for _ in range(5)]
    for n in names:
        ctx.create(n)
    listed = ctx.list_names()
    for n in names:
        if listed.count(n) != 1:
            raise CheckFailed(f"List shows {n!r} {listed.count(n)} times after Create")
    for n in names[:2]:
        ctx.remove(n)
    listed = ctx.list_names()
    for n in names[:2]:
        if n in listed:
            raise CheckFailed(f"List still shows {n!r} after Remove")
    for n in names[2:]:
        if n not in listed:
            raise CheckFailed(f"List lost {n!r} after another volume was removed")


def _p99(samples: list[float]) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * 0.99))]


def _over(samples: list[float], planned: int, budget: float) -> bool:
    """True once more samples exceed ``budget`` than the 1% a p99 may leave out."""
    return sum(x > budget for x in samples) > planned - int(planned * 0.99)


#: Seconds of the run's budget kept back for cleanup after the latency phase.
_LATENCY_RESERVE = 5.0


@check(
    "latency",
    title="Get and List stay fast at 1,000 volumes",
    checks="Runs last. `--volumes` volumes (1,000) are created by 8 clients at once, with a "
    "progress line every 5 s, within what is left of the run's `--budget`: when time runs "
    "short the phase stops creating and measures at the count reached (a warning says so). "
    "Then the p99 of Get (300 samples) must be under `--get-budget-ms` (100 ms) and of List "
    "(20 samples) under `--list-budget-ms` (1 s), and List must show every volume created. "
    "See [Budgets](#budgets).",
    why="At engine start Get is sent for every volume, one after another; Get precedes every "
    "Create, Mount, Unmount and Remove; List runs for `docker volume ls` across all drivers. "
    "Slow answers stall daemon start and every container start that uses a volume.",
    engine="`volume/service`: Get for every known volume at start and before every operation; "
    f"call deadlines 1 min (Get, List), 2 min (Create, Mount) ({ENGINES}).",
    fix="Answer Get and List from an in-memory view of the plugin's own durable registry; "
    "never call a slow backend or the driver on these paths.",
    tolerated="Create too slow to reach `--volumes` within the budget: creating volumes is "
    "not on any hot path of the engine; it bites users who create many volumes.",
    after_budget=True,
)
def latency(ctx: Context) -> None:
    if ctx.remaining() < _LATENCY_RESERVE * 2:
        _judge_what_the_run_measured(ctx)
        return
    n = ctx.config.volumes
    names = [ctx.name("lat") for _ in range(n)]
    created: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + max(0.0, ctx.remaining() - _LATENCY_RESERVE) * 0.6
    errors: list[str] = []

    def create_all(chunk: list[str]) -> None:
        with ctx.client.connection() as conn:
            for nm in chunk:
                if time.monotonic() > stop_at or errors:
                    return
                ctx.track(nm)
                r = ctx.call("VolumeDriver.Create", {"Name": nm, "Opts": ctx.opts(nm)}, conn=conn)
                if r.status != 200 or r.err:
                    errors.append(f"Create {nm!r}: {r.err or r.describe()}")
                    return
                with lock:
                    created.append(nm)

    workers = 8
    t0 = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(create_all, names[i::workers]) for i in range(workers)]
        last = t0
        while not all(f.done() for f in futures):
            time.sleep(0.1)  # waiting for the creators, printing progress now and then
            if time.monotonic() - last >= 5:
                last = time.monotonic()
                ctx.progress(f"{len(created)} of {n} volumes created, {last - t0:.0f}s")
        for f in futures:
            f.result()
    if errors:
        raise CheckFailed(errors[0])
    reached = len(created)
    if reached == 0:
        raise Skipped("no time left in the run's budget to create volumes")
    if reached < n:
        ctx.warn(
            f"only {reached} of {n} volumes were created in {time.monotonic() - t0:.0f}s of "
            f"the budget ({(time.monotonic() - t0) / reached * workers * 1000:.0f} ms per "
            f"Create); Get and List were measured at {reached}",
            "users who create many volumes (raise --budget to measure at the full count)",
        )
    ctx.progress(f"{reached} volumes; measuring Get and List")
    gets, lists = _measure(ctx, created)
    mine = {str((v or {}).get("Name")) for v in lists[1]} & set(created)
    g, li = _p99(gets), _p99(lists[0])
    ctx.info(f"at {reached} volumes: Get p99 {g:.1f} ms, List p99 {li:.1f} ms")
    ctx.progress(f"removing {reached} volumes")
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda nm: _remove_quietly(ctx, nm), created))
    if len(mine) != reached:
        raise CheckFailed(f"List shows {len(mine)} of the {reached} volumes just created")
    for what, xs, budget in (
        ("Get", gets, ctx.config.get_p99_ms),
        ("List", lists[0], ctx.config.list_p99_ms),
    ):
        if _p99(xs) > budget or _over(xs, len(xs), budget):
            slow = sum(x > budget for x in xs)
            raise CheckFailed(
                f"{what} p99 is over its budget of {budget:g} ms at {reached} volumes: {slow} "
                f"of {len(xs)} calls were slower (slowest {max(xs):.1f} ms)"
            )


def _judge_what_the_run_measured(ctx: Context) -> None:
    """No time left for the phase: judge the Gets and Lists the other checks made."""
    for what, budget in (("Get", ctx.config.get_p99_ms), ("List", ctx.config.list_p99_ms)):
        xs = [x * 1000 for x in ctx.runner.seconds.get(f"VolumeDriver.{what}", [])]
        if len(xs) >= 5 and _p99(xs) > budget:
            raise CheckFailed(
                f"{what} p99 is {_p99(xs):.0f} ms over the run's {len(xs)} calls (budget "
                f"{budget:g} ms), with only the few volumes of the other checks; the run's time "
                f"budget left no room for the {ctx.config.volumes}-volume phase"
            )
    raise Skipped(
        "no time left in the run's budget for the volume phase, and the Gets and Lists the "
        "run made were within budget; raise --budget"
    )


def _measure(ctx: Context, names: list[str]) -> tuple[list[float], tuple[list[float], Any]]:
    gets: list[float] = []
    lists: list[float] = []
    sample = random.sample(names, 300) if len(names) >= 300 else random.choices(names, k=300)
    with ctx.client.connection() as conn:
        for nm in sample:
            r = ctx.call("VolumeDriver.Get", {"Name": nm}, conn=conn)
            if r.status != 200 or r.err:
                raise CheckFailed(f"Get {nm!r} at {len(names)} volumes: {r.err or r.describe()}")
            gets.append(r.seconds * 1000)
            if _over(gets, len(sample), ctx.config.get_p99_ms):
                break  # the p99 is over budget whatever the remaining samples say
        for _ in range(20):
            r = ctx.call("VolumeDriver.List", {}, conn=conn)
            lists.append(r.seconds * 1000)
            if _over(lists, 20, ctx.config.list_p99_ms):
                break
        vols = ctx.decode(ctx.call("VolumeDriver.List", {}, conn=conn)).get("Volumes") or []
    return gets, (lists, vols)


def _remove_quietly(ctx: Context, name: str) -> None:
    if ctx.runner.quiet_call("VolumeDriver.Remove", {"Name": name}):
        ctx.untrack(name)


__all__ = [
    "activate",
    "answers_while_mounting",
    "capabilities",
    "create_idempotent",
    "empty_body",
    "error_replies",
    "get_created_at",
    "get_not_found",
    "get_status",
    "keep_alive",
    "latency",
    "list_consistency",
    "mount_concurrent",
    "mount_path",
    "mount_same_id",
    "mount_same_id_counted",
    "remove_while_mounted",
    "reply_shape",
    "request_tolerance",
    "unmount_unknown_id",
]
