"""Scenario 3, job throughput: short jobs started and finished per second.

Load generators keep C connections busy with ``POST /api/jobs/`` of a one-step,
zero-interval demo.timer (created, running, succeeded: three writes and three
publishes each), for a window. Started/s counts the 201 answers; finished/s and
the start-to-finish latency come from the database afterwards (``created_at`` and
``finished_at`` of every job), on SQLite and on PostgreSQL (a database created
for the run on 127.0.0.1:5432 and dropped after; skipped if none answers).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import harness, watchers

NAME = "throughput"
QUICK_WINDOW = 5.0
FULL_WINDOW = 20.0
CONCURRENCY = 16
POSTGRES = "postgres://postgres@127.0.0.1:5432/"
BODY = {"kind": "demo.timer", "params": {"steps": 1, "interval": 0}}
#: Seconds after the window for jobs still running to end.
DRAIN = 15.0

COLUMNS = [
    ("database", "database"),
    ("started_per_s", "started/s"),
    ("finished_per_s", "finished/s"),
    ("post_p50_ms", "POST p50 ms"),
    ("post_p99_ms", "POST p99 ms"),
    ("job_p50_ms", "start-to-end p50 ms"),
    ("job_p99_ms", "start-to-end p99 ms"),
    ("unfinished", "unfinished"),
    ("refused", "refused"),
    ("db_connections_peak", "PG conns"),
    ("server_cpu", "srv CPU"),
    ("client_cpu_max", "client CPU"),
    ("other_load", "other load"),
]


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def job_times(database_url: str) -> list[tuple[str, float, float | None]]:
    """(status, created, finished) of every job, read straight from the database."""
    query = "SELECT status, created_at, finished_at FROM liveprogress_job"
    if database_url.startswith("sqlite:"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
            rows = connection.execute(query).fetchall()
    else:
        import psycopg

        with psycopg.connect(database_url) as connection:
            rows = connection.execute(query).fetchall()
    return [(status, _epoch(created), _epoch(finished)) for status, created, finished in rows]


def postgres_database() -> str | None:
    """A fresh PostgreSQL database for this run, or None when no server answers."""
    try:
        import psycopg

        name = f"lp_bench_{os.getpid()}"
        with psycopg.connect(POSTGRES + "postgres", autocommit=True, connect_timeout=5) as db:
            db.execute(f"DROP DATABASE IF EXISTS {name}")
            db.execute(f"CREATE DATABASE {name}")
        return POSTGRES + name
    except Exception as exc:
        harness.log(f"throughput: PostgreSQL skipped ({type(exc).__name__}: {exc})")
        return None


def drop_postgres(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(POSTGRES + "postgres", autocommit=True, connect_timeout=5) as db:
        db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class ConnectionCount:
    """The most PostgreSQL connections to the run's database seen, sampled 4 times a second."""

    def __init__(self, database_url: str) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if database_url.startswith("postgres"):
            self.name = database_url.rsplit("/", 1)[1]
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        import psycopg

        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
        with psycopg.connect(POSTGRES + "postgres", autocommit=True, connect_timeout=5) as db:
            while not self._stop.wait(0.25):
                self.peak = max(self.peak, db.execute(query, (self.name,)).fetchone()[0])

    def stop(self) -> int | None:
        if self._thread is None:
            return None
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peak


def measure(label: str, database_url: str, workdir: Path, window: float) -> dict[str, Any]:
    if not database_url.startswith("sqlite:"):
        harness.migrate(database_url)
    with harness.our_server("daphne", database_url, workdir) as server:
        visitor = watchers.our_visitor(server)
        headers = {
            "Cookie": visitor.cookie_header,
            "X-CSRFToken": visitor.cookies["csrftoken"],
            "Referer": visitor.origin + "/progress/",
            "Origin": visitor.origin,
            "Accept": "application/json",
        }
        meter = harness.Meter([server.pid])
        connections = ConnectionCount(database_url)
        t0 = time.time() + 1.5
        t1 = t0 + window
        counts = harness.split(CONCURRENCY, 2)
        configs = [
            {"port": server.port, "method": "POST", "path": "/api/jobs/", "body": BODY,
             "headers": headers, "concurrency": n, "t0": t0, "t1": t1, "timeout": 30.0,
             "deadline": t1 + 90}
            for n in counts
        ]  # fmt: skip
        try:
            with harness.Workers("http", configs) as workers:
                harness.sleep_until(t0)
                start = meter.mark()
                spy = harness.Profile(server.pid, f"throughput-{label.split()[0].lower()}", window)
                harness.sleep_until(t1)
                end = meter.mark()
                profile = spy.finish()
                results = workers.wait("result", 60)
        finally:
            meter.close()
            peak_connections = connections.stop()
        # Let the last jobs end, then read every job's times from the database.
        deadline = time.monotonic() + DRAIN
        while time.monotonic() < deadline:
            jobs = job_times(database_url)
            if all(finished is not None for _, _, finished in jobs):
                break
            time.sleep(0.5)
    stats = meter.between(start, end)
    statuses: dict[str, int] = {}
    post_hist = harness.Histogram()
    for result in results:
        post_hist.merge(result["hist"])
        for status, count in result["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    in_window = [job for job in jobs if t0 <= job[1] <= t1]
    finished = [job for job in jobs if job[2] is not None and t0 <= job[2] <= t1]
    job_hist = harness.Histogram()
    for _, created, ended in in_window:
        if ended is not None:
            job_hist.add(ended - created)
    post, job = post_hist.summary_ms(), job_hist.summary_ms()
    clients = harness.client_cpu(results)
    return {
        "database": label,
        "started_per_s": round(statuses.get("201", 0) / window, 1),
        "finished_per_s": round(len(finished) / window, 1),
        "post_p50_ms": post["p50_ms"],
        "post_p99_ms": post["p99_ms"],
        "job_p50_ms": job["p50_ms"],
        "job_p99_ms": job["p99_ms"],
        "jobs": len(jobs),
        "unfinished": sum(1 for _, _, ended in jobs if ended is None),
        "statuses": statuses,
        "refused": sum(count for status, count in statuses.items() if status != "201")
        + sum(result["timeouts"] + result["errors"] for result in results),
        "server_cpu": stats["cpu"],
        "client_cpu_max": clients["cpu_max"],
        "client_saturated": clients["saturated"],
        "other_load": harness.other_load(stats, *clients["cpu_each"]),
        "steal": stats["steal"],
        "db_connections_peak": peak_connections,
        "profile": profile,
    }


def run(full: bool) -> dict[str, Any]:
    window = FULL_WINDOW if full else QUICK_WINDOW
    rows = []
    with tempfile.TemporaryDirectory(prefix="lp-bench-") as tmp:
        rows.append(
            measure("SQLite (WAL)", harness.sqlite_url(Path(tmp), "jobs"), Path(tmp), window)
        )
        postgres = postgres_database()
        if postgres is not None:
            try:
                rows.append(measure("PostgreSQL", postgres, Path(tmp), window))
            finally:
                drop_postgres(postgres)
    text = harness.table(
        f"Job throughput: one-step jobs through POST /api/jobs/, {CONCURRENCY} connections "
        f"(window {window:.0f} s)",
        COLUMNS,
        rows,
    )
    for row in rows:
        line = f"  {row['database']}: HTTP statuses {row['statuses']}, {row['jobs']} jobs in all"
        print(line, flush=True)
        text += "\n" + line
    return {"rows": rows, "table": text}
