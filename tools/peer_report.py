"""Render docs/peers.md from the raw reports tools/peer_report.sh wrote (its OUTDIR).

    python tools/peer_report.py OUTDIR > docs/peers.md

Everything on the page comes from the kit's JSON reports; nothing is edited by hand.
"""

from __future__ import annotations

import json
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RUNS = [
    ("dockvol-local", "dockvol `serve --driver local`", "dockvol"),
    ("dockvol-block", "dockvol `serve --driver block`", "dockvol"),
    ("rclone-full", "`rclone serve docker`", "rclone"),
    ("rclone-skip-deadlock", "`rclone serve docker`, `--skip answers-while-mounting`", "rclone"),
    ("buttervolume", "buttervolume `run`, on btrfs", "buttervolume"),
]

INTRO = """\
# The conformance kit on other volume plugins

What `dockvol conformance` reports on two volume plugins nobody here wrote, next to dockvol's own
drivers, with the kit's default settings (`--budget 90`, `--call-timeout 10`, 1,000 volumes for
`latency`) and `--destructive` (the kit kills and restarts each plugin). Each section is the
kit's own report, shortened; the verdicts are explained in [conformance.md](conformance.md).

Reproduce it with one command, as root on Debian (it installs rclone and btrfs-progs with apt,
buttervolume with pip into a separate venv, runs every plugin on a private socket, bounded in
time, and removes what it made):

```sh
tools/peer_report.sh /tmp/dockvol-peers     # rewrites this page; raw reports in the directory
```

`rclone serve docker` needs a remote per volume: the run gives it one directory per volume on
rclone's local backend with `-o remote=:local:DIR/{name}` (`{name}` is each volume's name).
rclone deadlocks in `answers-while-mounting` and the kit then stops the run (Get and List no
longer answer), so rclone is run a second time with that check skipped, to show what else the
kit finds. buttervolume runs on a loop-mounted btrfs image.
"""


def _load(out: Path, name: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    report = out / f"{name}.json"
    run = out / f"{name}.run.json"
    meta = json.loads(run.read_text()) if run.exists() else {}
    return (json.loads(report.read_text()) if report.exists() else None), meta


def _short(text: str, width: int = 1200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _left(left: dict[str, Any]) -> list[str]:
    lines = []
    for name, why in left.get("volumes", {}).items():
        lines.append(f"volume `{name}` ({why})")
    for held in left.get("mount_ids", []):
        name, _, mid = held.rpartition(" ")
        lines.append(f"mount ID `{mid[:12]}...` of `{name}` not released")
    for path, fstype in left.get("mounts", {}).items():
        lines.append(f"`{path}` still mounted ({fstype})")
    dirs = left.get("directories", [])
    if dirs:
        lines.append(f"{len(dirs)} directories left where removed volumes were mounted")
    for path in left.get("files", []):
        lines.append(f"file `{path}`")
    return lines


def render(out: Path) -> str:
    versions = dict(
        line.split("=", 1)
        for line in (out / "versions.txt").read_text().splitlines()
        if "=" in line
    )
    when = datetime.fromtimestamp((out / "versions.txt").stat().st_mtime, UTC)
    parts = [INTRO, f"Run on {when:%Y-%m-%d} (2 cores, Debian 12).", ""]
    parts += [
        "| plugin | version | pass | warn | FAIL | skip | error | verdict | run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    sections = []
    for name, label, pkg in RUNS:
        report, meta = _load(out, name)
        version = versions.get(pkg, "?")
        if report is None:
            parts.append(
                f"| {label} | {version} | | | | | | no report (exit {meta.get('exit')}) | |"
            )
            sections.append(f"## {label}\n\nNo report: the run exited with {meta.get('exit')}.")
            continue
        s = report["summary"]
        verdict = "conformant" if report["ok"] else "**not conformant**"
        parts.append(
            f"| {label} | {version} | {s['pass']} | {s['warn']} | {s['fail']} | {s['skip']} | "
            f"{s['error']} | {verdict} | {meta.get('seconds', '?')} s |"
        )
        sections.append(_section(label, report, meta))
    return "\n".join(parts) + "\n\n" + "\n\n".join(sections) + "\n"


def _section(label: str, report: dict[str, Any], meta: dict[str, Any]) -> str:
    out = [f"## {label}", ""]
    flags = " ".join(meta.get("flags", []))
    if flags:
        out += [f"Kit flags besides `--destructive`: `{flags}`", ""]
    by = {"fail": [], "error": [], "warn": [], "skip": []}  # type: dict[str, list[str]]
    for c in report["checks"]:
        if c["result"] in by:
            by[c["result"]].append(f"- `{c['check']}`: {_short(c['message'])}")
    for key, title in (
        ("fail", "Failures (a Docker user is hurt through a real engine)"),
        ("error", "Errors (the kit could not judge)"),
        ("warn", "Warnings (tolerated by the engine)"),
        ("skip", "Skipped"),
    ):
        if by[key]:
            out += [f"**{title}:**", "", *by[key], ""]
    passed = [c["check"] for c in report["checks"] if c["result"] == "pass"]
    if passed:
        out += textwrap.wrap(
            "**Passed:** " + ", ".join(f"`{p}`" for p in passed), 100, break_on_hyphens=False
        )
        out.append("")
    left = _left(report.get("left_behind", {}))
    out += ["**Left behind:** nothing." if not left else "**Left behind:**", ""]
    out += [f"- {x}" for x in left]
    return "\n".join(out).rstrip()


if __name__ == "__main__":
    sys.stdout.write(render(Path(sys.argv[1])))
