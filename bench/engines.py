"""Scenario 5, a Celery task's progress (issue #13): liveprogress's ``ProgressTask``
against celery-progress 0.5, with real processes.

The site: Redis (broker, channel layer and result backend, one server), a
PostgreSQL database created for the run, the demo site under Daphne with
``bench/engine_settings.py``, and a Celery prefork worker (2 processes: the cores).

1. **Progress calls per second inside a task**: a tight loop of N calls, timed
   inside the task (``bench/engine_tasks.py``): liveprogress's
   ``self.progress.advance()`` (memory only; its publisher sends at most one state
   per PUBLISH_INTERVAL), celery-progress's ``ProgressRecorder(self).set_progress()``
   (a result-backend write per call), and the bare loop, the ceiling. Also read:
   the CPU of the task's process per call (its every thread: liveprogress's
   publisher too), and Redis's commands and CPU per call.
2. **Latency from a step to its client**: tasks report a step every 100-200 ms (seeded, one
   task per worker process) and return when each step was reported. A client of
   each: a WebSocket subscribed on the Daphne server (liveprogress), or a poller of
   celery-progress's JSON view that waits 500 ms after each answer, as its
   JavaScript does by default. A step's latency runs from its report to the first
   answer or frame at that step or a later one (a poller skips steps: *shown* is
   the share it saw itself). For liveprogress, publish-to-socket latency (from the
   state's ``updated_at``) is given too.

The latencies are measured in this driver's own threads: one client per task is
light enough for that, and they read the same clock as the worker.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import redis
from websockets.sync.client import connect

from . import harness, throughput

NAME = "engines"


@dataclass(frozen=True)
class Sizes:
    #: Progress calls per run, by task (each takes about a second at its speed).
    calls: dict[str, int]
    #: Runs of each calls task; the row shows the median.
    repeats: int
    #: Steps of each latency task, and tasks at once (one per worker process).
    steps: int
    tasks: int = 2


QUICK = Sizes(
    calls={"liveprogress_calls": 200_000, "celery_progress_calls": 5_000, "bare_calls": 5_000_000},
    repeats=1,
    steps=40,
)
FULL = Sizes(
    calls={
        "liveprogress_calls": 1_000_000,
        "celery_progress_calls": 25_000,
        "bare_calls": 20_000_000,
    },
    repeats=3,
    steps=300,
)
#: The calls tasks in the order they run, with their row's label.
CALLS_VARIANTS = {
    "liveprogress_calls": "liveprogress: self.progress.advance()",
    "celery_progress_calls": "celery-progress 0.5: set_progress()",
    "bare_calls": "bare loop (ceiling)",
}
#: celery-progress's JavaScript default (``pollInterval``): the wait after each answer.
POLL_INTERVAL = 0.5
WORKER_PROCESSES = 2
WORKER = (
    "-m", "celery", "-A", "proyecto", "worker", "--pool", "prefork",
    "--concurrency", str(WORKER_PROCESSES), "--without-gossip", "--without-mingle",
    "--without-heartbeat", "--loglevel", "INFO",
)  # fmt: skip
#: Seconds a task may take beyond its own work (queueing, a cold worker process).
SLACK = 60.0

CALLS_COLUMNS = [
    ("variant", "variant"),
    ("calls", "calls"),
    ("calls_per_s", "calls/s"),
    ("us_per_call", "us/call"),
    ("x_ceiling", "x ceiling"),
    ("task_cpu_us_per_call", "task CPU us/call"),
    ("states_out", "states out"),
    ("redis_cmds_per_call", "Redis cmds/call"),
    ("redis_cpu_us_per_call", "Redis CPU us/call"),
    ("other_load", "other load"),
]
LATENCY_COLUMNS = [
    ("variant", "variant"),
    ("steps", "steps"),
    ("shown_pct", "shown %"),
    ("p50_ms", "p50 ms"),
    ("p95_ms", "p95 ms"),
    ("p99_ms", "p99 ms"),
    ("max_ms", "max ms"),
    ("publish_p50_ms", "publish p50 ms"),
    ("publish_p99_ms", "publish p99 ms"),
    ("requests_per_s", "HTTP req/s"),
    ("server_cpu", "srv CPU"),
    ("worker_cpu", "worker CPU"),
    ("redis_cpu", "Redis CPU"),
    ("other_load", "other load"),
]


# -- the site ---------------------------------------------------------------------------


class CeleryWorker(harness.Server):
    """A Celery worker: ready once its log says so; its pool's processes stop with it."""

    def _answers(self) -> bool:
        return " ready." in self.log_text()

    def stop(self) -> None:
        children: list[psutil.Process] = []
        if self.process is not None and self.process.poll() is None:
            children = psutil.Process(self.process.pid).children(recursive=True)
        super().stop()
        for child in children:
            if child.is_running():
                child.kill()


