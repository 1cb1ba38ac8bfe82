"""Scenario 4, the alternatives: same run, same W watchers and J jobs at R updates/s.

(a) the original example's design: the timed loop inside a Channels consumer, one
    loop per socket (``bench/example_app.py`` under Daphne);
(b) HTTP polling of ``GET /api/jobs/<id>/`` every 500 ms (celery-progress's default),
    against our app under Daphne;
(c) the ceiling: a bare ``websockets`` server broadcasting the same frames
    (``bench/bare_ws.py``);
(d) our app under Daphne and under Uvicorn (``--ws websockets``);
(e) the timed process inside a synchronous request on gunicorn sync workers
    (``bench/wsgi_app.py``): J visitors each request a job, and a plain page is
    probed meanwhile: what it does to every other visitor.

Every row also probes a plain page at 10 requests/s during the window. Each figure
is printed as a ratio to ours (Daphne): above 1 means more of it than ours.
The full pass adds a saturation pair (ours and the ceiling at 5x the update rate),
where frames per server core second is the comparable throughput.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

from . import fanout, harness, watchers
from .watchers import Load

NAME = "alternatives"


def load_for(watchers: int, window: float) -> Load:
    return Load(watchers, max(1, watchers // 10), fanout.RATE, window)


QUICK = load_for(fanout.QUICK[0][0], fanout.QUICK_WINDOW)
FULL = load_for(fanout.FULL[-1][0], fanout.FULL_WINDOW)
#: The saturation pair of the full pass: 25,000 frames/s offered.
STRESS = Load(5000, 500, 5.0, 15.0, processes=4)
#: celery-progress's default polling interval.
POLL_INTERVAL = 0.5
#: gunicorn's recommended worker count: 2 x cores + 1.
GUNICORN_WORKERS = 2 * 2 + 1
#: The timed process of the example: 10 steps.
EXAMPLE_STEPS = 10

COLUMNS = [
    ("variant", "variant"),
    ("frames_per_s", "frames/s"),
    ("delivered_pct", "deliv %"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("terminal_lost", "lost"),
    ("server_cpu", "srv CPU"),
    ("frames_per_core_s", "frames/core-s"),
    ("cpu_ms_per_watcher_s", "CPU ms/watcher-s"),
    ("server_peak_rss_mb", "RSS MB"),
    ("page_p99_ms", "page p99 ms"),
    ("client_cpu_max", "client CPU"),
    ("other_load", "other load"),
]
RATIO_COLUMNS = [
    ("variant", "variant (ratio to ours)"),
    ("frames_per_s", "frames/s"),
    ("p99_ms", "p99"),
    ("frames_per_core_s", "frames/core-s"),
    ("cpu_ms_per_watcher_s", "CPU/watcher"),
    ("server_peak_rss_mb", "RSS"),
    ("page_p99_ms", "page p99"),
]


def ours(kind: str, load: Load, workdir: Path) -> dict[str, Any]:
    return fanout.measure_ours(kind, load, workdir, probe=True)


def example(load: Load, workdir: Path, *, probe: bool = True) -> dict[str, Any]:
    port = harness.free_port()
    argv = [sys.executable, "-m", "daphne", "-v", "0", "-b", harness.HOST, "-p", str(port),
            "bench.example_app:application"]  # fmt: skip
    # Its loops start at connect, so they must outlast the whole connect phase.
    load = Load(load.watchers, load.jobs, load.rate, load.window, load.processes,
                settle_extra=load.watchers / 200)  # fmt: skip
    server = harness.Server("example-daphne", argv, port=port, ready_path="/progress/",
                            workdir=workdir)  # fmt: skip
    url = f"ws://{harness.HOST}:{port}{harness.WS_PATH}?steps={load.steps}&interval={1 / load.rate}"
    with server:
        return watchers.run(
            server, load, protocol="example", url=url,
            headers={"Origin": server.origin}, probe=("/progress/", {}) if probe else None,
        )  # fmt: skip


def polling(load: Load, workdir: Path) -> dict[str, Any]:
    """Pollers against our app, whose jobs end on their own.

    Not cancelled at the end like the others: through a server the pollers
    overload, cancelling 100 jobs took 100 s.
    """
    url = harness.sqlite_url(workdir, f"polling-{load.watchers}")
    with harness.our_server("daphne", url, workdir) as server:
        server.name = "ours-daphne-polling"
        visitor = watchers.our_visitor(server)
        prober = watchers.our_visitor(server)
        return watchers.run(
            server, load, mode="poll", headers={"Cookie": visitor.cookie_header},
            start_jobs=watchers.our_starter(visitor), poll_interval=POLL_INTERVAL,
            probe=("/progress/", {"Cookie": prober.cookie_header}),
        )  # fmt: skip


def bare(
    load: Load, workdir: Path, *, probe: bool = True, server: harness.Server | None = None
) -> dict[str, Any]:
    """The ceiling; ``probe``: load its plain page meanwhile, as every row here does.

    ``server``: another server of the same protocol instead of ``bench/bare_ws.py``
    (``harness.bare_asgi_server``: the raw ASGI twin under one ASGI server).
    """
    if server is None:
        port = harness.free_port()
        server = harness.Server(
            "bare-websockets", [sys.executable, "-m", "bench.bare_ws", "--port", str(port)],
            port=port, ready_path="/page", workdir=workdir,
        )  # fmt: skip
    port = server.port

    def start(count: int, end_at: float, interval: float) -> list[str]:
        steps = max(2, math.ceil((end_at - time.time()) / interval))
        with connect(f"ws://{harness.HOST}:{port}/", open_timeout=30) as ws:
            ws.send(json.dumps({"action": "start_jobs", "count": count,
                                        "steps": steps, "interval": interval}))  # fmt: skip
            return json.loads(ws.recv(timeout=30))["ids"]

    def end(ids: list[str]) -> set[str]:
        with connect(f"ws://{harness.HOST}:{port}/", open_timeout=30) as ws:
            ws.send(json.dumps({"action": "end_jobs"}))
            ws.recv(timeout=watchers.END_TIMEOUT)
        return set()

    with server:
        return watchers.run(server, load, protocol="bare", start_jobs=start, end_jobs=end,
                            probe=("/page", {}) if probe else None)  # fmt: skip


def gunicorn(load: Load, workdir: Path) -> dict[str, Any]:
    """J visitors each start the timed process in a request; a plain page is probed."""
    port = harness.free_port()
    argv = [sys.executable, "-m", "gunicorn", "-k", "sync", "-w", str(GUNICORN_WORKERS),
            "-b", f"{harness.HOST}:{port}", "--timeout", "300", "--graceful-timeout", "1",
            "--log-level", "warning", "bench.wsgi_app:application"]  # fmt: skip
    interval = 1 / load.rate
    job_s = EXAMPLE_STEPS * interval
    server = harness.Server("gunicorn-sync", argv, port=port, ready_path="/page", workdir=workdir)
    with server:
        meter = harness.Meter([server.pid])
        t0 = time.time() + 2.0
        # Long enough for the first jobs to end: the visitors' wait shows.
        window = max(load.window, job_s + 2)
        t1 = t0 + window
        common = {"port": port, "method": "GET", "t0": t0, "t1": t1, "deadline": t1 + 120}
        jobs_cfg = [
            common | {"path": f"/run?steps={EXAMPLE_STEPS}&interval={interval}",
                      "concurrency": n, "per_connection": 1, "timeout": window + 5}
            for n in harness.split(load.jobs, max(1, math.ceil(load.jobs / 2500)))
        ]  # fmt: skip
        probe_cfg = common | {"path": "/page", "concurrency": watchers.PROBE_CONNECTIONS,
                              "interval": 1 / watchers.PROBE_RATE, "timeout": 10.0}  # fmt: skip
        try:
            with harness.Workers("http", jobs_cfg) as job_workers, \
                 harness.Workers("http", [probe_cfg]) as probe_worker:  # fmt: skip
                harness.sleep_until(t0)
                start = meter.mark()
                harness.sleep_until(t1)
                end = meter.mark()
                page = probe_worker.wait("result", 60)[0]
                jobs = job_workers.wait("result", window + 60)
        finally:
            meter.close()
    stats = meter.between(start, end)
    page_hist = harness.Histogram()
    page_hist.merge(page["hist"])
    done = sum(result["statuses"].get("200", 0) for result in jobs)
    page_summary = page_hist.summary_ms()
    return {
        "server": server.name,
        "watchers": load.jobs,
        "jobs": load.jobs,
        "jobs_done": done,
        "jobs_timed_out": sum(result["timeouts"] for result in jobs),
        "job_s": job_s,
        "frames_per_s": 0.0,  # no progress reaches a visitor before the end
        # No socket, no terminal state to lose: the visitor waits for the response.
        "terminal_lost": None,
        "note": (
            f"{done} of {load.jobs} job requests answered within the {window:.0f} s window "
            f"({GUNICORN_WORKERS} sync workers, each held {job_s:g} s per job); page probes: "
            f"{page['statuses'].get('200', 0)} answered, {page['timeouts']} timed out (10 s)"
        ),
        "server_cpu": stats["cpu"],
        "server_peak_rss_mb": stats["peak_rss_mb"],
        "page_p50_ms": page_summary["p50_ms"],
        "page_p99_ms": page_summary["p99_ms"],
        "page_ok": page["statuses"].get("200", 0),
        "page_timeouts": page["timeouts"],
        "page_errors": page["errors"],
        "window_s": round(t1 - t0, 2),
        "client_cpu_max": harness.client_cpu(jobs + [page])["cpu_max"],
        "other_load": harness.other_load(stats, *harness.client_cpu(jobs + [page])["cpu_each"]),
        "steal": stats["steal"],
    }


def with_derived(variant: str, row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row, variant=variant)
    cpu, fps = row.get("server_cpu"), row.get("frames_per_s")
    row["frames_per_core_s"] = round(fps / cpu) if cpu and fps else None
    if "cpu_ms_per_watcher_s_at_rate" in row:
        # Polling: the price of one watcher polling every 500 ms, even if the server
        # could not keep up (then the measured per-watcher CPU understates it).
        row["cpu_ms_per_watcher_s_measured"] = row["cpu_ms_per_watcher_s"]
        row["cpu_ms_per_watcher_s"] = row["cpu_ms_per_watcher_s_at_rate"]
    return row


def ratios(rows: list[dict[str, Any]], base: dict[str, Any]) -> list[dict[str, Any]]:
    keys = [key for key, _ in RATIO_COLUMNS[1:]]
    return [
        {"variant": row["variant"]}
        | {key: harness.ratio(base.get(key), row.get(key)) for key in keys}
        for row in rows
    ]


def run(full: bool) -> dict[str, Any]:
    load = FULL if full else QUICK
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lp-bench-") as tmp:
        workdir = Path(tmp)
        variants = [
            ("(d) ours, Daphne", lambda: ours("daphne", load, workdir)),
            ("(d) ours, Uvicorn", lambda: ours("uvicorn", load, workdir)),
            ("(a) example: loop in consumer", lambda: example(load, workdir)),
            ("(b) HTTP polling 500 ms", lambda: polling(load, workdir)),
            ("(c) bare websockets", lambda: bare(load, workdir)),
            ("(e) gunicorn sync, job in request", lambda: gunicorn(load, workdir)),
        ]
        if full:
            # At 10,000 pollers nothing is answered within 30 s: the price of one poll
            # comes from 1,000 pollers, which the server can serve in part.
            polling_load = load_for(1000, load.window)
            variants += [
                ("(b) HTTP polling 500 ms, W=1000", lambda: polling(polling_load, workdir)),
                ("stress: ours, Daphne, R=5", lambda: ours("daphne", STRESS, workdir)),
                ("stress: bare websockets, R=5", lambda: bare(STRESS, workdir)),
            ]
        for variant, measure in variants:
            harness.log(f"alternatives: {variant}")
            try:
                rows.append(with_derived(variant, measure()))
            except Exception as exc:
                harness.log(f"alternatives: {variant} failed: {type(exc).__name__}: {exc}")
                rows.append({"variant": variant, "failed": f"{type(exc).__name__}: {exc}"})
    title = (
        f"Alternatives: W={load.watchers} watchers, J={load.jobs} jobs, R={load.rate:g}/s "
        f"(window {load.window:.0f} s)"
    )
    text = harness.table(title, COLUMNS, rows)
    for row in rows:
        for key in ("note", "failed"):
            if row.get(key):
                line = f"  {row['variant']}: {row[key]}"
                print(line, flush=True)
                text += "\n" + line
    base = rows[0]
    ratio_rows = ratios(rows[1:6], base)
    if full:
        ratio_rows += ratios(rows[6:7], base)
        ratio_rows += ratios(rows[8:9], rows[7])
    text += "\n" + harness.table("Ratios: variant / ours (Daphne)", RATIO_COLUMNS, ratio_rows)
    return {"load": vars(load), "rows": rows, "ratios": ratio_rows, "table": text}
