"""The check registry, the per-run context and the runner of the conformance suite."""

from __future__ import annotations

import contextlib
import http.client
import secrets
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from . import godecode
from .client import Reply, WireClient

Outcome = Literal["pass", "warn", "fail", "skip", "error"]
DOCS = "docs/conformance.md"


@dataclass(frozen=True)
class Check:
    """One named check. ``why``, ``fix`` and ``engine`` are shown when it fails."""

    name: str
    title: str
    why: str
    fix: str
    engine: str
    func: Callable[[Context], None]
    destructive: bool = False


@dataclass
class Config:
    """Tunables of a run (defaults documented in docs/conformance.md)."""

    prefix: str = "dvconf-"
    #: Volumes created for the latency checks.
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
    opts: dict[str, str] | None = None


@dataclass
class Faults:
    """How to crash and restart the plugin (destructive checks only). ``stop`` is a graceful
    stop (SIGTERM, as the engine and systemd stop plugins); without it that check is skipped."""

    kill: Callable[[], None]
    restart: Callable[[], None]
    stop: Callable[[], None] | None = None


class CheckFailed(Exception):
    """The plugin does something the engine cannot live with."""


class Skipped(Exception):
    """The check cannot run here (missing setup), which is not a failure of the plugin."""


@dataclass
class Result:
    check: Check
    outcome: Outcome
    message: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome in ("pass", "warn", "skip")

    def to_dict(self) -> dict[str, Any]:
        c = self.check
        return {
            "check": c.name,
            "title": c.title,
            "result": self.outcome,
            "message": self.message,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
            "why": c.why,
            "fix": c.fix,
            "engine": c.engine,
            "destructive": c.destructive,
            "docs": f"{DOCS}#{c.name}",
        }


CHECKS: dict[str, Check] = {}


def check(
    name: str, *, title: str, why: str, fix: str, engine: str, destructive: bool = False
) -> Callable[[Callable[[Context], None]], Callable[[Context], None]]:
    """Register a check function under ``name`` (checks run in registration order)."""

    def deco(func: Callable[[Context], None]) -> Callable[[Context], None]:
        if name in CHECKS:
            raise ValueError(f"duplicate check {name}")
        CHECKS[name] = Check(name, title, why, fix, engine, func, destructive)
        return func

    return deco


def new_id() -> str:
    """A mount ID like the engine's: 64 hex characters."""
    return secrets.token_hex(32)


class Context:
    """What a check uses: the client, the config, helpers that track what it created."""

    def __init__(
        self,
        client: WireClient,
        config: Config,
        faults: Faults | None,
        results: dict[str, Result],
        run_id: str,
    ) -> None:
        self.client = client
        self.config = config
        self.faults = faults
        self.results = results
        self.run_id = run_id
        self.notes: list[str] = []
        self.infos: list[str] = []
        #: Field types decoded strictly ("time", "map"): only the checks about them set them,
        #: so one defect fails one check.
        self.strict: set[str] = set()
        self._lock = threading.Lock()
        self._seq = 0
        self.created: set[str] = set()
        self.mounts: Counter[tuple[str, str]] = Counter()
        self.check_name = ""

    # -- naming and bookkeeping ------------------------------------------------------------
    def name(self, tag: str = "v") -> str:
        """A fresh volume name owned by this run: ``dvconf-<run>-<check>-<tag>-<n>``."""
        with self._lock:
            self._seq += 1
            n = self._seq
        return f"{self.config.prefix}{self.run_id}-{self.check_name}-{tag}-{n}"

    def note(self, text: str) -> None:
        """Something worth knowing that does not fail the check (shown as ``warn``)."""
        self.notes.append(text)

    def info(self, text: str) -> None:
        """A fact for the report (a measurement) that does not change the result."""
        self.infos.append(text)

    def passed(self, name: str) -> bool:
        """False when check ``name`` ran in this run and did not pass (True when not run)."""
        r = self.results.get(name)
        return r is None or r.outcome in ("pass", "warn")

    # -- calls ---------------------------------------------------------------------------
    def call(self, endpoint: str, body: Any = None, **kw: Any) -> Reply:
        try:
            return self.client.call(endpoint, body, **kw)
        except (OSError, http.client.HTTPException) as e:
            raise CheckFailed(
                f"{endpoint}: transport error {type(e).__name__}: {e} (the plugin closed the "
                f"connection or did not answer; the engine would retry with an empty body)"
            ) from e

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
        """Call and require a refusal the engine understands: a JSON object with ``Err``."""
        r = self.call(endpoint, body, **kw)
        what = f"{r.endpoint} {_short(body)}"
        obj = r.object()
        if obj is None:
            raise CheckFailed(
                f"{what}: an error must be a JSON object with Err, got {r.describe()}"
            )
        err = r.err
        if not err:
            if r.status == 200:
                raise CheckFailed(f"{what}: expected a refusal (Err), but the plugin succeeded")
            raise CheckFailed(f"{what}: HTTP {r.status} without an Err text ({r.describe()})")
        if r.status != 200:
            self.note(
                f"{what}: HTTP {r.status}; with 200 the user reads the Err text as is, with "
                f"another status the engine prefixes it with '{r.endpoint}: '"
            )
        return err

    # -- volume helpers that remember what to clean up ---------------------------------------
    def opts(self, opts: dict[str, str] | None = None) -> dict[str, str] | None:
        """The Opts to send: the configured options when there are some, else ``opts``."""
        return dict(self.config.opts) if self.config.opts is not None else opts

    def create(self, name: str, opts: dict[str, str] | None = None) -> None:
        with self._lock:
            self.created.add(name)
        self.ok("VolumeDriver.Create", {"Name": name, "Opts": self.opts(opts)})

    def remove(self, name: str) -> None:
        self.ok("VolumeDriver.Remove", {"Name": name})
        with self._lock:
            self.created.discard(name)

    def mount(self, name: str, mount_id: str) -> str:
        with self._lock:
            self.mounts[(name, mount_id)] += 1
        out = self.ok("VolumeDriver.Mount", {"Name": name, "ID": mount_id})
        path = out.get("Mountpoint") or ""
        if not path:
            raise CheckFailed(f"Mount {name!r}: the reply has no Mountpoint")
        return str(path)

    def unmount(self, name: str, mount_id: str) -> None:
        self.ok("VolumeDriver.Unmount", {"Name": name, "ID": mount_id})
        with self._lock:
            if self.mounts[(name, mount_id)] > 0:
                self.mounts[(name, mount_id)] -= 1

    def get(self, name: str) -> dict[str, Any] | None:
        """Get as the engine reads it: the volume, or ``None`` for "not found" (Err or null)."""
        r = self.call("VolumeDriver.Get", {"Name": name})
        obj = r.object()
        if obj is None:
            raise CheckFailed(f"Get {name!r}: the reply is not a JSON object ({r.describe()})")
        if r.err:
            return None
        if r.status != 200:
            raise CheckFailed(f"Get {name!r}: {r.describe()}")
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
        """Undo what the check left behind; errors here are not the check's result."""
        with self._lock:
            mounts = [(k, n) for k, n in self.mounts.items() if n > 0]
            names = sorted(self.created)
            self.mounts.clear()
            self.created.clear()
        for (name, mid), n in mounts:
            for _ in range(n):
                _quiet(self.client, "VolumeDriver.Unmount", {"Name": name, "ID": mid})
        for name in names:
            _quiet(self.client, "VolumeDriver.Remove", {"Name": name})


