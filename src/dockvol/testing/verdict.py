"""The verdict model of a conformance kit, independent of the protocol under test.

A :class:`Check` is metadata (what it checks, why, the engine behaviour it protects with its
version range, how to fix a failure, what is only tolerated) plus a function of a context. The
Docker volume suite (``suite.py``) and any other suite (CSI) give their own context type and
reuse the outcomes, results, reports and generated docs.

Outcomes, and what each promises:

- ``pass``: the check's key observation happened and the plugin behaved as the engine needs;
- ``warn``: the engine tolerates what the plugin did; the message says when it would bite
  (another engine, Swarm, a global scope, a caller that is not the engine);
- ``fail``: a Docker user is hurt through a real engine (the check's ``engine`` text says which
  behaviour, in which versions);
- ``skip``: the key observation could not be made here; the message says why;
- ``error``: the kit itself broke (a bug or a reply it did not foresee).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

Outcome = Literal["pass", "warn", "fail", "skip", "error"]
OUTCOMES: tuple[Outcome, ...] = ("pass", "warn", "fail", "error", "skip")
DOCS = "docs/conformance.md"

C = TypeVar("C")


class CheckFailed(Exception):
    """The plugin does something that hurts a user through a real engine."""


class Hang(CheckFailed):
    """A call did not answer within its deadline."""

    def __init__(self, endpoint: str, seconds: float, detail: str = "") -> None:
        self.endpoint = endpoint
        self.seconds = seconds
        self.detail = detail
        super().__init__(self.describe())

    def describe(self) -> str:
        text = f"hang: {self.endpoint} did not answer within {self.seconds:g}s"
        return f"{text}; {self.detail}" if self.detail else text


class Skipped(Exception):
    """The key observation of the check could not be made here (not the plugin's fault)."""


class OutOfTime(Exception):
    """The run's total time budget is used up."""


@dataclass(frozen=True)
class Check(Generic[C]):
    """One named check and the words that explain it (rendered into the docs and reports).

    ``checks`` says what is observed, ``why`` what a user suffers, ``engine`` which engine
    behaviour (code location and versions) makes it matter, ``fix`` what to change, and
    ``tolerated`` what only warns and when that would bite."""

    name: str
    title: str
    checks: str
    why: str
    engine: str
    fix: str
    func: Callable[[C], None]
    tolerated: str = ""
    destructive: bool = False
    #: Runs even when the run's time budget is used up (it judges what the run measured).
    after_budget: bool = False


def check(
    name: str,
    *,
    title: str,
    checks: str,
    why: str,
    engine: str,
    fix: str,
    tolerated: str = "",
    destructive: bool = False,
    after_budget: bool = False,
) -> Callable[[Callable[[C], None]], Check[C]]:
    """Turn a function into a :class:`Check`. Nothing is registered: a suite lists its checks
    explicitly (see ``catalog.py``)."""

    def make(func: Callable[[C], None]) -> Check[C]:
        return Check(
            name, title, checks, why, engine, fix, func, tolerated, destructive, after_budget
        )

    return make


def bites(text: str, when: str) -> str:
    """A warning's text: what the plugin did, and the condition under which it would hurt."""
    return f"{text} (tolerated by the engine; it bites {when})"


@dataclass
class Result:
    check: Check[Any]
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


def execute(chk: Check[C], ctx: C, warnings: list[str], infos: list[str]) -> Result:
    """Run one check and turn how it ended into a result. ``warnings`` and ``infos`` are the
    lists the context filled while it ran (warnings make a pass a warn)."""
    try:
        chk.func(ctx)
        if warnings:
            res = Result(chk, "warn", warnings[0], warnings[1:])
        else:
            res = Result(chk, "pass", "; ".join(infos))
    except CheckFailed as e:
        res = Result(chk, "fail", str(e), [*warnings, *infos])
    except Skipped as e:
        res = Result(chk, "skip", str(e), list(warnings))
    except OutOfTime as e:
        res = Result(chk, "skip", str(e))
    except Exception as e:  # a bug in the kit or a reply it did not foresee: report, go on
        tb = traceback.format_exc(limit=3)
        res = Result(chk, "error", f"{type(e).__name__}: {e}", [tb])
    return res


class CheckRunner(Protocol):
    """What :func:`run_checks` needs of a kit's runner (the Docker-protocol or the CSI one)."""

    def run_one(self, chk: Check[Any]) -> Result: ...

    def finish(self) -> None: ...


def run_checks(
    runner: CheckRunner,
    checks: Sequence[Check[Any]],
    progress: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Run ``checks`` in order, telling ``progress`` of each result, then finish the run."""
    out = []
    for chk in checks:
        res = runner.run_one(chk)
        if progress is not None:
            progress(res)
        out.append(res)
    runner.finish()
    return out
