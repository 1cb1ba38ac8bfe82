"""Scenario 1, fan-out: W watchers over J jobs, each job updating R times a second.

Per row: frames delivered per second (against W x R expected), publish-to-receive
latency p50/p99 (from ``job.updated_at``), server CPU and RSS (held: W sockets
open, no job yet; peak: during the run), terminal states lost (must be 0), and
the load generators' own CPU (a saturated client makes the figures a floor).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from . import harness, watchers
from .watchers import Load

NAME = "fanout"
#: (watchers, jobs): 10 watchers per job, 1 update per second.
QUICK = [(1000, 100)]
FULL = [(1000, 100), (5000, 500), (10000, 1000)]
RATE = 1.0
QUICK_WINDOW = 5.0
FULL_WINDOW = 20.0

COLUMNS = [
    ("server", "server"),
    ("watchers", "W"),
    ("jobs", "J"),
    ("rate", "R/s"),
    ("connect_s", "connect s"),
    ("frames_per_s", "frames/s"),
    ("delivered_pct", "deliv %"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("max_ms", "max ms"),
    ("terminal_lost", "lost"),
    ("jobs_end_s", "end s"),
    ("server_cpu", "srv CPU"),
    ("cpu_us_per_frame", "us/frame"),
    ("rss_held_mb", "RSS held MB"),
    ("server_peak_rss_mb", "RSS peak MB"),
    ("client_cpu_max", "client CPU"),
    ("other_load", "other load"),
]

#: Rows measured in this run, by (server, W, J, R, window): the alternatives reuse them.
MEASURED: dict[tuple[str, int, int, float, float], dict[str, Any]] = {}


def measure_ours(kind: str, load: Load, workdir: Path, *, probe: bool = False) -> dict[str, Any]:
    """Our app under ``kind`` (daphne or uvicorn) on a fresh SQLite database."""
    key = (kind, load.watchers, load.jobs, load.rate, load.window)
    if key in MEASURED and (not probe or "page_p99_ms" in MEASURED[key]):
        return MEASURED[key]
    url = harness.sqlite_url(workdir, f"fanout-{kind}-{load.watchers}")
    with harness.our_server(kind, url, workdir) as server:
        visitor = watchers.our_visitor(server)
        prober = harness.Visitor(server.port)
        prober.visit()
        row = watchers.run(
            server,
            load,
            headers=visitor.ws_headers(),
            start_jobs=watchers.our_starter(visitor),
            end_jobs=watchers.our_ender(server, visitor),
            probe=("/progress/", {"Cookie": prober.cookie_header}) if probe else None,
        )
    MEASURED[key] = row
    return row


def run(full: bool) -> dict[str, Any]:
    window = FULL_WINDOW if full else QUICK_WINDOW
    rows = []
    with tempfile.TemporaryDirectory(prefix="lp-bench-") as tmp:
        for watchers_count, jobs in FULL if full else QUICK:
            load = Load(watchers_count, jobs, RATE, window)
            rows.append(measure_ours("daphne", load, Path(tmp), probe=True))
    text = harness.table(
        f"Fan-out: W watchers over J jobs at R updates/s (window {window:.0f} s)", COLUMNS, rows
    )
    return {"rows": rows, "table": text}
