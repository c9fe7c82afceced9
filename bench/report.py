"""BENCHMARKS.md and the ratio chart, from the results of one run."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .chart import Bar, Group, bar_chart
from .external import records

GET_P50_MS = 0.12
LIST_MS = 5.0
COLD_START_MS = 120.0
RSS_MB = 40.0


def _f(v: Any, digits: int = 3) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.{digits}f}"
    return str(v)


def _yes(met: bool | None) -> str:
    return "n/a" if met is None else ("**yes**" if met else "**no**")


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += [
        "| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows
    ]
    return [*out, ""]


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the issue with its measured value; ``met`` is None when not measured."""
    out: list[dict[str, Any]] = []
    eng = res.get("engine", {})
    for row in eng.get("cli", []):
        floor = f"; no-work plugin {row['floor_ratio']:.3f}x" if "floor_ratio" in row else ""
        out.append(
            {
                "name": f"`{row['op']}` vs built-in",
                "target": f"<= {row['target']:.2f}x",
                "value": f"{row['ratio']:.3f}x (95% CI {row['ratio_lo']:.2f}-{row['ratio_hi']:.2f}"
                f"{floor})",
                "met": row["met"],
                "ratio": row["ratio"] / row["target"],
                "short": row["op"].replace("docker ", ""),
            }
        )
    if "cli" not in eng:
        out.append(
            {
                "name": "engine operations vs built-in",
                "target": "<= 1.05x",
                "value": "not measured",
                "met": None,
                "ratio": math.nan,
                "short": "engine",
            }
        )
    sock = res.get("socket", {})
    lat = {(r["endpoint"], r["concurrency"]): r for r in sock.get("latency", [])}
    get = lat.get(("Get", 1))
    lst = sock.get("list")
    cold = sock.get("cold_start", {}).get("serve")
    rss = sock.get("rss")

    def add(name: str, short: str, target: float, unit: str, value: float | None) -> None:
        if value is None:
            out.append(
                {
                    "name": name,
                    "target": f"< {target:g} {unit}",
                    "value": "not measured",
                    "met": None,
                    "ratio": math.nan,
                    "short": short,
                }
            )
            return
        out.append(
            {
                "name": name,
                "target": f"< {target:g} {unit}",
                "value": f"{value:.3f} {unit}" if value < 10 else f"{value:.1f} {unit}",
                "met": value < target,
                "ratio": value / target,
                "short": short,
            }
        )

    add("Get p50, concurrency 1", "get p50 c=1", GET_P50_MS, "ms", get["p50_ms"] if get else None)
    n = f"{lst['volumes']:,}" if lst else "10,000"
    add(
        f"List of {n} volumes (p50)",
        f"list {n} volumes",
        LIST_MS,
        "ms",
        lst["p50_ms"] if lst else None,
    )
    add(
        "cold start to first answer (median)",
        "cold start",
        COLD_START_MS,
        "ms",
        cold["median_ms"] if cold else None,
    )
    vols = f"{rss['volumes']:,}" if rss else "10,000"
    add(f"RSS with {vols} volumes", "rss", RSS_MB, "MB", rss["rss_mib"] * 1.048576 if rss else None)
    return out


def chart(res: dict[str, Any], path: Path) -> None:
    groups = []
    eng = res.get("engine", {})
    if eng.get("cli"):
        groups.append(
            Group(
                "engine operations, docker cli: dockvol time / built-in local time (target 1.05)",
                [Bar(r["op"].replace("docker ", ""), r["ratio"], r["target"]) for r in eng["cli"]],
            )
        )
    if eng.get("api"):
        groups.append(
            Group(
                "engine operations, engine api without the cli: dockvol / local (no target)",
                [Bar(r["op"].replace("docker ", "api "), r["ratio"], None) for r in eng["api"]],
            )
        )
    sock = [
        t
        for t in targets(res)
        if t["short"] in ("get p50 c=1", "cold start", "rss") or t["short"].startswith("list")
    ]
    if sock:
        groups.append(
            Group(
                "on the socket: measured / target (target 1.0)",
                [Bar(t["short"], t["ratio"], 1.0) for t in sock],
            )
        )
    title = "dockvol benchmark ratios (lower is better)" + (" - quick run" if res["quick"] else "")
    bar_chart(title, groups, path)


