"""The Docker volume suite's per-run context and runner: deadlines, the time budget, hang
reports and cleanup. The checks themselves are listed in ``catalog.py``."""

from __future__ import annotations

import contextlib
import http.client
import secrets
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import godecode
from .client import Reply, WireClient
from .leftovers import Leftovers
from .verdict import (
    DOCS,
    Check,
    CheckFailed,
    Hang,
    Outcome,
    OutOfTime,
    Result,
    Skipped,
    bites,
    execute,
    run_checks,
)

__all__ = [
    "DOCS",
    "Check",
    "CheckFailed",
    "Config",
    "Context",
    "Faults",
    "Hang",
    "Outcome",
    "Result",
    "Runner",
    "Skipped",
    "new_id",
    "run",
]

#: How long the engine waits for each call before it fails the user's command (moby
#: volume/drivers/proxy.go: 2 minutes for Create and Mount, 1 minute for the others, engines
#: 1.13 to 26.1). Activate has no deadline there; the kit gives it the short one.
ENGINE_DEADLINE = {"VolumeDriver.Create": 120.0, "VolumeDriver.Mount": 120.0}
ENGINE_DEADLINE_DEFAULT = 60.0


@dataclass
class Config:
    """Tunables of a run (defaults documented in docs/conformance.md)."""

    prefix: str = "dvconf-"
    #: Volumes created for the latency check.
    volumes: int = 1000
    #: Budgets, milliseconds, 99th percentile.
    get_p99_ms: float = 100.0
    list_p99_ms: float = 1000.0
    #: How long a kept-alive connection stays idle before it is used again.
    idle_seconds: float = 6.0
    #: Concurrent mount IDs on one volume, and threads in a burst.
    concurrency: int = 16
    #: How long a restarted plugin may take to answer again.
    restart_timeout: float = 30.0
    #: Options sent with every Create the kit makes, for plugins whose volumes need some
    #: (``None``: the checks send ``Opts`` as null or ``{}``, as the engine does without -o).
    #: ``{name}`` in a value is replaced by each volume's name.
    opts: dict[str, str] | None = None
    #: The longest the kit waits for one reply before it calls the plugin hung.
    call_timeout: float = 10.0
    #: The whole run's time; checks that do not fit are skipped, the latency phase shrinks.
    budget: float = 90.0


@dataclass
class Faults:
    """How to crash and restart the plugin (destructive checks only). ``stop`` is a graceful
    stop (SIGTERM, as the engine and systemd stop plugins); without it that check is skipped."""

    kill: Callable[[], None]
    restart: Callable[[], None]
    stop: Callable[[], None] | None = None


def new_id() -> str:
    """A mount ID like the engine's: 64 hex characters."""
    return secrets.token_hex(32)


def engine_deadline(endpoint: str) -> float:
    return ENGINE_DEADLINE.get(endpoint, ENGINE_DEADLINE_DEFAULT)