class Site:
    """Redis, a PostgreSQL database, the site under Daphne and a Celery worker; a context
    manager that starts them in that order and stops them in reverse."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._stack = ExitStack()

    def __enter__(self) -> Site:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        port = harness.free_port()
        self.redis = self._stack.enter_context(
            harness.Server(
                "redis", [binary, "--port", str(port), "--bind", harness.HOST, "--save", "",
                          "--appendonly", "no", "--dir", str(self.workdir)],
                port=port, ready="tcp", workdir=self.workdir,
            )
        )  # fmt: skip
        database = throughput.postgres_database()
        if database is None:
            raise RuntimeError("no PostgreSQL on 127.0.0.1:5432")
        self._stack.callback(throughput.drop_postgres, database)
        harness.migrate(database)
        redis_url = f"redis://{harness.HOST}:{port}"
        env = harness.server_env(database) | {
            "DJANGO_SETTINGS_MODULE": "bench.engine_settings",
            "REDIS_URL": f"{redis_url}/0",
            "CELERY_BROKER_URL": f"{redis_url}/1",
            "CELERY_RESULT_BACKEND": f"{redis_url}/2",
            "DJANGO_MEDIA_ROOT": str(self.workdir / "media"),
        }
        port = harness.free_port()
        self.server = self._stack.enter_context(
            harness.Server(
                "engines-daphne", [sys.executable, "-m", "daphne", "-v", "0", "-b",
                                   harness.HOST, "-p", str(port), harness.OUR_APP],
                port=port, env=env, ready_path="/api/jobs/", workdir=self.workdir,
            )
        )  # fmt: skip
        self.worker = self._stack.enter_context(
            CeleryWorker("celery-worker", [sys.executable, *WORKER], port=0, env=env,
                         workdir=self.workdir)
        )  # fmt: skip
        self.redis_client = redis.Redis(host=harness.HOST, port=self.redis.port)
        self._stack.callback(self.redis_client.close)

    @property
    def ws_url(self) -> str:
        return f"ws://{harness.HOST}:{self.server.port}{harness.WS_PATH}"

    def redis_commands(self) -> int:
        return int(self.redis_client.info("stats")["total_commands_processed"])

    def meters(self) -> dict[str, harness.Meter]:
        return {
            "server": harness.Meter([self.server.pid]),
            "worker": harness.Meter([self.worker.pid]),
            "redis": harness.Meter([self.redis.pid]),
        }

    def start(self, visitor: harness.Visitor, task: str, **kwargs: Any) -> str:
        """Send ``task`` (``bench/engine_tasks.py``) for ``visitor``; its task id."""
        status, body = visitor.post_json(f"/bench/tasks/{task}/", kwargs)
        if status != 201:
            raise RuntimeError(f"POST /bench/tasks/{task}/ answered {status}: {body}")
        return str(body["id"])

    def result(self, visitor: harness.Visitor, task: str, task_id: str, timeout: float) -> Any:
        """The task's end: liveprogress's job state, or celery-progress's answer."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if task.startswith("liveprogress"):
                status, body = visitor.request("GET", f"/api/jobs/{task_id}/")
                done = status == 200 and body["status"] in harness.TERMINAL
                ok = done and body["status"] == "succeeded"
            else:
                status, body = visitor.request("GET", f"/celery-progress/{task_id}/")
                done = status == 200 and body["complete"]
                ok = done and body["success"]
            if done:
                if not ok:
                    raise RuntimeError(f"{task} {task_id} did not succeed: {body}")
                return body
            time.sleep(0.1)
        raise TimeoutError(f"{task} {task_id} did not end within {timeout:.0f} s")