def markdown(res: dict[str, Any], out: Path, chart_path: Path) -> str:
    chart(res, chart_path)
    m = res["machine"]
    L: list[str] = ["# Benchmarks", ""]
    L.append(
        "Generated by `python -m bench`"
        + (
            " **--quick** (a smoke run: small sizes, few repetitions; not comparable with the targets)"
            if res["quick"]
            else ""
        )
        + f" on {res['started']}, in {res['seconds']:.0f} s. Do not edit by hand: run it again."
    )
    L.append("")
    pk = m["packages"]
    L.append(
        f"Machine: {m['cpu'] or 'unknown CPU'}, {m['cores']} cores, Linux {m['kernel']}, "
        f"Python {m['python']}; dockvol {pk['dockvol']} ({m['commit']}), "
        + "".join(f"{name} {pk[name]}, " for name in sorted(pk) if name != "dockvol")[:-2]
        + ". "
        f"Load average before/after: {res['load_before'][0]:.2f} / {res['load_after'][0]:.2f}"
        + "".join(f", after {k}: {v:.2f}" for k, v in res.get("section_load", {}).items())
        + " (a shared machine: read the floors below to judge the absolute numbers)."
    )
    L += ["", f"![ratios]({os.path.relpath(chart_path, out.parent)})", ""]

    L += ["## Summary: targets", ""]
    rows = [[t["name"], t["target"], t["value"], _yes(t["met"])] for t in targets(res)]
    L += _table(["what", "target", "measured", "met"], rows)

    L += _engine(res.get("engine", {}))
    L += _socket(res.get("socket", {}))
    L += _csi(res.get("csi"))
    L += _swarm(res.get("swarm"))
    for name, title in (("block", "Block driver"), ("cluster", "Cluster")):
        L += _external(title, res.get(name))
    L += _method()
    return "\n".join(L).rstrip() + "\n"


def _failed(section: dict[str, Any]) -> list[str]:
    return [f"**This section failed:** {section.get('error', 'unknown error')}", ""]


def _engine(eng: dict[str, Any]) -> list[str]:
    L = ["## Engine operations: dockvol `local` vs the built-in `local` driver", ""]
    if not eng:
        return [*L, "Not run (see `--only`).", ""]
    if eng.get("status") == "failed":
        return L + _failed(eng)
    L.append(
        f"One private engine ({eng['engine_version']}), both drivers side by side, interleaved "
        "(each repetition runs every operation once per driver, alternating which goes first). "
        f"Medians over n repetitions; ratio = dockvol / built-in, with a 95% bootstrap interval. "
        f"`ls` lists {eng['population']:,} volumes of the driver (`--filter driver=...`: the "
        "engine asks only that driver)."
    )
    L += [
        "",
        "### Through the docker CLI (as users run it; target: ratio <= 1.05)",
        "",
        "`no-work plugin`: the floor plugin of the API view below (fixed answers, no disk) "
        "through the same CLI commands in the same repetitions: what any plugin costs there.",
        "",
    ]
    head = ["operation", "n", "dockvol ms", "built-in ms", "ratio", "95% CI", "met"]
    head += ["no-work plugin ms", "no-work plugin ratio"]
    rows = [
        [
            r["op"],
            r["n"],
            r["dockvol_ms"],
            r["local_ms"],
            f"{r['ratio']:.3f}x",
            f"{r['ratio_lo']:.2f}-{r['ratio_hi']:.2f}",
            _yes(r["met"]),
            r.get("floor_ms", "-"),
            f"{r['floor_ratio']:.3f}x" if "floor_ratio" in r else "-",
        ]
        for r in eng["cli"]
    ]
    L += _table(head, rows)
    L += [
        "### Through the engine's API (no CLI start-up in the time: the drivers' own difference)",
        "",
        "No target here: it shows where a CLI ratio comes from.",
        "",
    ]
    rows = [
        [
            r["op"].replace("docker ", "API "),
            r["n"],
            r["dockvol_ms"],
            r["local_ms"],
            f"{r['ratio']:.3f}x",
            f"{r['ratio_lo']:.2f}-{r['ratio_hi']:.2f}",
            f"{r['dockvol_ms'] - r['local_ms']:+.2f} ms",
        ]
        for r in eng["api"]
    ]
    L += _table(
        ["operation", "n", "dockvol ms", "built-in ms", "ratio", "95% CI", "difference"], rows
    )
    return L