def _quiet(client: WireClient, endpoint: str, body: Any) -> None:
    with contextlib.suppress(OSError):
        client.call(endpoint, body, timeout=30)


def _short(body: Any) -> str:
    if isinstance(body, dict) and "Name" in body:
        return repr(body["Name"])
    return ""


def select(
    only: Iterable[str] = (), skip: Iterable[str] = (), destructive: bool = False
) -> list[Check]:
    """The checks to run, in suite order; unknown names raise ``KeyError`` with the choices."""
    from . import checks as _checks  # noqa: F401  (registers the checks)

    only, skip = list(only), list(skip)
    for n in [*only, *skip]:
        if n not in CHECKS:
            raise KeyError(f"unknown check {n!r}; the checks are: {', '.join(CHECKS)}")
    ordered = sorted(CHECKS.values(), key=lambda c: c.destructive)  # stable: faults last
    chosen = [c for c in ordered if not only or c.name in only]
    if not destructive:
        chosen = [c for c in chosen if not c.destructive]
    return [c for c in chosen if c.name not in skip]


class Runner:
    """Runs checks one at a time against one plugin and keeps their results."""

    def __init__(
        self, client: WireClient, config: Config | None = None, faults: Faults | None = None
    ) -> None:
        self.client = client
        self.config = config or Config()
        self.faults = faults
        self.run_id = secrets.token_hex(3)
        self.results: dict[str, Result] = {}

    def run_one(self, chk: Check) -> Result:
        ctx = Context(self.client, self.config, self.faults, self.results, self.run_id)
        ctx.check_name = chk.name
        t0 = time.monotonic()
        try:
            if chk.destructive and self.faults is None:
                raise Skipped("destructive checks need a way to restart the plugin")
            chk.func(ctx)
            res = Result(
                chk, "warn" if ctx.notes else "pass", "; ".join(ctx.notes[:1] or ctx.infos)
            )
        except CheckFailed as e:
            res = Result(chk, "fail", str(e))
        except Skipped as e:
            res = Result(chk, "skip", str(e))
        except Exception as e:  # a bug in the kit or an unexpected reply: report, go on
            tb = traceback.format_exc(limit=3)
            res = Result(chk, "error", f"{type(e).__name__}: {e}", [tb])
        finally:
            with contextlib.suppress(Exception):  # cleanup is best effort by design
                ctx.cleanup()
        if res.outcome == "fail" and ctx.infos:
            res.notes.extend(ctx.infos)
        res.notes = [*ctx.notes, *res.notes]
        res.seconds = time.monotonic() - t0
        self.results[chk.name] = res
        return res

    def run(
        self, checks: Sequence[Check], progress: Callable[[Result], None] | None = None
    ) -> list[Result]:
        out = []
        for chk in checks:
            res = self.run_one(chk)
            if progress is not None:
                progress(res)
            out.append(res)
        return out


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
    wc = client if isinstance(client, WireClient) else WireClient(client)
    checks = select(only, skip, destructive=faults is not None)
    return Runner(wc, config, faults).run(checks)
