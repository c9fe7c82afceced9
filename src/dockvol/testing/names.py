"""Volume names through the whole lifecycle, across a restart, and never into a shell.

The engine validates nothing in a plugin volume's name: `/`, `..`, spaces, quotes, shell
metacharacters, unicode and 255-byte names all reach the plugin as the user typed them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from .client import peer_pid
from .faults import crash_and_restart
from .suite import Context, new_id
from .verdict import CheckFailed, Skipped, check

ENGINES = "engines 20.10 to 26.1"
_WHEN_REFUSED = "for users who choose such a name: the engine accepts any name"


def odd_names(prefix: str) -> list[tuple[str, str]]:
    """(label, name): the names a plugin must keep apart and give back byte for byte."""
    return [
        ("a slash", prefix + "a/b"),
        ("a/../ that normalises onto another name", prefix + "x/../" + prefix + "y"),
        ("the name it normalises onto", prefix + "y"),
        ("a space", prefix + "sp ace"),
        ("a trailing space", prefix + "end "),
        ("quotes", prefix + 'it\'s "q"'),
        ("shell metacharacters", prefix + "a;b&c|d<e>f*g?h[i]~!#%"),
        ("a backslash", prefix + "back\\slash"),
        ("unicode", prefix + "ünïcødé-✓-雪"),
        ("255 bytes", prefix + "L" * (255 - len(prefix.encode()))),
    ]


def _ok(r: object) -> bool:
    from .client import Reply

    assert isinstance(r, Reply)
    return r.status == 200 and not r.err and r.object() is not None


def _create_all(ctx: Context, names: list[tuple[str, str]]) -> list[tuple[str, str]]:
    accepted, refused = [], []
    for label, name in names:
        r = ctx.try_create(name)
        if _ok(r):
            accepted.append((label, name))
        else:
            refused.append(f"{label} ({r.err or r.describe()})")
    if refused:
        ctx.warn(f"Create refused names with {'; '.join(refused)}", _WHEN_REFUSED)
    return accepted


def _listed_once(
    ctx: Context, accepted: list[tuple[str, str]], when: str, problems: list[str]
) -> list[tuple[str, str]]:
    """The names List and Get give back exactly; a problem is noted for each other one."""
    listed = ctx.list_names()
    good = []
    for label, name in accepted:
        if listed.count(name) != 1:
            problems.append(
                f"{when}List shows the name with {label} ({name!r}) {listed.count(name)} "
                f"times, not once"
            )
            continue
        got = ctx.get(name)
        if got is None:
            problems.append(f"{when}Get of the name with {label} ({name!r}) finds nothing")
        elif got.get("Name") != name:
            problems.append(
                f"{when}Get {name!r} ({label}) returned Name {got.get('Name')!r}: the engine "
                f"records the name the plugin returns"
            )
        else:
            good.append((label, name))
    return good


def _judge(problems: list[str]) -> None:
    if problems:
        many = f"{len(problems)} problems: " if len(problems) > 1 else ""
        raise CheckFailed(many + "; ".join(problems))


@check(
    "names",
    title="Any name lives through create, list, get, mount and remove",
    checks="Volumes named with a slash, `x/../y` beside `y`, a space, a trailing space, quotes, "
    "shell metacharacters, a backslash, unicode and 255 bytes are created, listed once and "
    "got with their exact names, mounted at distinct paths (when the paths are directories "
    "on the kit's host, a file written into one must not appear in another), unmounted and "
    "removed, and removing one leaves the others. Every problem is reported, not only the "
    "first. Refusing a name at Create is a warning.",
    why="The engine records the Name the plugin returns and validates none: a changed name "
    "makes the volume unreachable under the name the user chose; two names on one directory "
    "mix two users' data; a volume that cannot be removed stays forever.",
    engine="`volume/drivers/adapter.go` (the engine keeps the Name the plugin returns) and "
    f"`volume/service` (no validation of plugin volume names) ({ENGINES}).",
    fix="Store the name byte for byte and derive the on-disk key from it (a readable prefix "
    "and a hash), never join the name into a path or normalise it.",
    tolerated="Refusing unusual names at Create: the user gets an error and nothing is "
    "harmed; it bites users who choose such names.",
)
def names(ctx: Context) -> None:
    prefix = f"{ctx.config.prefix}{ctx.run_id}-nm{ctx.runner.seq()}-"
    accepted = _create_all(ctx, odd_names(prefix))
    problems: list[str] = []
    good = _listed_once(ctx, accepted, "", problems)
    paths: dict[str, tuple[str, str]] = {}
    ids: list[tuple[str, str]] = []
    for label, name in good:
        mid = new_id()
        try:
            path = ctx.mount(name, mid)
        except CheckFailed as e:
            problems.append(_mount_refused(label, name, str(e), paths))
            continue
        ids.append((name, mid))
        if path in paths:
            problems.append(
                f"the names with {paths[path][0]} ({paths[path][1]!r}) and with {label} "
                f"({name!r}) are mounted at one path {path!r}: two volumes share storage"
            )
            continue
        paths[path] = (label, name)
    shared = _shared_storage(ctx, paths)
    if shared:
        problems.append(shared)
    for name, mid in ids:
        ctx.unmount(name, mid)
    # Names whose Get worked: removing another name must leave them there.
    alive = {n: lbl for lbl, n in good}
    for label, name in accepted:
        r = ctx.call("VolumeDriver.Remove", {"Name": name})
        if not _ok(r):
            problems.append(
                f"Remove of the name with {label} ({name!r}) fails ({r.err or r.describe()}): "
                f"docker volume rm cannot remove it"
            )
            continue
        ctx.untrack(name)
        alive.pop(name, None)
        if ctx.get(name) is not None:
            problems.append(f"after Remove, Get still finds the name with {label}")
        for other, olabel in list(alive.items()):
            if ctx.get(other) is None:
                del alive[other]
                problems.append(
                    f"removing the name with {label} ({name!r}) also removed the one with "
                    f"{olabel} ({other!r})"
                )
    _judge(problems)


def _mount_refused(label: str, name: str, error: str, mounted: dict[str, tuple[str, str]]) -> str:
    """Why a Mount of an odd name failed, in terms of the names already mounted."""
    for path, (olabel, oname) in mounted.items():
        if path in error:
            return (
                f"Mount of the name with {label} ({name!r}) fails because the path of the name "
                f"with {olabel} ({oname!r}), {path}, is in the way: the two names collide on "
                f"one path ({error})"
            )
    return f"Mount of the name with {label} ({name!r}) fails: {error}"


def _shared_storage(ctx: Context, paths: dict[str, tuple[str, str]]) -> str:
    """Write one file into each mount; none may show up in another volume's mount. Returns
    the problem, or ""."""
    written: dict[str, Path] = {}
    try:
        for i, path in enumerate(paths):
            marker = Path(path, f".dvconf-{ctx.run_id}-{i}")
            try:
                marker.write_text(path)
            except OSError:
                ctx.info("storage sharing not observed: the mount paths are not writable here")
                return ""
            written[path] = marker
        for path, (label, name) in paths.items():
            for other, marker in written.items():
                if other != path and Path(path, marker.name).exists():
                    olabel, oname = paths[other]
                    return (
                        f"the volumes named with {label} ({name!r}) and with {olabel} "
                        f"({oname!r}) share storage: a file written into one appears in the other"
                    )
        return ""
    finally:
        for marker in written.values():
            try:
                marker.unlink(missing_ok=True)
            except OSError:
                ctx.runner.leftovers.file(str(marker))


@check(
    "names-restart",
    title="Names stay exact and distinct across a restart",
    checks="The names of `names` are created; those that List and Get give back exactly "
    "(the others are `names`' failures) must still be given back exactly, once each, after the "
    "plugin is killed and restarted, and no other name of the kit's may appear; then each is "
    "removed.",
    why="A plugin that rebuilds its volume list from directory names after a restart turns "
    "`p/q` into `p` and merges `x/../y` into `y`: after the next engine start (which sends "
    "Get for every volume) the engine forgets the volumes the plugin no longer knows by "
    "their names.",
    engine="daemon start: Get for every known volume; 'not found' deletes the engine's "
    f"record with its labels and options ({ENGINES}).",
    fix="Persist the exact names (a registry file or database); never derive names from paths.",
    tolerated="Names refused at Create warn as in `names`.",
    destructive=True,
)
def names_restart(ctx: Context) -> None:
    prefix = f"{ctx.config.prefix}{ctx.run_id}-nr{ctx.runner.seq()}-"
    accepted = _create_all(ctx, odd_names(prefix))
    if not accepted:
        raise Skipped("every unusual name was refused at Create")
    # Only names that lived through the lifecycle before the restart are judged after it.
    problems: list[str] = []
    accepted = _listed_once(ctx, accepted, "", problems)
    if not accepted:
        raise Skipped(f"no unusual name was listed and got before the restart ({problems[0]})")
    problems = []
    crash_and_restart(ctx)
    _listed_once(ctx, accepted, "after a restart, ", problems)
    mine = {n for _, n in accepted}
    strangers = [n for n in ctx.list_names() if n.startswith(prefix) and n not in mine]
    if strangers:
        ctx.created.update(strangers)
        problems.append(
            f"after a restart List shows {strangers[0]!r}, a name never created: the plugin "
            f"rebuilt names from paths"
        )
    _judge(problems)


def _probe_names(prefix: str, markers: Path, tag: str) -> list[tuple[str, str, list[Path]]]:
    """(name, how, marker paths): names that create a marker file if a shell runs them."""
    m = [markers / f"m{i}" for i in range(5)]
    bare = f"dvconf-inj-{tag}"
    return [
        (f"{prefix}inj$(touch {m[0]})", "$(...)", [m[0]]),
        (f"{prefix}inj`touch {m[1]}`", "backquotes", [m[1]]),
        (f"{prefix}inj;touch {m[2]};", "a semicolon", [m[2]]),
        (f"{prefix}inj'$(touch {m[3]})'", "a closing single quote", [m[3]]),
        # Without a slash, for plugins that refuse '/': the marker lands in the plugin's cwd.
        (f"{prefix}inj$(touch${{IFS}}{bare})", "$(...) without a slash", [Path(bare)]),
    ]


@check(
    "names-shell",
    title="Names never reach a shell",
    checks="Volumes whose names would create a marker file if a shell ran them (`$(touch F)`, "
    "backquotes, `;touch F;`, a closing quote, and one without a slash, whose marker lands in "
    "the plugin's working directory) are created, got, mounted, unmounted and removed; no "
    "marker may appear. Only on a unix socket (the markers are looked for on the kit's host); "
    "skipped when every probe name is refused.",
    why="A plugin that builds shell commands from names runs, as root, whatever a user who "
    "may create volumes writes into a name: `docker volume create -d p 'x$(...)'` becomes "
    "code execution on the host.",
    engine="the engine passes the name as typed (no validation of plugin volume names) "
    f"({ENGINES}).",
    fix="Never use a shell: run helpers with an argument list (`subprocess.run([...])`, "
    "`exec.Command`), and derive paths from a safe key.",
)
def names_shell(ctx: Context) -> None:
    sock = ctx.client.address.unix
    if sock is None:
        raise Skipped("the markers are looked for on this host: needs a unix-socket plugin")
    markers = Path(tempfile.mkdtemp(prefix="dvconf-inj-"))
    markers.chmod(0o1777)
    cwd: Path | None = None
    with contextlib.suppress(OSError):
        cwd = Path(os.readlink(f"/proc/{peer_pid(sock)}/cwd"))
    prefix = f"{ctx.config.prefix}{ctx.run_id}-sh{ctx.runner.seq()}-"
    probes = _probe_names(prefix, markers, ctx.run_id)
    tried = 0
    try:
        for name, how, files in probes:
            r = ctx.try_create(name)
            if _ok(r):
                tried += 1
                mid = new_id()
                ctx.call("VolumeDriver.Get", {"Name": name})
                m = ctx.call("VolumeDriver.Mount", {"Name": name, "ID": mid})
                if _ok(m):
                    ctx.call("VolumeDriver.Unmount", {"Name": name, "ID": mid})
                if _ok(ctx.call("VolumeDriver.Remove", {"Name": name})):
                    ctx.untrack(name)
            for f in files:
                found = [p for p in _where(f, cwd) if p.exists()]
                if found:
                    for p in found:
                        _drop(ctx, p)
                    raise CheckFailed(
                        f"the plugin ran a shell command hidden in a volume name ({how}): "
                        f"the name {name!r} created {found[0]}. Anyone who can create a volume "
                        f"runs commands on the host with the plugin's rights"
                    )
    finally:
        shutil.rmtree(markers, ignore_errors=True)
    if tried == 0:
        raise Skipped("every probe name was refused at Create: nothing to observe")


def _where(marker: Path, cwd: Path | None) -> list[Path]:
    if marker.is_absolute():
        return [marker]
    return [Path("/") / marker] + ([cwd / marker] if cwd is not None else [])


def _drop(ctx: Context, path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        ctx.runner.leftovers.file(str(path))