def _socket(s: dict[str, Any]) -> list[str]:
    L = ["## On the plugin's socket", ""]
    if not s:
        return [*L, "Not run (see `--only`).", ""]
    if s.get("status") == "failed":
        return L + _failed(s)
    L.append(
        "A raw keep-alive client with pre-built requests shaped like the engine's (empty Host, "
        "no Content-Type, body ending in a newline); concurrency 16 = 16 connections, each with "
        "one request in flight, driven by one epoll loop. `server CPU` is the plugin process's "
        "own CPU time per request (from /proc), which other load on the machine does not "
        "inflate the way it inflates latency. The plugin runs with its defaults (log level info)."
    )
    L.append("")
    head = ["request", "concurrency", "n", "p50 ms", "p99 ms", "server CPU us/request"]
    rows = [
        [
            r["endpoint"],
            r["concurrency"],
            r["n"],
            r["p50_ms"],
            r["p99_ms"],
            _f(r["server_cpu_us"], 0),
        ]
        for r in s["latency"]
    ]
    g, fl = s["get_full"], s["floor"]
    rows.append(
        [
            f"Get ({g['volumes']:,} volumes)",
            1,
            g["n"],
            g["p50_ms"],
            g["p99_ms"],
            _f(g["server_cpu_us"], 0),
        ]
    )
    ls = s["list"]
    rows.append(
        [
            f"List ({ls['volumes']:,} volumes, {ls['reply_bytes']:,} bytes)",
            1,
            ls["n"],
            ls["p50_ms"],
            ls["p99_ms"],
            _f(ls["server_cpu_us"], 0),
        ]
    )
    rows.append(
        [
            "floor: fixed reply from a bare asyncio server (interleaved with Get)",
            1,
            fl["n"],
            fl["p50_ms"],
            fl["p99_ms"],
            _f(fl["server_cpu_us"], 0),
        ]
    )
    L += _table(head, rows)
    L.append(
        "Mount and Unmount: the first reference of a mount ID runs the driver and commits the "
        "registry (an fsynced SQLite transaction); the last reference too. Their CPU column is "
        "the pair's CPU split evenly. At concurrency 16 each connection mounts its own volume."
    )
    L.append("")
    c = s["create"]
    L.append(
        f"Filling the registry: {c['n']:,} Creates at concurrency {c['concurrency']}, "
        f"{c['per_s']:.0f}/s, p50 {c['p50_ms']:.2f} ms, p99 {c['p99_ms']:.2f} ms."
    )
    L += ["", "### Start and memory", ""]
    cs, it, cl = s["cold_start"]["serve"], s["cold_start"]["interpreter"], s["cold_start_loaded"]
    rows = [
        [
            "cold start: spawn `python -m dockvol serve` to first Capabilities answer (empty state)",
            cs["runs"],
            cs["median_ms"],
            cs["min_ms"],
            cs["max_ms"],
            cs["cpu_ms"],
        ],
        [
            f"cold start with {cl['volumes']:,} volumes in the registry",
            cl["runs"],
            cl["median_ms"],
            cl["min_ms"],
            cl["max_ms"],
            cl["cpu_ms"],
        ],
        [
            "floor: `python -c pass` in the same environment (interleaved)",
            it["runs"],
            it["median_ms"],
            it["min_ms"],
            it["max_ms"],
            it["cpu_ms"],
        ],
    ]
    L += _table(["what", "runs", "median ms", "min ms", "max ms", "CPU ms (median)"], rows)
    L.append(
        "Started as an installed package runs: with its bytecode cached (one start, not "
        "counted, fills a private cache first). `CPU ms` is the child's CPU time when it "
        "answers; on a loaded machine the wall time is mostly waiting for a core."
    )
    L.append("")
    r = s["rss"]
    L.append(
        f"Memory of the serving process with {r['volumes']:,} volumes, after Lists: "
        f"VmRSS {r['rss_mib']:.1f} MiB ({r['rss_mib'] * 1.048576:.1f} MB), "
        f"peak (VmHWM) {r['hwm_mib']:.1f} MiB."
    )
    return [*L, ""]


