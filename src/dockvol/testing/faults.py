"""Fault injection: crash a plugin, restart it, and check what survived (destructive checks)."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .client import WireClient, peer_pid
from .suite import Context, Faults, new_id
from .verdict import CheckFailed, Skipped, check

ENGINES = "engines 20.10 to 26.1"

#: Seconds between SIGTERM and SIGKILL when the engine disables a managed plugin (and
#: systemd's default is longer): a plugin must be gone by then.
STOP_GRACE = 10.0


def _dead(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie has released its socket


def kill_listener(socket_path: str | Path, timeout: float = 10.0) -> int:
    """SIGKILL the process listening on ``socket_path`` (found with SO_PEERCRED) and wait for it
    to die. Returns its pid."""
    pid = peer_pid(socket_path)
    if pid == os.getpid():
        raise RuntimeError("the plugin runs in this process: use in-process faults")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while not _dead(pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {pid} did not die within {timeout}s of SIGKILL")
        time.sleep(0.02)  # polling for the process to go
    return pid


def wait_ready(
    client: WireClient, timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll Capabilities until the plugin answers 200 (or the restart command fails)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() not in (None, 0):
            raise RuntimeError(f"the restart command exited with status {proc.returncode}")
        try:
            r = client.call("VolumeDriver.Capabilities", {}, timeout=2)
            if r.status == 200:
                return
            last = r.describe()
        except OSError as e:
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.05)  # polling for readiness
    raise RuntimeError(f"the plugin did not answer within {timeout:g}s of its restart ({last})")


@dataclass
class ShellFaults:
    """Kill with ``kill_cmd`` (or SIGKILL to the socket's listener), restart with
    ``restart_cmd``. A restart command still running once the plugin answers is left running
    (it is the plugin itself) in its own session."""

    client: WireClient
    restart_cmd: str
    kill_cmd: str | None = None
    timeout: float = 30.0
    stop_cmd: str | None = None
    #: Where the output of the restart command (the restarted plugin's log) goes: beside
    #: the reports.
    log_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def kill(self) -> None:
        if self.kill_cmd:
            subprocess.run(self.kill_cmd, shell=True, check=True, timeout=self.timeout)
            return
        if self.client.address.unix is None:
            raise RuntimeError("a TCP plugin needs --kill-cmd: SO_PEERCRED works on unix sockets")
        kill_listener(self.client.address.unix)

    def stop(self) -> None:
        """``stop_cmd``, or SIGTERM to the socket's listener; it must exit within 10 s."""
        if self.stop_cmd:
            subprocess.run(self.stop_cmd, shell=True, check=True, timeout=self.timeout)
            return
        if self.client.address.unix is None:
            raise RuntimeError("a TCP plugin needs --stop-cmd: SO_PEERCRED works on unix sockets")
        pid = peer_pid(self.client.address.unix)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while not _dead(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                raise TimeoutError(
                    f"the plugin (pid {pid}) did not exit within {STOP_GRACE:g}s of SIGTERM; "
                    f"the engine and systemd then SIGKILL it"
                )
            time.sleep(0.02)  # polling for the process to exit

    def restart(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                self.restart_cmd,
                shell=True,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(proc)
        try:
            wait_ready(self.client, self.timeout, proc)
        except RuntimeError as e:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{e}; output of {self.restart_cmd!r}:\n{tail}") from e

    @property
    def log_path(self) -> Path:
        return self.log_dir / "plugin-restarts.log"

    def faults(self) -> Faults:
        graceful = self.stop if self.stop_cmd or not self.kill_cmd else None
        return Faults(kill=self.kill, restart=self.restart, stop=graceful)


def crash_and_restart(ctx: Context) -> None:
    """SIGKILL the plugin (or --kill-cmd) and restart it; a failure of either fails the check."""
    assert ctx.faults is not None
    try:
        ctx.faults.kill()
    except Exception as e:
        raise CheckFailed(f"could not kill the plugin: {e}") from e
    try:
        ctx.faults.restart()
    except Exception as e:
        raise CheckFailed(f"the plugin did not come back after a crash: {e}") from e


@check(
    "stop-removes-socket",
    title="A graceful stop exits promptly, removes the socket and keeps state",
    checks="With a volume mounted, the plugin is stopped gracefully (SIGTERM to the socket's "
    "listener, or `--stop-cmd`). It must exit within 10 s and remove its socket file; after "
    "the restart the volume must exist and still be in use, and Unmount and Remove must work. "
    "Skipped without a way to stop the plugin gracefully.",
    why="A stale socket of a stopped plugin makes the engine dial a dead socket: `docker volume "
    "ls` and every lookup of the driver stall for about 15 s of retries. A plugin that ignores "
    "SIGTERM is killed after 10 s, possibly mid-write. A plain restart must lose nothing.",
    engine="legacy discovery dials `/run/docker/plugins/NAME.sock` as long as the file "
    f"exists; `docker plugin disable` sends SIGTERM, then SIGKILL after 10 s ({ENGINES}).",
    fix="On SIGTERM stop accepting, finish in-flight calls, remove the socket file and exit; "
    "keep state durable so nothing is lost across the restart.",
    destructive=True,
)
def stop_removes_socket(ctx: Context) -> None:
    assert ctx.faults is not None
    sock = ctx.client.address.unix
    if ctx.faults.stop is None or sock is None:
        raise Skipped("needs a graceful stop of a unix-socket plugin (SIGTERM or --stop-cmd)")
    name, mid = ctx.name(), new_id()
    ctx.create(name, {})
    ctx.mount(name, mid)
    problem = ""
    try:
        ctx.faults.stop()
    except TimeoutError as e:
        problem = str(e)
    except Exception as e:
        raise CheckFailed(f"could not stop the plugin: {e}") from e
    if not problem and os.path.lexists(sock):
        problem = f"the plugin left its socket {sock} behind after a graceful stop"
    try:
        ctx.faults.restart()
    except Exception as e:
        raise CheckFailed(
            f"{problem + '; ' if problem else ''}the plugin did not come back: {e}"
        ) from e
    if problem:
        raise CheckFailed(problem)
    ctx.must_exist(name, " after a graceful restart")
    if ctx.refuses_remove_in_use():
        _still_used(ctx, name, "mounted before the stop")
    ctx.unmount(name, mid)
    ctx.remove(name)


@check(
    "crash-while-mounted",
    title="A crash between Mount and Unmount loses nothing",
    checks="A volume mounted by two IDs and an unmounted volume exist; the plugin is killed "
    "(SIGKILL) and restarted. Both volumes must still exist (Get and List). When the "
    "Mountpoint is a writable directory on the kit's host, a file written through it before "
    "the crash must still be there, and a new Mount must return the same path (what a running "
    "container sees). The volume must still be in use (Remove refused) with both IDs held, and "
    "with one; after both original IDs are unmounted, Remove must succeed.",
    why="Containers outlive plugin crashes. After a restart the engine does not re-send Mount, "
    "but later sends Unmount with the original IDs. State kept in memory loses volumes (the "
    "engine forgets them at its next start) or mount records (the volume is released under "
    "running containers, or stuck in use forever).",
    engine="daemon restore and live-restore: no Mount re-sent, Unmount later with the original "
    f"ID; a restarted legacy plugin is not re-activated ({ENGINES}).",
    fix="Commit volumes and per-ID mount records durably (fsync) before replying; on start, "
    "reload them and make reality match (re-mount what is still in use).",
    destructive=True,
)
def crash_while_mounted(ctx: Context) -> None:
    a, b = ctx.name(), ctx.name()
    id1, id2 = new_id(), new_id()
    ctx.create(a, {})
    ctx.create(b, {})
    path = ctx.mount(a, id1)
    ctx.mount(a, id2)
    marker = _write_marker(ctx, path)
    crash_and_restart(ctx)
    for n in (a, b):
        ctx.must_exist(n, " after the plugin restarted")
    listed = ctx.list_names()
    for n in (a, b):
        if n not in listed:
            raise CheckFailed(f"List lost {n!r} after the plugin restarted")
    if marker is not None:
        # What a running container sees: the same data at the same path.
        if not marker.exists():
            raise CheckFailed(
                f"a file written through the Mountpoint {path!r} before the crash is not "
                f"there after the restart: running containers lost their volume's data"
            )
        id3 = new_id()
        again = ctx.mount(a, id3)
        if again != path:
            raise CheckFailed(
                f"after the restart the volume mounts at {again!r}, before at {path!r}: "
                f"running containers still use the old path"
            )
        ctx.unmount(a, id3)
        marker.unlink(missing_ok=True)
    counts = ctx.refuses_remove_in_use()
    if counts:
        _still_used(ctx, a, "with 2 mount IDs held before the crash")
    ctx.unmount(a, id1)
    if counts:
        _still_used(ctx, a, "with 1 mount ID still held from before the crash")
    ctx.unmount(a, id2)
    r = ctx.call("VolumeDriver.Remove", {"Name": a})
    if r.status != 200 or r.err:
        raise CheckFailed(
            f"after every ID from before the crash unmounted, Remove fails "
            f"({r.err or r.describe()}): a reference count is stuck"
        )
    ctx.untrack(a)


def _write_marker(ctx: Context, path: str) -> Path | None:
    """A file written through the mount, when the Mountpoint is a writable directory here."""
    marker = Path(path, f".dvconf-{ctx.run_id}")
    try:
        marker.write_text("written through the mount before the crash\n")
    except OSError as e:
        ctx.info(f"data check skipped: cannot write into {path!r} from here ({e.strerror})")
        return None
    return marker


def _still_used(ctx: Context, name: str, when: str) -> None:
    r = ctx.call("VolumeDriver.Remove", {"Name": name})
    if r.status == 200 and not r.err:
        ctx.untrack(name)
        raise CheckFailed(
            f"after the restart, Remove of {name!r} {when} succeeded: mount records were lost"
        )


@dataclass
class _Vol:
    created: bool = False  # acknowledged
    held: set[str] = field(default_factory=set)  # IDs acknowledged mounted, not unmounted
    unsure: set[str] = field(default_factory=set)  # IDs whose Mount/Unmount reply was lost


@check(
    "crash-during-burst",
    title="A crash in the middle of a burst loses nothing acknowledged",
    checks="Eight clients create volumes, mount each with two IDs and unmount one, without "
    "pause; after 160 answered calls the plugin is killed in the middle of the burst and "
    "restarted. Every volume whose Create was answered must exist; every volume with an "
    "answered Mount not yet unmounted must be in use; after unmounting every held ID (and every "
    "ID whose reply was lost), every volume must be removable. Calls whose reply was lost may "
    "have happened or not. A burst that stops making progress is reported as a hang before "
    "the kill.",
    why="A plugin killed while the engine starts many containers must keep every change it "
    "acknowledged, and an interrupted change must leave the old or the new state, never a "
    "broken one.",
    engine=f"parallel container starts and stops; the plugin restarted under load ({ENGINES}).",
    fix="One durable transaction per change, committed before the reply; atomic writes (a new "
    "file and a rename, or a database).",
    destructive=True,
)
def crash_during_burst(ctx: Context) -> None:
    vols: dict[str, _Vol] = {}
    lock = threading.Lock()
    stop = threading.Event()
    crashing = threading.Event()
    acked = [0]
    pending: list[str] = []  # calls that did not answer within the call timeout

    def op(endpoint: str, body: dict[str, object]) -> bool | None:
        """True: done; False: refused; None: reply lost."""
        try:
            r = ctx.client.call(endpoint, body, timeout=ctx.config.call_timeout)
        except TimeoutError:
            if not crashing.is_set():
                with lock:
                    pending.append(endpoint.split(".")[1])
            return None
        except (OSError, http.client.HTTPException):  # killed mid-reply: IncompleteRead
            return None
        done = r.status == 200 and not r.err
        if not done and crashing.is_set():
            # An error answered while the plugin is being killed (a server cancelling calls
            # in flight answers 500): as uncertain as a lost reply.
            return None
        with lock:
            acked[0] += 1
        return done

    def worker() -> None:
        while not stop.is_set():
            name, keep, drop = ctx.name("burst"), new_id(), new_id()
            v = _Vol()
            with lock:
                vols[name] = v
                ctx.created.add(name)
            res = op("VolumeDriver.Create", {"Name": name, "Opts": ctx.opts(name)})
            if not res:
                return
            v.created = True
            for mid in (keep, drop):
                v.unsure.add(mid)
                res = op("VolumeDriver.Mount", {"Name": name, "ID": mid})
                if res is None:
                    return
                v.unsure.discard(mid)
                if not res:
                    raise CheckFailed(f"Mount {name!r} refused during the burst")
                v.held.add(mid)
            v.held.discard(drop)
            v.unsure.add(drop)
            res = op("VolumeDriver.Unmount", {"Name": name, "ID": drop})
            if res is None:
                return
            v.unsure.discard(drop)

    threads = max(2, ctx.config.concurrency // 2)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker()
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    deadline = time.monotonic() + 60
    last, seen = time.monotonic(), 0
    stalled = False
    while acked[0] < 20 * threads and time.monotonic() < deadline and not errors:
        time.sleep(0.01)  # waiting for the burst to be well under way
        if acked[0] != seen:
            last, seen = time.monotonic(), acked[0]
        elif time.monotonic() - last > ctx.config.call_timeout:
            stalled = True  # nothing answered for a whole call timeout: a hang
            break
    hang = ""
    if stalled:
        answering, silent = ctx.runner.probe()
        hang = (
            f"hang: the burst stopped after {acked[0]} answered calls; "
            f"{', '.join(sorted(set(pending))) or 'calls'} did not answer within "
            f"{ctx.config.call_timeout:g}s; still answering: {', '.join(answering) or 'nothing'}"
            f"; not answering: {', '.join(silent) or 'nothing'}"
        )
    assert ctx.faults is not None
    crashing.set()
    try:
        ctx.faults.kill()
    except Exception as e:
        raise CheckFailed(f"could not kill the plugin: {e}") from e
    finally:
        stop.set()
        for t in ts:
            t.join(60)
    try:
        ctx.faults.restart()
    except Exception as e:
        raise CheckFailed(f"the plugin did not come back after a crash: {e}") from e
    if hang:
        raise CheckFailed(hang)
    if errors:
        raise errors[0]
    if acked[0] < 20 * threads:
        raise CheckFailed("the burst made too little progress before the crash")
    counts = ctx.refuses_remove_in_use()
    listed = set(ctx.list_names())
    done = {n: v for n, v in vols.items() if v.created}
    lost = [n for n in done if n not in listed]
    if lost:
        raise CheckFailed(f"{len(lost)} acknowledged volumes lost in the crash, e.g. {lost[0]!r}")
    for n in done:
        ctx.must_exist(n, " after the crash")
    held = [n for n, v in done.items() if v.held]
    if counts:
        for n in held:
            _still_used(ctx, n, "held by an acknowledged Mount")
    for n, v in vols.items():
        for mid in sorted(v.held | v.unsure):
            if mid in v.held:
                ctx.ok("VolumeDriver.Unmount", {"Name": n, "ID": mid})
            else:
                ctx.call("VolumeDriver.Unmount", {"Name": n, "ID": mid})
        v.held.clear()
    for n in done:
        r = ctx.call("VolumeDriver.Remove", {"Name": n})
        if r.status != 200 or r.err:
            raise CheckFailed(
                f"after the crash and every Unmount, Remove {n!r} fails "
                f"({r.err or r.describe()}): a reference count is stuck"
            )
        ctx.untrack(n)
    ctx.info(f"{len(done)} volumes and {acked[0]} acknowledged calls before the crash")


def callable_faults(kill: Callable[[], None], restart: Callable[[], None]) -> Faults:
    """Faults from two functions (for tests that manage the plugin process themselves)."""
    return Faults(kill=kill, restart=restart)
