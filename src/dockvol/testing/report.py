"""Reports of a conformance run: a text table, JSON and JUnit XML."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from .leftovers import Leftovers
from .verdict import DOCS, OUTCOMES, Result

_LABEL = {"pass": "pass", "warn": "warn", "fail": "FAIL", "skip": "skip", "error": "ERROR"}


def row(res: Result, width: int = 100) -> str:
    """One table row; a failure or warning is followed by why, what to fix and the reference."""
    c = res.check
    head = f"{c.name:<24} {_LABEL[res.outcome]:<6} {res.seconds:6.2f}s  "
    msg = res.message or c.title
    lines = textwrap.wrap(msg, width - len(head)) or [""]
    out = [head + lines[0], *(" " * len(head) + li for li in lines[1:])]
    if res.outcome in ("fail", "error", "warn"):
        details = [("why", c.why), ("fix", c.fix), ("engine", c.engine)]
        if res.outcome == "warn":  # the other warnings, then what to change
            details = [("also", n) for n in res.notes[:3]] + [("fix", c.fix)]
        for label, text in (*details, ("docs", f"{DOCS}#{c.name}")):
            out += textwrap.wrap(
                text, width, initial_indent=f"    {label + ':':<8}", subsequent_indent=" " * 12
            )
        if res.outcome == "error":
            out += ["    " + li for n in res.notes for li in n.splitlines()]
    return "\n".join(out)


def header() -> str:
    return f"{'CHECK':<24} {'RESULT':<6} {'TIME':>7}  DETAIL"


def summary(results: Sequence[Result]) -> str:
    n = Counter(r.outcome for r in results)
    parts = [f"{n[k]} {k}" for k in OUTCOMES if n[k]]
    verdict = "conformant" if all(r.ok for r in results) else "NOT conformant"
    return f"{len(results)} checks: {', '.join(parts) or 'none'} -> {verdict}"


def table(results: Sequence[Result], width: int = 100, leftovers: Leftovers | None = None) -> str:
    tail = [] if leftovers is None else ["", leftovers.render()]
    return "\n".join([header(), *(row(r, width) for r in results), "", summary(results), *tail])


def to_json(
    results: Sequence[Result], target: str, leftovers: Leftovers | None = None
) -> dict[str, Any]:
    n = Counter(r.outcome for r in results)
    out: dict[str, Any] = {
        "target": target,
        "ok": all(r.ok for r in results),
        "summary": {k: n[k] for k in OUTCOMES},
        "checks": [r.to_dict() for r in results],
    }
    if leftovers is not None:
        out["left_behind"] = leftovers.to_dict()
    return out


def write_json(
    path: str | Path, results: Sequence[Result], target: str, leftovers: Leftovers | None = None
) -> None:
    Path(path).write_text(json.dumps(to_json(results, target, leftovers), indent=2) + "\n")


def write_junit(path: str | Path, results: Sequence[Result], target: str) -> None:
    n = Counter(r.outcome for r in results)
    suite = ET.Element(
        "testsuite",
        name="dockvol-conformance",
        tests=str(len(results)),
        failures=str(n["fail"]),
        errors=str(n["error"]),
        skipped=str(n["skip"]),
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    ET.SubElement(ET.SubElement(suite, "properties"), "property", name="target", value=target)
    for r in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname="dockvol.conformance",
            name=r.check.name,
            time=f"{r.seconds:.3f}",
        )
        detail = f"why: {r.check.why}\nfix: {r.check.fix}\nengine: {r.check.engine}"
        if r.outcome == "fail":
            ET.SubElement(case, "failure", message=r.message).text = detail
        elif r.outcome == "error":
            ET.SubElement(case, "error", message=r.message).text = "\n".join(r.notes)
        elif r.outcome == "skip":
            ET.SubElement(case, "skipped", message=r.message)
        if r.notes or (r.outcome == "pass" and r.message):
            ET.SubElement(case, "system-out").text = "\n".join([r.message, *r.notes])
    ET.indent(suite)
    Path(path).write_bytes(ET.tostring(suite, encoding="utf-8", xml_declaration=True) + b"\n")