def _csi(res: dict[str, Any] | None) -> list[str]:
    L = ["## CSI front end beside the Docker front end", ""]
    if res is None:
        return [*L, "Not run (see `--only`).", ""]
    if res.get("status") == "failed":
        return [*L, f"Failed: {res.get('error')}", ""]
    L += [
        f"One `dockvol serve --driver {res['driver']} --csi-endpoint ...` process; each call on "
        f"its own volume, one at a time, {res['n']} of each, from one client (the Docker calls "
        "over the plugin socket with the raw client, the CSI calls with grpcio's Python client). "
        "Publishing is a real bind mount.",
        "",
    ]
    rows = [[k, v["median_ms"], v["p90_ms"], v["n"]] for k, v in res["rows"].items()]
    L += _table(["call", "median ms", "p90 ms", "n"], rows)
    return [*L, ""]


def _swarm(res: dict[str, Any] | None) -> list[str]:
    L = ["## Through Swarm: a service on a cluster volume vs on a named volume", ""]
    if res is None:
        return [*L, "Not run (see `--only`).", ""]
    if res.get("status") == "failed":
        return [*L, f"Failed: {res.get('error')}", ""]
    L += [
        f"One private engine ({res['engine_version']}) in a one-node swarm, the managed CSI "
        "plugin from `dockvol plugin build --csi` enabled. Time from starting `docker service "
        "create --detach` (one task, `busybox sleep 300`) to the task seen running in the "
        f"engine's API, polled every {res['poll_ms']:.0f} ms (the resolution); `engine-stamped` "
        "is the engine's own timestamp of the running state, no poll in it. Both volumes exist "
        "beforehand; each service is removed, its task gone and the cluster volume unpublished "
        f"before the next. {res['n']} repetitions of each, interleaved, alternating which goes "
        "first, after one warm-up of each.",
        "",
    ]
    rows = [
        [k, v["median_ms"], v["stamped_median_ms"], v["p90_ms"], v["max_ms"], v["n"]]
        for k, v in res["rows"].items()
    ]
    L += _table(["mount", "median ms", "engine-stamped ms", "p90 ms", "max ms", "n"], rows)
    L.append(
        f"Ratio cluster / named (medians): **{res['ratio']:.2f}x** "
        f"(95% bootstrap CI {res['ratio_lo']:.2f}-{res['ratio_hi']:.2f}). "
        f"Setup (engine, plugin build, swarm) {res['setup_s']:.0f} s; section {res['seconds']:.0f} s."
    )
    return [*L, ""]


def _external(title: str, ext: dict[str, Any] | None) -> list[str]:
    L = [f"## {title}", ""]
    if ext is None:
        return [*L, "Not run (see `--only`).", ""]
    st = ext.get("status")
    if st == "absent":
        return [*L, f"`bench/{ext['script']}` is not in this checkout.", ""]
    if st == "failed":
        L.append(f"**`bench/{ext.get('script', '?')}` failed:** {ext.get('error', '')}")
        if ext.get("output"):
            L += ["", "```", ext["output"], "```"]
        return [*L, ""]
    data = ext["result"]
    L.append(
        f"From `python -m bench.{ext['script'].removesuffix('.py')}` ({ext['seconds']:.0f} s)."
    )
    L.append("")
    # One table per shape of record (records with the same fields share a table).
    tables: dict[tuple[str, ...], list[tuple[str, dict[str, Any]]]] = {}
    for name, rec in records(data):
        tables.setdefault(tuple(rec), []).append((name, rec))
    for fields, recs in tables.items():
        rows = [[name, *(_cell(rec[f]) for f in fields)] for name, rec in recs]
        L += _table(["measure", *fields], rows)
    return L


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}" if abs(v) >= 0.001 or v == 0 else f"{v:.3g}"
    if isinstance(v, list):
        return ", ".join(_cell(x) for x in v)
    return str(v)


def _method() -> list[str]:
    return [
        "## Method",
        "",
        "- `python -m bench` (full, about 10 minutes) or `python -m bench --quick` (smoke). "
        "`--only engine,socket,csi,swarm,block,cluster` picks sections; `--json FILE` keeps raw results.",
        "- Engine: a private dockerd (vfs, no network) from `tests/support/engine.py`; the "
        "plugin is the real `python -m dockvol serve` with its defaults. The CLI times include "
        "the docker CLI's own start-up, the same for both drivers.",
        "- Socket: `bench/rawclient.py` (pre-built request bytes, keep-alive, epoll for "
        "concurrency) so the client costs little; the floor row is the same client against a "
        "server that does nothing but answer.",
        "- Profiling a missed target: `python -m bench.profile --endpoint Get|List|Mount` "
        "(cProfile of a real `dockvol serve`), `python -X importtime -m dockvol serve --help` "
        "for start-up.",
        "",
    ]