def metered(site: Site, run: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """``run()``'s value, and the cores each process of the site used meanwhile."""
    meters = site.meters()
    try:
        marks = {name: meter.mark() for name, meter in meters.items()}
        value = run()
        stats = {name: meter.between(marks[name], meter.mark()) for name, meter in meters.items()}
    finally:
        for meter in meters.values():
            meter.close()
    cores = {f"{name}_cpu": stats[name]["cpu"] for name in stats}
    cores["other_load"] = harness.other_load(
        stats["server"], stats["worker"]["cpu"], stats["redis"]["cpu"]
    )
    cores["seconds"] = stats["server"]["seconds"]
    return value, cores


# -- 1. calls per second ----------------------------------------------------------------


def warm_up(site: Site, visitor: harness.Visitor) -> None:
    """Each calls task once in each worker process (the first task of a process pays
    for its connections and liveprogress's loop)."""
    for task in CALLS_VARIANTS:
        ids = [site.start(visitor, task, calls=1000) for _ in range(WORKER_PROCESSES)]
        for task_id in ids:
            site.result(visitor, task, task_id, SLACK)


def one_calls_run(site: Site, visitor: harness.Visitor, task: str, calls: int) -> dict[str, Any]:
    def run() -> tuple[Any, int]:
        before = site.redis_commands()
        task_id = site.start(visitor, task, calls=calls)
        body = site.result(visitor, task, task_id, SLACK + calls / 1000)
        return body, site.redis_commands() - before

    (body, commands), cores = metered(site, run)
    result = body["result"]
    if task == "liveprogress_calls":
        states = body["seq"]  # every state the job sent, its last one included
    elif task == "celery_progress_calls":
        states = calls  # a result-backend write per call
    else:
        states = 0
    return {
        "calls_per_s": round(calls / result["seconds"]),
        "loop_s": round(result["seconds"], 3),
        "loop_cpu_s": round(result["cpu_seconds"], 3),
        "states_out": states,
        "redis_commands": commands,
        "redis_cpu_s": round(cores["redis_cpu"] * cores["seconds"], 3),
        **cores,
    }


def measure_calls(site: Site, visitor: harness.Visitor, sizes: Sizes) -> list[dict[str, Any]]:
    runs: dict[str, list[dict[str, Any]]] = {task: [] for task in CALLS_VARIANTS}
    # Variants take turns, so a change in the machine's load falls on all of them.
    for repeat in range(sizes.repeats):
        for task in CALLS_VARIANTS:
            harness.log(f"engines: {task} x {sizes.calls[task]:,} (run {repeat + 1})")
            runs[task].append(one_calls_run(site, visitor, task, sizes.calls[task]))
    rows = []
    for task, label in CALLS_VARIANTS.items():
        ranked = sorted(runs[task], key=lambda run: run["calls_per_s"])
        median = ranked[len(ranked) // 2]
        calls = sizes.calls[task]
        rows.append(
            {
                "variant": label,
                "task": task,
                "calls": calls,
                "calls_per_s": median["calls_per_s"],
                "us_per_call": round(1e6 / median["calls_per_s"], 3),
                "task_cpu_us_per_call": round(1e6 * median["loop_cpu_s"] / calls, 3),
                "states_out": median["states_out"],
                "redis_cmds_per_call": round(median["redis_commands"] / calls, 3),
                "redis_cpu_us_per_call": round(1e6 * median["redis_cpu_s"] / calls, 3),
                "other_load": median["other_load"],
                "runs": runs[task],
            }
        )
    ceiling = rows[-1]["calls_per_s"]
    for row in rows:
        # How many times slower than the bare loop (1 for the ceiling itself).
        row["x_ceiling"] = round(ceiling / row["calls_per_s"], 1)
    return rows


# -- 2. latency ---------------------------------------------------------------------------


@dataclass
class Watched:
    """What one client saw of one task: (arrival, step) in order, and the task's end."""

    arrivals: list[tuple[float, int]] = field(default_factory=list)
    #: Steps already done in the subscribe's answer (not timed: not a publish).
    known: int = 0
    #: Arrival minus the state's ``updated_at`` (liveprogress): publish to socket.
    publish_lags: list[float] = field(default_factory=list)
    requests: int = 0
    sent: list[float] = field(default_factory=list)


def watch_socket(site: Site, visitor: harness.Visitor, steps: int, seed: int) -> Watched:
    """Start a liveprogress task, subscribe to it on the socket, read until it ends."""
    watched = Watched()
    deadline = time.monotonic() + SLACK + steps * 0.2
    with connect(site.ws_url, additional_headers=visitor.ws_headers(), compression=None,
                 open_timeout=30) as ws:  # fmt: skip
        job_id = site.start(visitor, "liveprogress_steps", steps=steps, seed=seed)
        ws.send(json.dumps({"action": "subscribe", "job": job_id}))
        snapshot = True
        while True:
            frame = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            now = time.time()
            if frame.get("type") != "job":
                if frame.get("type") == "error":
                    raise RuntimeError(f"the socket answered {frame}")
                continue
            job = frame["job"]
            if snapshot:
                watched.known, snapshot = job["current"], False
            else:
                watched.arrivals.append((now, job["current"]))
                watched.publish_lags.append(now - job["updated_at"])
            if job["status"] in harness.TERMINAL:
                if job["status"] != "succeeded":
                    raise RuntimeError(f"liveprogress_steps {job_id} ended {job['status']}")
                watched.sent = job["result"]["sent"]
                return watched


def poll(site: Site, visitor: harness.Visitor, steps: int, seed: int) -> Watched:
    """Start a celery-progress task and poll its view as its JavaScript does: a request,
    then ``POLL_INTERVAL`` after each answer, until it says the task is complete."""
    watched = Watched()
    deadline = time.monotonic() + SLACK + steps * 0.2
    task_id = site.start(visitor, "celery_progress_steps", steps=steps, seed=seed)
    while time.monotonic() < deadline:
        status, body = visitor.request("GET", f"/celery-progress/{task_id}/")
        now = time.time()
        watched.requests += 1
        if status != 200:
            raise RuntimeError(f"GET /celery-progress/{task_id}/ answered {status}: {body}")
        if body["complete"]:
            if not body["success"]:
                raise RuntimeError(f"celery_progress_steps {task_id} failed: {body}")
            watched.arrivals.append((now, steps))
            watched.sent = body["result"]["sent"]
            return watched
        watched.arrivals.append((now, body["progress"]["current"]))
        time.sleep(POLL_INTERVAL)
    raise TimeoutError(f"celery_progress_steps {task_id} did not end in time")


def step_latencies(watched: Watched) -> tuple[list[float], int]:
    """Each step's latency, from its report to the first arrival at that step or a
    later one; and how many steps arrived themselves (the client saw them)."""
    latencies: list[float] = []
    shown, best = 0, watched.known
    for at, step in watched.arrivals:
        if step > best:
            latencies += [at - watched.sent[done - 1] for done in range(best + 1, step + 1)]
            shown += 1
            best = step
    return latencies, shown


def percentiles_ms(values: list[float]) -> dict[str, float | None]:
    """Nearest-rank percentiles of ``values`` (seconds), in milliseconds."""
    ordered = sorted(values)

    def at(q: float) -> float | None:
        if not ordered:
            return None
        return round(1000 * ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)], 1)

    return {"p50_ms": at(50), "p95_ms": at(95), "p99_ms": at(99), "max_ms": at(100)}


