"""Scenario 1, fan-out: W watchers over J jobs, each job updating R times a second.

``finale`` (issue #14): 100 jobs x 20 watchers, 50 steps of 0.2 s, every job
ending at the same moment on its own, on SQLite and on PostgreSQL: the
terminal-state lag (a watcher's receive time minus the job's ``finished_at``).

``procs`` (issue #14, every core): the fan-out through ``make serve PROCS=N`` (N
Uvicorn processes behind one port, a Redis layer of its own between them), with
Redis's CPU and its own cost per command beside the servers'; and one Uvicorn
process on the in-memory layer under the same load, the baseline.

Per row: frames delivered per second (against W x R expected), publish-to-receive
latency p50/p99 (from ``job.updated_at``), server CPU and RSS (held: W sockets
open, no job yet; peak: during the run), terminal states lost (must be 0), and
the load generators' own CPU (a saturated client makes the figures a floor).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from . import finaltrace, harness, throughput, watchers
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
    row.pop("terminal_times", None)
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


# -- finale: final states of jobs that end together (issue #14) ---------------------------

FINALE_NAME = "finale"
#: 100 jobs x 20 watchers, a step every 0.2 s, all ending at the same moment,
#: SPAN s after the first start: connecting and subscribing 2,000 sockets to
#: running jobs takes 10-15 s here, so each job runs at least its last 50 steps
#: (10 s) with every watcher subscribed, in the measured window.
FINALE_LOAD = Load(watchers=2000, jobs=100, rate=5.0, window=10.0, span=30.0)
FINALE_DATABASES = ["SQLite", "PostgreSQL"]
FINALE_RUNS = {False: 1, True: 3}
FINALE_COLUMNS = [
    ("database", "database"),
    ("run", "run"),
    ("frames_per_s", "frames/s"),
    ("server_cpu", "srv CPU"),
    ("terminal_n", "finals"),
    ("terminal_p50_ms", "final p50 ms"),
    ("terminal_p95_ms", "final p95 ms"),
    ("terminal_p99_ms", "final p99 ms"),
    ("terminal_max_ms", "final max ms"),
    ("terminal_lost", "lost"),
    ("client_cpu_max", "client CPU"),
    ("other_load", "other load"),
    ("loadavg", "load avg"),
]


def measure_finale(database: str, url: str, workdir: Path, run_index: int) -> dict[str, Any]:
    """One run of the finale on ``url``; with the traced app, the parts of the lag."""
    load = FINALE_LOAD
    loadavg = "/".join(f"{x:.2f}" for x in __import__("os").getloadavg())
    with harness.our_server("daphne", url, workdir) as server:
        visitor = watchers.our_visitor(server)
        row = watchers.run(
            server, load, headers=visitor.ws_headers(), start_jobs=watchers.our_starter(visitor)
        )
        traced = harness.OUR_APP.startswith("bench.finaltrace_app")
        trace = finaltrace.fetch(server.port) if traced else None
    received = row.pop("terminal_times")
    row |= {"database": database, "run": run_index, "loadavg": loadavg}
    if trace is not None:
        row["parts"] = finaltrace.analyze(trace, received)
        raw = harness.RESULTS / "traces"
        raw.mkdir(parents=True, exist_ok=True)
        name = f"finale-{database}-{run_index}" + (f"-{harness.TAG}" if harness.TAG else "")
        with gzip.open(raw / f"{name}.json.gz", "wt") as out:
            json.dump({"server": trace, "received": received}, out)
    return row


def run_finale(full: bool) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="lp-bench-") as tmp:
        for index in range(1, FINALE_RUNS[full] + 1):
            if "SQLite" in FINALE_DATABASES:
                url = harness.sqlite_url(Path(tmp), f"finale-{index}")
                rows.append(measure_finale("SQLite", url, Path(tmp), index))
            postgres = throughput.postgres_database() if "PostgreSQL" in FINALE_DATABASES else None
            if postgres is not None:
                try:
                    harness.migrate(postgres)
                    rows.append(measure_finale("PostgreSQL", postgres, Path(tmp), index))
                finally:
                    throughput.drop_postgres(postgres)
    text = harness.table(
        f"Finale: {FINALE_LOAD.jobs} jobs x {FINALE_LOAD.watchers // FINALE_LOAD.jobs} watchers, "
        "a step every 0.2 s, ending together; terminal-state lag = receive - finished_at",
        FINALE_COLUMNS,
        rows,
    )
    for row in rows:
        parts = row.get("parts")
        if parts:
            text += "\n" + _parts_text(row, parts)
    return {"rows": rows, "table": text}


def _parts_text(row: dict[str, Any], parts: dict[str, Any]) -> str:
    lines = [f"  {row['database']} run {row['run']}: where the final states' time went (ms)"]
    for group in ("job_parts", "watcher_parts"):
        for name, p in parts[group].items():
            lines.append(
                f"    {name:<34} n={p['n']:<5} p50 {p['p50']}  p95 {p['p95']}  "
                f"p99 {p['p99']}  max {p['max']}"
            )
    lines.append(f"    total {parts['total']}")
    lines.append(
        f"    ending span {parts['ending_span_ms']} ms; last final written "
        f"{parts['last_final_written_after_first_finish_ms']} ms and last received "
        f"{parts['last_received_after_first_finish_ms']} ms after the first finish"
    )
    lines.append(f"    database thread during the ending: {parts['db_thread_during_ending']}")
    lines.append(
        f"    loop lateness steady {parts['loop_lateness_steady']}, ending "
        f"{parts['loop_lateness_ending']}, ready max {parts['loop_ready_steady_max']} / "
        f"{parts['loop_ready_ending_max']}"
    )
    text = "\n".join(lines)
    print(text, flush=True)
    return text


# -- procs: every core (issue #14, target 3) ----------------------------------------------

PROCS_NAME = "procs"
#: Server processes to measure, each as ``make serve PROCS=N`` runs them (``--procs``).
PROCS = [1, 2]
#: Everyday load (1,000 watchers x 1 update/s) and a saturating one (2,000 x 5/s: one
#: Daphne process delivers 3.2-3.5k frames/s of the 10k asked).
PROCS_LOADS = [Load(1000, 100, 1.0, 10.0), Load(2000, 100, 5.0, 10.0)]

PROCS_COLUMNS = [
    ("procs", "procs"),
    ("watchers", "W"),
    ("jobs", "J"),
    ("rate", "R/s"),
    ("frames_per_s", "frames/s"),
    ("delivered_pct", "deliv %"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("terminal_lost", "lost"),
    ("server_cpu", "srv CPU"),
    ("server_cpu_each", "per process"),
    ("cpu_us_per_frame", "us/frame"),
    ("redis_cpu", "Redis CPU"),
    ("redis_us_per_call", "Redis us/call"),
    ("redis_calls_per_s", "Redis calls/s"),
    ("client_cpu_max", "client CPU"),
    ("client_cpu_each", "clients"),
    ("other_load", "other load"),
    ("loadavg", "load avg"),
]


def redis_stats(port: int) -> tuple[int, int]:
    """Commands Redis ran and the microseconds it spent in them, from INFO commandstats."""
    done = subprocess.run(
        ["redis-cli", "-h", harness.HOST, "-p", str(port), "INFO", "commandstats"],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    calls = usec = 0
    for line in done.stdout.splitlines():
        if line.startswith("cmdstat_"):
            fields = dict(part.split("=") for part in line.split(":", 1)[1].split(","))
            calls += int(fields["calls"])
            usec += int(fields["usec"])
    return calls, usec


def measure_procs(procs: int, load: Load, workdir: Path) -> dict[str, Any]:
    """``make serve PROCS=procs`` (its own Redis, a fresh SQLite database) under ``load``."""
    loadavg = "/".join(f"{x:.2f}" for x in os.getloadavg())
    url = harness.sqlite_url(workdir, f"procs-{procs}-{load.watchers}")
    with (
        harness.Redis(workdir) as redis,
        harness.our_serve(procs, url, redis.url, workdir) as server,
    ):
        visitor = watchers.our_visitor(server)
        calls0, usec0, started = *redis_stats(redis.port), time.monotonic()
        row = watchers.run(
            server, load, headers=visitor.ws_headers(), start_jobs=watchers.our_starter(visitor),
            end_jobs=watchers.our_ender(server, visitor), side={"redis": redis.pid},
        )  # fmt: skip
        calls1, usec1 = redis_stats(redis.port)
    row.pop("terminal_times", None)
    calls = max(calls1 - calls0, 1)
    row |= {
        "procs": procs,
        "loadavg": loadavg,
        # Over the whole run (connect, subscribe, window, end): Redis's own measure.
        "redis_us_per_call": round((usec1 - usec0) / calls, 2),
        "redis_calls_per_s": round(calls / (time.monotonic() - started)),
    }
    return row


def measure_in_memory(load: Load, workdir: Path) -> dict[str, Any]:
    """The baseline: one Uvicorn process on the in-memory layer (no Redis), same load."""
    loadavg = "/".join(f"{x:.2f}" for x in os.getloadavg())
    url = harness.sqlite_url(workdir, f"procs-memory-{load.watchers}")
    with harness.our_server("uvicorn", url, workdir) as server:
        visitor = watchers.our_visitor(server)
        row = watchers.run(
            server, load, headers=visitor.ws_headers(), start_jobs=watchers.our_starter(visitor),
            end_jobs=watchers.our_ender(server, visitor),
        )  # fmt: skip
    row.pop("terminal_times", None)
    return row | {"procs": "1, in-memory", "loadavg": loadavg}


def run_procs(full: bool) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="lp-bench-") as tmp:
        for load in PROCS_LOADS:
            rows.append(measure_in_memory(load, Path(tmp)))
            for procs in PROCS:
                rows.append(measure_procs(procs, load, Path(tmp)))
    text = harness.table(
        "Every core: make serve PROCS=N (Uvicorn --workers, one port, Redis layer, SQLite); "
        "W watchers over J jobs at R updates/s, window 10 s",
        PROCS_COLUMNS,
        rows,
    )
    return {"rows": rows, "table": text}
