"""Small statistics helpers: the machine is noisy, so medians and percentiles, never means."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank: a value that was really observed."""
    if not values:
        return math.nan
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def median(values: Sequence[float]) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def ms(seconds: float) -> float:
    return seconds * 1000.0


def summary(samples: Sequence[float], digits: int = 3) -> dict[str, float]:
    """Median, p90 and max in ms, and the sample count: one row of a bench table."""
    return {
        "median_ms": round(ms(median(samples)), digits),
        "p90_ms": round(ms(percentile(samples, 90)), digits),
        "max_ms": round(ms(max(samples)), digits),
        "n": len(samples),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (from /proc): the server's own cost, which
    scheduling noise from other processes on the machine does not inflate."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()
