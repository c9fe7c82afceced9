"""Metrics: exposition format, bounded labels, and the /metrics + /health listener."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
from typing import Any

import pytest

from dockvol._transport.metrics import BUCKETS, CONTENT_TYPE, Metrics, parse_listen, serve_metrics

_SAMPLE = re.compile(r'^[a-z_]+(\{([a-z_]+="([^"\\\n]|\\.)*",?)*\})? [-+0-9.eInfa]+$')


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ .+$", line), line
            continue
        assert _SAMPLE.match(line), line
        key, value = line.rsplit(" ", 1)
        out[key] = float(value)
    return out


def test_counters_and_histogram() -> None:
    m = Metrics(driver="local", version="1.2")
    m.observe("/VolumeDriver.Get", "ok", 0.0003)
    m.observe("VolumeDriver.Get", "ok", 0.002)
    m.observe("VolumeDriver.Mount", "error", 3.0)
    m.driver_error()
    text = m.render().decode()
    s = _samples(text)
    assert s['dockvol_requests_total{endpoint="VolumeDriver.Get",outcome="ok"}'] == 2
    assert s['dockvol_requests_total{endpoint="VolumeDriver.Mount",outcome="error"}'] == 1
    assert s["dockvol_driver_errors_total"] == 1
    h = "dockvol_request_duration_seconds"
    assert s[f'{h}_bucket{{endpoint="VolumeDriver.Get",le="0.00025"}}'] == 0
    assert s[f'{h}_bucket{{endpoint="VolumeDriver.Get",le="0.0005"}}'] == 1
    assert s[f'{h}_bucket{{endpoint="VolumeDriver.Get",le="0.0025"}}'] == 2
    assert s[f'{h}_bucket{{endpoint="VolumeDriver.Get",le="+Inf"}}'] == 2
    assert s[f'{h}_count{{endpoint="VolumeDriver.Get"}}'] == 2
    assert s[f'{h}_sum{{endpoint="VolumeDriver.Get"}}'] == pytest.approx(0.0023)
    assert s[f'{h}_bucket{{endpoint="VolumeDriver.Mount",le="2.5"}}'] == 0
    assert s[f'{h}_bucket{{endpoint="VolumeDriver.Mount",le="5"}}'] == 1
    assert s['dockvol_build_info{version="1.2",driver="local"}'] == 1
    # Buckets are cumulative and monotonic for every endpoint.
    for ep in ("VolumeDriver.Get", "VolumeDriver.Mount"):
        values = [s[f'{h}_bucket{{endpoint="{ep}",le="{le}"}}'] for le in ("0.0001", "1", "120")]
        assert values == sorted(values)
    assert text.count(f"# TYPE {h} histogram") == 1


def test_labels_stay_bounded_under_random_paths() -> None:
    m = Metrics()
    for i in range(1000):
        m.observe(f'/../../etc/passwd{i}\n"x', f"weird{i}", 0.001)
    assert set(m.requests()) == {("other", "other")}
    assert m.requests()["other", "other"] == 1000
    _samples(m.render().decode())


def test_gauges_read_at_scrape_time_and_broken_gauge_is_skipped() -> None:
    m = Metrics()
    box = {"n": 3}
    m.gauge("volumes", "Volumes known.", lambda: box["n"])
    m.gauge("broken", "Raises.", lambda: 1 / 0)
    assert _samples(m.render().decode())["dockvol_volumes"] == 3
    box["n"] = 5
    text = m.render().decode()
    assert _samples(text)["dockvol_volumes"] == 5
    assert "dockvol_broken" not in text


def test_label_values_are_escaped() -> None:
    m = Metrics(driver='a"b\\c\nd')
    assert 'driver="a\\"b\\\\c\\nd"' in m.render().decode()


def test_parse_listen() -> None:
    assert parse_listen("9100") == ("127.0.0.1", 9100)
    assert parse_listen(":9100") == ("127.0.0.1", 9100)
    assert parse_listen("0.0.0.0:9100") == ("0.0.0.0", 9100)
    assert parse_listen("[::1]:9100") == ("::1", 9100)


def _get(port: int, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, r.getheader("content-type") or "", r.read()
    finally:
        conn.close()


def test_listener_serves_metrics_and_health() -> None:
    m = Metrics(driver="local")
    health: dict[str, Any] = {"ready": False}
    m.gauge("volumes", "Volumes known.", lambda: 7)

    async def scenario() -> list[tuple[int, str, bytes]]:
        async with serve_metrics("127.0.0.1:0", m, lambda: health) as (host, port):
            assert host == "127.0.0.1"
            got = [await asyncio.to_thread(_get, port, "/health")]
            health.update(ready=True, reconcile={"ok": True, "volumes": 7})
            for path in ("/health", "/metrics", "/nope"):
                got.append(await asyncio.to_thread(_get, port, path))
            got.append(await asyncio.to_thread(_get, port, "/metrics", "POST"))
            return got

    not_ready, ready, metrics, missing, post = asyncio.run(scenario())
    assert not_ready[0] == 503 and json.loads(not_ready[2]) == {"ready": False}
    assert ready[0] == 200 and json.loads(ready[2])["reconcile"] == {"ok": True, "volumes": 7}
    assert metrics[0] == 200 and metrics[1] == CONTENT_TYPE
    assert _samples(metrics[2].decode())["dockvol_volumes"] == 7
    assert missing[0] == 404
    assert post[0] == 405


def test_listener_reports_busy_port() -> None:
    async def scenario() -> None:
        async with serve_metrics("127.0.0.1:0", Metrics(), dict) as (_, port):
            with pytest.raises(OSError, match="cannot listen for metrics"):
                async with serve_metrics(f"127.0.0.1:{port}", Metrics(), dict):
                    pass

    asyncio.run(scenario())


def test_buckets_cover_engine_timeouts() -> None:
    assert BUCKETS[-1] >= 120  # Create and Mount may take up to the engine's 2 minutes
    assert list(BUCKETS) == sorted(BUCKETS)
