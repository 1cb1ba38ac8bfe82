"""Scenario 2, non-blocking: a plain page's latency, idle and with many running jobs.

A probe process loads ``/progress/`` (a visitor with a session, as a browser
reloading the page) at 20 requests a second, first with the server idle, then
with N demo.timer jobs running at 1 update a second each (nobody watching them:
the cost measured is running, persisting and publishing jobs).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

from . import harness, watchers

NAME = "nonblocking"
QUICK_JOBS, QUICK_WINDOW = 300, 5.0
FULL_JOBS, FULL_WINDOW = 1000, 20.0
PROBE_RATE = 20.0
#: Expected job starts per second through the API, to size the jobs' length.
START_RATE = 60.0

COLUMNS = [
    ("phase", "phase"),
    ("running", "running jobs"),
    ("requests", "requests"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("max_ms", "max ms"),
    ("failed", "failed"),
    ("server_cpu", "srv CPU"),
    ("server_rss_mb", "RSS MB"),
    ("other_load", "other load"),
]


def probe(
    server: harness.Server, cookie: str, window: float, name: str
) -> tuple[dict[str, Any], dict]:
    meter = harness.Meter([server.pid])
    t0 = time.time() + 1.5
    t1 = t0 + window
    config = {"port": server.port, "method": "GET", "path": "/progress/",
              "headers": {"Cookie": cookie}, "concurrency": 1, "interval": 1 / PROBE_RATE,
              "t0": t0, "t1": t1, "timeout": 10.0, "deadline": t1 + 60}  # fmt: skip
    try:
        with harness.Workers("http", [config]) as worker:
            harness.sleep_until(t0)
            start = meter.mark()
            spy = harness.Profile(server.pid, name, window)
            harness.sleep_until(t1)
            end = meter.mark()
            result = worker.wait("result", 60)[0]
            result["profile"] = spy.finish()
    finally:
        meter.close()
    return result, meter.between(start, end)


def row(phase: str, running: int, result: dict[str, Any], stats: dict) -> dict[str, Any]:
    hist = harness.Histogram()
    hist.merge(result["hist"])
    summary = hist.summary_ms()
    return {
        "phase": phase,
        "running": running,
        "requests": summary["n"],
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
        "max_ms": summary["max_ms"],
        "failed": result["timeouts"] + result["errors"]
        + sum(count for status, count in result["statuses"].items() if status != "200"),
        "server_cpu": stats["cpu"],
        "server_rss_mb": stats["rss_mb"],
        "probe_cpu": result["window_cpu"],
        "profile": result.get("profile"),
        "other_load": harness.other_load(stats, result["window_cpu"]),
        "steal": stats["steal"],
    }  # fmt: skip


def run(full: bool) -> dict[str, Any]:
    jobs = FULL_JOBS if full else QUICK_JOBS
    window = FULL_WINDOW if full else QUICK_WINDOW
    rows = []
    with tempfile.TemporaryDirectory(prefix="lp-bench-") as tmp:
        url = harness.sqlite_url(Path(tmp), "nonblocking")
        with harness.our_server("daphne", url, Path(tmp)) as server:
            visitor = watchers.our_visitor(server)
            reader = watchers.our_visitor(server)
            rows.append(row("idle", 0, *probe(server, reader.cookie_header, window, "page-idle")))
            seconds = jobs / START_RATE + window + 10
            started = time.monotonic()
            visitor.start_jobs(jobs, {"steps": math.ceil(seconds), "interval": 1.0})
            harness.log(f"nonblocking: {jobs} jobs started in {time.monotonic() - started:.1f} s")
            loaded = probe(server, reader.cookie_header, window, f"page-{jobs}-jobs")
            rows.append(row(f"{jobs} jobs running", jobs, *loaded))
    text = harness.table(
        f"Non-blocking: GET /progress/ at {PROBE_RATE:g}/s, idle and with {jobs} jobs "
        f"at 1 update/s (window {window:.0f} s)",
        COLUMNS,
        rows,
    )
    return {"rows": rows, "table": text}