class Context:
    """What a check uses: the client, the config, helpers that track what it created."""

    def __init__(self, runner: Runner, check_name: str) -> None:
        self.runner = runner
        self.client = runner.client
        self.config = runner.config
        self.faults = runner.faults
        self.results = runner.results
        self.run_id = runner.run_id
        self.check_name = check_name
        self.warnings: list[str] = []
        self.infos: list[str] = []
        #: Field types decoded strictly ("time", "map"): only the checks about them set them,
        #: so one defect fails one check.
        self.strict: set[str] = set()
        self._lock = threading.Lock()
        self.created: set[str] = set()
        self.mounts: Counter[tuple[str, str]] = Counter()

    # -- naming and bookkeeping ------------------------------------------------------------
    def name(self, tag: str = "v") -> str:
        """A fresh volume name owned by this run: ``dvconf-<run>-<check>-<tag>-<n>``."""
        return f"{self.config.prefix}{self.run_id}-{self.check_name}-{tag}-{self.runner.seq()}"

    def warn(self, text: str, when: str) -> None:
        """The engine tolerates what the plugin did; ``when`` says when it would bite."""
        self.warnings.append(bites(text, when))

    def info(self, text: str) -> None:
        """A fact for the report (a measurement) that does not change the result."""
        self.infos.append(text)

    def progress(self, text: str) -> None:
        """A line for the user during a long phase."""
        self.runner.say(f"  {self.check_name}: {text}")

    def outcome(self, name: str) -> Outcome | None:
        r = self.results.get(name)
        return None if r is None else r.outcome

    def refuses_remove_in_use(self) -> bool:
        """Whether "in use" can be observed through a refused Remove: what
        remove-while-mounted saw, or, when it did not run, a quick probe of the same."""
        seen = self.outcome("remove-while-mounted")
        if seen is not None:
            return seen == "pass"
        if self.runner.remove_guard is None:
            name, mid = self.name("guard"), new_id()
            self.create(name)
            self.mount(name, mid)
            r = self.call("VolumeDriver.Remove", {"Name": name})
            self.runner.remove_guard = not _success(r)
            if self.runner.remove_guard:
                self.unmount(name, mid)
                self.remove(name)
            else:
                self.untrack(name)
        return self.runner.remove_guard

    def remaining(self) -> float:
        return self.runner.remaining()

    # -- calls ---------------------------------------------------------------------------
    def call(self, endpoint: str, body: Any = None, **kw: Any) -> Reply:
        """One call with a deadline: the kit's call timeout, cut short by the run's budget. A
        call that does not answer in time raises :class:`Hang`."""
        return self.runner.call(endpoint, body, **kw)

    def decode(self, reply: Reply) -> dict[str, Any]:
        """The reply as the engine decodes it; fails on what the engine would reject."""
        obj = reply.object()
        if obj is None:
            raise CheckFailed(
                f"{reply.endpoint}: the reply is not a JSON object ({reply.describe()}); "
                f"the engine fails the call"
            )
        try:
            out: dict[str, Any] = godecode.decode(
                obj, godecode.REPLIES[reply.endpoint], "", self.strict
            )
        except godecode.GoDecodeError as e:
            raise CheckFailed(f"{reply.endpoint}: {e}; the engine fails the whole call") from e
        return out

    def ok(self, endpoint: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        """Call and require success: HTTP 200, a JSON object the engine decodes, no Err."""
        r = self.call(endpoint, body, **kw)
        what = f"{r.endpoint} {_short(body)}"
        if r.status != 200:
            raise CheckFailed(f"{what}: expected success, got {r.describe()}")
        out = self.decode(r)
        if out.get("Err"):
            raise CheckFailed(f"{what}: expected success, got Err {out['Err']!r}")
        return out

    def refused(self, endpoint: str, body: Any = None, **kw: Any) -> str:
        """Call and require a refusal, as the engine reads one (moby pkg/plugins/client.go):
        any status other than 200 is an error whose text is the ``Err`` field or else the raw
        body; with 200, a JSON ``Err`` (or a body that does not decode). Returns the text the
        user would read; an unreadable one is a warning."""
        r = self.call(endpoint, body, **kw)
        what = f"{r.endpoint} {_short(body)}"
        if r.err:
            return r.err
        if r.status == 200 and r.object() is not None:
            raise CheckFailed(f"{what}: expected a refusal (Err), but the plugin succeeded")
        text = r.body.decode("utf-8", "replace").strip()
        self.warn(
            f"{what}: the error is not a JSON object with Err ({r.describe()}); the engine "
            f"shows the raw body as the message: {r.endpoint}: {text[:60]!r}",
            "when the body is an HTML page or a stack trace: users read it verbatim in "
            "docker's error message",
        )
        return text

    # -- volume helpers that remember what to clean up ---------------------------------------
    def opts(self, name: str, opts: dict[str, str] | None = None) -> dict[str, str] | None:
        """The Opts to send for volume ``name``: the configured options (with ``{name}``
        replaced) when there are some, else ``opts``."""
        if self.config.opts is None:
            return opts
        return {k: v.replace("{name}", name) for k, v in self.config.opts.items()}

    def track(self, name: str) -> None:
        with self._lock:
            self.created.add(name)

    def untrack(self, name: str) -> None:
        with self._lock:
            self.created.discard(name)

    def create(self, name: str, opts: dict[str, str] | None = None) -> None:
        self.track(name)
        self.ok("VolumeDriver.Create", {"Name": name, "Opts": self.opts(name, opts)})

    def try_create(self, name: str) -> Reply:
        """Create and return the reply, whatever it is (tracked for cleanup either way)."""
        self.track(name)
        r = self.call("VolumeDriver.Create", {"Name": name, "Opts": self.opts(name)})
        if not _success(r):
            self.untrack(name)
        return r

    def remove(self, name: str) -> None:
        self.ok("VolumeDriver.Remove", {"Name": name})
        self.untrack(name)

    def mount(self, name: str, mount_id: str) -> str:
        # Counted before the call: a Mount whose reply is lost may have happened.
        with self._lock:
            self.mounts[(name, mount_id)] += 1
        try:
            out = self.ok("VolumeDriver.Mount", {"Name": name, "ID": mount_id})
        except CheckFailed as e:
            if e.args and "expected success" in str(e.args[0]):  # refused: nothing to undo
                with self._lock:
                    self.mounts[(name, mount_id)] -= 1
            raise
        path = out.get("Mountpoint") or ""
        if not path:
            raise CheckFailed(f"Mount {name!r}: the reply has no Mountpoint")
        self.runner.leftovers.saw_mountpoint(name, str(path))
        return str(path)

    def unmount(self, name: str, mount_id: str) -> None:
        self.ok("VolumeDriver.Unmount", {"Name": name, "ID": mount_id})
        with self._lock:
            if self.mounts[(name, mount_id)] > 0:
                self.mounts[(name, mount_id)] -= 1

    def get(self, name: str) -> dict[str, Any] | None:
        """Get as the engine reads it: the volume, or ``None`` for "not found" (any error,
        or a null Volume)."""
        r = self.call("VolumeDriver.Get", {"Name": name})
        if r.status != 200 or r.err:
            return None
        vol = self.decode(r).get("Volume")
        return vol if isinstance(vol, dict) else None

    def must_exist(self, name: str, when: str = "") -> dict[str, Any]:
        vol = self.get(name)
        if vol is None:
            raise CheckFailed(f"Get {name!r}{when}: the volume is gone (not found)")
        return vol

    def list_names(self) -> list[str]:
        vols = self.ok("VolumeDriver.List", {}).get("Volumes") or []
        return [str((v or {}).get("Name", "")) for v in vols]

    def cleanup(self) -> None:
        """Undo what the check left behind; what cannot be undone goes into the leftovers."""
        with self._lock:
            mounts = [(k, n) for k, n in self.mounts.items() if n > 0]
            names = sorted(self.created)
            self.mounts.clear()
            self.created.clear()
        left = self.runner.leftovers
        if self.runner.stopped:  # nothing answers: calling would only wait for deadlines
            for (name, mid), _n in mounts:
                left.mount_held(name, mid)
            for name in names:
                left.volume(name, "the plugin stopped answering")
            return
        silent = False  # after one call without an answer, the rest would wait as long
        for (name, mid), n in mounts:
            for _ in range(n):
                done = (
                    None
                    if silent
                    else self.runner.quiet_call("VolumeDriver.Unmount", {"Name": name, "ID": mid})
                )
                silent = silent or done is None
                if not done:
                    left.mount_held(name, mid)
                    break
        for name in names:
            done = None if silent else self.runner.quiet_call("VolumeDriver.Remove", {"Name": name})
            silent = silent or done is None
            if done is None:
                left.volume(name, "Remove did not answer")
            elif not done and self.get_quietly(name):
                left.volume(name, "Remove failed")

    def get_quietly(self, name: str) -> bool:
        """Whether the volume still exists (True when that cannot be told)."""
        with contextlib.suppress(Exception):
            r = self.runner.client.call(
                "VolumeDriver.Get", {"Name": name}, timeout=self.config.call_timeout
            )
            return r.status == 200 and not r.err
        return True


def _success(r: Reply) -> bool:
    return r.status == 200 and not r.err and r.object() is not None


def _short(body: Any) -> str:
    if isinstance(body, dict) and "Name" in body:
        return repr(body["Name"])
    return ""


class Runner:
    """Runs checks one at a time against one plugin and keeps their results."""

    def __init__(
        self,
        client: WireClient,
        config: Config | None = None,
        faults: Faults | None = None,
        *,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.config = config or Config()
        self.faults = faults
        self.run_id = secrets.token_hex(3)
        self.results: dict[str, Result] = {}
        self.leftovers = Leftovers(client.address)
        self._say = say
        self._seq = 0
        self._lock = threading.Lock()
        self._deadline: float | None = None
        #: Why the run stopped early (the plugin hung), or "".
        self.stopped = ""
        #: Seconds per answered call, by endpoint (for the slow-plugin report).
        self.seconds: dict[str, list[float]] = {}
        #: Calls that did not answer in time, and calls the budget cut short.
        self.hangs = 0
        self.out_of_budget = 0
        #: Whether the plugin refuses to remove a mounted volume (probed once, when needed).
        self.remove_guard: bool | None = None

    # -- shared by contexts ------------------------------------------------------------------
    def seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def say(self, text: str) -> None:
        if self._say is not None:
            self._say(text)

    def start_clock(self) -> None:
        if self._deadline is None:
            self._deadline = time.monotonic() + self.config.budget

    def remaining(self) -> float:
        self.start_clock()
        assert self._deadline is not None
        return self._deadline - time.monotonic()

    def call(self, endpoint: str, body: Any = None, **kw: Any) -> Reply:
        left = self.remaining()
        if left <= 0:
            self.out_of_budget += 1
            raise OutOfTime(self.out_of_time())
        limit = kw.pop("timeout", None) or self.config.call_timeout
        timeout = min(limit, left)
        try:
            r = self.client.call(endpoint, body, timeout=timeout, **kw)
        except TimeoutError as e:
            if timeout < limit:
                self.out_of_budget += 1
                raise OutOfTime(self.out_of_time()) from e
            self.hangs += 1
            raise Hang(
                endpoint if "." in endpoint else f"VolumeDriver.{endpoint}",
                timeout,
                f"the engine waits {engine_deadline(endpoint):g}s, then fails the docker "
                f"command; a plugin this slow stalls every command that needs it",
            ) from e
        except (OSError, http.client.HTTPException) as e:
            raise CheckFailed(
                f"{endpoint}: transport error {type(e).__name__}: {e} (the plugin closed the "
                f"connection without a reply; the engine retries, with an empty body)"
            ) from e
        with self._lock:
            self.seconds.setdefault(r.endpoint, []).append(r.seconds)
        return r

    def quiet_call(self, endpoint: str, body: Any) -> bool | None:
        """A cleanup call: True when it succeeded, None when it did not answer in time;
        never raises."""
        try:
            r = self.client.call(endpoint, body, timeout=self.config.call_timeout)
        except TimeoutError:
            return None
        except Exception:
            return False
        return _success(r)

    def out_of_time(self) -> str:
        slow = sorted(((max(v), k) for k, v in self.seconds.items() if v), reverse=True)[:3]
        worst = ", ".join(f"{k.split('.')[-1]} {s:.2f}s" for s, k in slow) or "none"
        calls = sum(len(v) for v in self.seconds.values())
        med = statistics.median([x for v in self.seconds.values() for x in v] or [0.0])
        return (
            f"the run's time budget of {self.config.budget:g}s is used up ({calls} calls "
            f"answered, median {med * 1000:.0f} ms, slowest: {worst}); raise --budget to run "
            f"the rest"
        )

    def probe(self) -> tuple[list[str], list[str]]:
        """Which calls still answer (fresh connections, short deadline): (answering, not)."""
        some = next(iter(sorted(self.leftovers.mountpoints)), self.config.prefix + "probe")
        probes: list[tuple[str, Any]] = [
            ("VolumeDriver.Capabilities", {}),
            ("VolumeDriver.List", {}),
            ("VolumeDriver.Get", {"Name": some}),
        ]
        answering: list[str] = []
        silent: list[str] = []

        def one(ep: str, body: Any) -> None:
            try:
                self.client.call(ep, body, timeout=min(3.0, self.config.call_timeout))
                answering.append(ep.split(".")[-1])
            except Exception:
                silent.append(ep.split(".")[-1])

        ts = [threading.Thread(target=one, args=p, daemon=True) for p in probes]
        for t in ts:
            t.start()
        for t in ts:
            t.join(10)
        order = [p[0].split(".")[-1] for p in probes]
        return (
            [x for x in order if x in answering],
            [x for x in order if x not in answering],
        )

    # -- running ------------------------------------------------------------------------------
    def run_one(self, chk: Check[Any]) -> Result:
        self.start_clock()
        ctx = Context(self, chk.name)
        t0 = time.monotonic()
        if self.stopped:
            res = Result(chk, "skip", f"not run: {self.stopped}")
        elif self.remaining() <= 0 and not chk.after_budget:
            res = Result(chk, "skip", f"not run: {self.out_of_time()}")
        elif chk.destructive and self.faults is None:
            res = Result(chk, "skip", "destructive checks need a way to restart the plugin")
        else:
            hangs, cut = self.hangs, self.out_of_budget
            res = execute(chk, ctx, ctx.warnings, ctx.infos)
            if self.hangs > hangs and res.outcome == "fail":
                self._after_hang(chk, res)
            elif self.out_of_budget > cut and res.outcome == "skip":
                res = self._out_of_time_verdict(chk, res)
            with contextlib.suppress(Exception):  # cleanup is best effort by design
                ctx.cleanup()
        res.seconds = time.monotonic() - t0
        self.results[chk.name] = res
        return res

    def _after_hang(self, chk: Check[Any], res: Result) -> None:
        answering, silent = self.probe()
        res.message += (
            f"; still answering: {', '.join(answering) or 'nothing'}"
            f"; not answering: {', '.join(silent) or 'nothing'}"
        )
        if "Get" in silent or "List" in silent:
            self.stopped = f"the plugin hung in {chk.name} ({', '.join(silent)} no longer answer)"

    def _out_of_time_verdict(self, chk: Check[Any], res: Result) -> Result:
        """The budget ran out inside this check: not the plugin's failure as such (the
        latency check judges speed, on what the run measured); say what was measured."""
        return Result(chk, "skip", f"not finished: {self.out_of_time()}", res.notes)

    def run(
        self, checks: Sequence[Check[Any]], progress: Callable[[Result], None] | None = None
    ) -> list[Result]:
        return run_checks(self, checks, progress)

    def finish(self) -> None:
        """Look for what the run left on this host (mounts, directories)."""
        self.leftovers.inspect_host(self.stopped == "")


def run(
    client: WireClient | str,
    *,
    only: Iterable[str] = (),
    skip: Iterable[str] = (),
    config: Config | None = None,
    faults: Faults | None = None,
) -> list[Result]:
    """Run the suite against a plugin (an address or a client). Destructive checks run when
    ``faults`` is given."""
    from .catalog import select

    wc = client if isinstance(client, WireClient) else WireClient(client)
    checks = select(only, skip, destructive=faults is not None)
    return Runner(wc, config, faults).run(checks)