def measure_latency(
    site: Site, visitor: harness.Visitor, label: str, client: Callable[..., Watched], sizes: Sizes
) -> dict[str, Any]:
    harness.log(f"engines: {label}, {sizes.tasks} tasks of {sizes.steps} steps")
    watched: list[Watched | BaseException] = [RuntimeError("no answer")] * sizes.tasks

    def one(index: int) -> None:
        try:
            watched[index] = client(site, visitor, sizes.steps, index)
        except BaseException as exc:
            watched[index] = exc

    def run() -> None:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(sizes.tasks)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    _, cores = metered(site, run)
    for outcome in watched:
        if isinstance(outcome, BaseException):
            raise outcome
    seen = [outcome for outcome in watched if isinstance(outcome, Watched)]
    latencies: list[float] = []
    shown = timed = known = 0
    for outcome in seen:
        values, count = step_latencies(outcome)
        latencies += values
        timed += len(values)
        shown += count
        known += outcome.known
    lags = [lag for outcome in seen for lag in outcome.publish_lags]
    requests = sum(outcome.requests for outcome in seen)
    publish = percentiles_ms(lags)
    return {
        "variant": label,
        "steps": timed,
        "steps_in_snapshot": known,
        "shown_pct": round(100 * shown / max(timed, 1), 1),
        **percentiles_ms(latencies),
        "mean_ms": round(1000 * statistics.fmean(latencies), 1) if latencies else None,
        "publish_p50_ms": publish["p50_ms"],
        "publish_p99_ms": publish["p99_ms"],
        "requests": requests,
        "requests_per_s": round(requests / cores["seconds"], 1) if requests else None,
        **cores,
    }


# -- the scenario -------------------------------------------------------------------------


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def run(full: bool) -> dict[str, Any]:
    sizes = FULL if full else QUICK
    with tempfile.TemporaryDirectory(prefix="lp-bench-") as tmp, Site(Path(tmp)) as site:
        visitor = harness.Visitor(site.server.port)
        visitor.visit()
        versions = {
            "celery": _version("celery"),
            "celery-progress": _version("celery-progress"),
            "redis-py": _version("redis"),
            "channels-redis": _version("channels-redis"),
            "redis-server": site.redis_client.info("server")["redis_version"],
        }
        warm_up(site, visitor)
        calls = measure_calls(site, visitor, sizes)
        latency = [
            measure_latency(site, visitor, "liveprogress: socket push", watch_socket, sizes),
            measure_latency(
                site, visitor, f"celery-progress: poll every {POLL_INTERVAL * 1000:.0f} ms",
                poll, sizes,
            ),
        ]  # fmt: skip
    text = harness.table(
        f"Engines: progress calls per second inside a Celery task (prefork, "
        f"{WORKER_PROCESSES} processes; median of {sizes.repeats})",
        CALLS_COLUMNS,
        calls,
    )
    text += "\n" + harness.table(
        f"Engines: a step every 100-200 ms to the client, {sizes.tasks} tasks at once "
        "(latency from the task's report)",
        LATENCY_COLUMNS,
        latency,
    )
    return {"sizes": asdict(sizes), "versions": versions, "calls": calls, "latency": latency,
            "table": text}  # fmt: skip
