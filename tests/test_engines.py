"""Other engines' tasks with live progress, for real: a Daphne server, the engine's
worker as a process, Redis (the channel layer and the broker) and PostgreSQL.

Each engine runs the same checks: progress streamed to the enqueuer's socket with
every guarantee, nobody else sees the job, a cancel while running and while
queued, the worker killed mid-task, the engine's retries shown as attempts.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.servers import (
    REPO_ROOT,
    DaphneServer,
    Visitor,
    frames_until,
    is_state,
    is_terminal,
    send_json,
)
from tests.topology import PostgresDatabase, RedisServer, Worker

pytestmark = pytest.mark.integration

# Short intervals so failures show within seconds (defaults: docs/settings.md).
SETTINGS = {
    "HEARTBEAT_INTERVAL": 0.5,
    "STALE_AFTER": 3.0,
    "RECONCILE_INTERVAL": 0.5,
    "PERSIST_INTERVAL": 0.3,
}
# A dead worker's job ends within STALE_AFTER + a sweep (HEARTBEAT_INTERVAL), plus slack.
DEAD_WORKER_BOUND = SETTINGS["STALE_AFTER"] + SETTINGS["HEARTBEAT_INTERVAL"] + 5

#: Each engine's worker command, run from the checkout.
WORKERS = {
    "celery": (
        "-m",
        "celery",
        "-A",
        "proyecto",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        "2",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel",
        "INFO",
    ),
    # django-rq's command (Django's settings, RQ_QUEUES); the scheduler runs retries
    # that are due after an interval.
    "rq": ("manage.py", "rqworker", "default", "--with-scheduler"),
    "dramatiq": (
        "-m",
        "dramatiq",
        "proyecto.dramatiq",
        "proyecto.demo.engines.dramatiq_tasks",
        "tests.engine_tasks.dramatiq",
        "--processes",
        "1",
        "--threads",
        "2",
    ),
    # django-tasks-db's worker: one task at a time, polling every 0.1 s.
    "tasks": Worker.DB_WORKER,
}
#: Engines whose revoke takes a job cancelled while queued off the queue itself, with
#: no worker running (RQ's, in Redis): no worker ever takes its message.
REVOKED_ON_THE_QUEUE = {"rq"}


class EngineSite:
    """The demo site (with the test tasks) on one Daphne, and one worker of ``engine``."""

    def __init__(self, directory, engine: str) -> None:
        self.directory = directory
        self.engine = engine
        self.redis = RedisServer(directory)
        self.database = PostgresDatabase()
        self.server: DaphneServer | None = None
        self.worker: Worker | None = None

    @property
    def env(self) -> dict[str, str]:
        return {
            "DJANGO_SETTINGS_MODULE": "tests.engine_settings",
            "DATABASE_URL": self.database.url,
            "REDIS_URL": self.redis.url,
            "CELERY_BROKER_URL": self.redis.url.replace("/0", "/1"),
            "DRAMATIQ_REDIS_URL": self.redis.url.replace("/0", "/2"),
            "RQ_REDIS_URL": self.redis.url.replace("/0", "/3"),
            "DEMO_DJANGO_TASKS": "1",
        }

    def start(self) -> None:
        self.redis.start()
        self.database.create()
        self.server = DaphneServer(self.directory / "db", self.env, liveprogress=SETTINGS)
        self.server.start()
        self.start_worker()

    def start_worker(self) -> None:
        assert self.server is not None
        self.worker = Worker(
            self.server.env, self.directory / f"{self.engine}-worker.log", WORKERS[self.engine]
        )
        self.worker.start()

    def row(self, job_id: str) -> dict:
        return self.query("SELECT * FROM liveprogress_job WHERE id = %s", job_id)

    def query(self, sql: str, *params) -> dict:
        """The first row ``sql`` finds in the site's database."""
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.database.url, row_factory=dict_row) as connection:
            return connection.execute(sql, params).fetchone()

    def stop(self) -> None:
        for process in (self.worker, self.server):
            if process is not None:
                process.stop()
        self.redis.stop()
        self.database.drop()


@pytest.fixture(scope="module", params=sorted(WORKERS))
def site(request, tmp_path_factory) -> Iterator[EngineSite]:
    running = EngineSite(tmp_path_factory.mktemp(request.param), request.param)
    try:
        running.start()
        yield running
    finally:
        running.stop()


def start_timer(visitor: Visitor, engine: str, **params) -> dict:
    status, state = visitor.post_json(f"/api/engines/{engine}/", params)
    assert status == 201, state
    return state


def start_task(visitor: Visitor, engine: str, name: str, *args, **kwargs) -> dict:
    status, state = visitor.post_json(
        f"/test-tasks/{engine}/{name}/", {"args": list(args), "kwargs": kwargs}
    )
    assert status == 201, state
    return state


async def states_until_end(ws, job_id: str, timeout: float = 30) -> list[dict]:
    frames = await frames_until(ws, lambda frame: is_terminal(frame, job_id), timeout)
    return [frame["job"] for frame in frames if is_state(frame, job_id)]


async def test_progress_reaches_the_enqueuer_s_socket_in_order(site):
    alice = Visitor(site.server)
    alice.visit()
    queued = start_timer(alice, site.engine, steps=5, interval=0.2)
    assert queued["status"] == "queued"
    assert queued["kind"] == f"{site.engine}:demo.timer"
    async with alice.ws() as ws:
        await send_json(ws, {"action": "subscribe", "job": queued["id"]})
        states = await states_until_end(ws, queued["id"])
    seqs = [state["seq"] for state in states]
    assert seqs == sorted(set(seqs)), seqs
    final = states[-1]
    assert final["status"] == "succeeded", final
    assert final["result"] == {"steps": 5}
    assert final["attempt"] == 1
    # In the database too: the worker lets the task go (RQ's horse exits) once written.
    assert site.row(queued["id"])["status"] == "succeeded"
    running = [state for state in states if state["status"] == "running"]
    assert len(running) >= 3, "live progress, not only the end"
    percents = [state["percent"] for state in running if state["percent"] is not None]
    assert percents == sorted(percents)
    # The page's language (Spanish, the demo's default) is the job's.
    assert final["message"] == "¡Proceso completado!"
    # The owner's list, the job's API and the jobs page know it too.
    status, listed = alice.get("/api/jobs/")
    assert status == 200 and queued["id"] in [job["id"] for job in listed["jobs"]]
    status, page = alice.request("GET", "/jobs/")
    assert status == 200


async def test_sse_and_the_command_line_follow_the_job_too(site):
    alice = Visitor(site.server)
    alice.visit()
    job_id = start_timer(alice, site.engine, steps=8, interval=0.3)["id"]
    watching = asyncio.create_task(
        asyncio.to_thread(
            subprocess.run,
            [sys.executable, "manage.py", "watchjob", job_id, "--interval", "0.1"],
            cwd=REPO_ROOT,
            env=site.server.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    )
    with alice.events(f"/api/jobs/{job_id}/events/", timeout=30) as stream:
        events = await asyncio.to_thread(
            stream.events_until,
            lambda event: (
                event["event"] == "job"
                and event["data"]["job"]["status"] not in ("queued", "running")
            ),
        )
    states = [event["data"]["job"] for event in events if event["event"] == "job"]
    assert [int(event["id"]) for event in events if event["event"] == "job"] == [
        state["seq"] for state in states
    ]
    assert states[-1]["status"] == "succeeded" and states[-1]["result"] == {"steps": 8}
    assert any(state["status"] == "running" for state in states)
    watched = await watching
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout == 'succeeded: {"steps": 8}\n'


async def test_nobody_else_sees_or_cancels_the_job(site):
    alice, mallory = Visitor(site.server), Visitor(site.server)
    alice.visit()
    mallory.visit()
    job_id = start_timer(alice, site.engine, steps=3, interval=0.2)["id"]
    status, body = mallory.get(f"/api/jobs/{job_id}/")
    assert status == 404 and body["code"] == "not_found"
    status, body = mallory.post_json(f"/api/jobs/{job_id}/cancel/", {})
    assert status == 404
    async with mallory.ws() as ws:
        await send_json(ws, {"action": "subscribe", "job": job_id})
        (frame,) = (await frames_until(ws, lambda f: f.get("type") == "error"))[-1:]
    assert frame["code"] == "not_found"
    status, state = alice.get(f"/api/jobs/{job_id}/")
    assert status == 200 and not state["cancel_requested"]


async def test_cancel_while_running_stops_the_task_at_its_next_progress_call(site):
    alice = Visitor(site.server)
    alice.visit()
    job_id = start_timer(alice, site.engine, steps=200, interval=0.05)["id"]
    async with alice.ws() as ws:
        await send_json(ws, {"action": "subscribe", "job": job_id})
        await frames_until(ws, lambda f: is_state(f, job_id) and f["job"]["current"] >= 2, 20)
        await send_json(ws, {"action": "cancel", "job": job_id})
        final = (await states_until_end(ws, job_id, 10))[-1]
    assert final["status"] == "cancelled"
    assert final["current"] < 200
    assert site.row(job_id)["status"] == "cancelled"


async def test_a_task_cancelled_while_queued_never_runs(site):
    alice = Visitor(site.server)
    alice.visit()
    site.worker.stop()
    try:
        job_id = start_timer(alice, site.engine, steps=2, interval=0.1)["id"]
        status, state = alice.post_json(f"/api/jobs/{job_id}/cancel/", {})
        assert status == 200 and state["status"] == "cancelled"
    finally:
        site.start_worker()
    after = start_timer(alice, site.engine, steps=1, interval=0)["id"]
    async with alice.ws() as ws:
        await send_json(ws, {"action": "subscribe", "job": after})
        assert (await states_until_end(ws, after, 40))[-1]["status"] == "succeeded"
    if site.engine in REVOKED_ON_THE_QUEUE:
        # The message left the queue at the cancel: the worker, taking the queue in
        # order, took the next one and never this.
        log = site.worker.log_text()
        assert after in log and job_id not in log, log[-2000:]
    else:
        # The worker takes the message (a revoke sent while it was down can't reach
        # it) and finds the job ended: the task body never runs. The other worker
        # process may take the cancelled one's message a moment later.
        deadline = time.monotonic() + 10
        while f"its job has ended job={job_id}" not in site.worker.log_text():
            assert time.monotonic() < deadline, site.worker.log_text()[-2000:]
            await asyncio.sleep(0.1)
    row = site.row(job_id)
    assert (row["status"], row["attempts"], row["started_at"]) == ("cancelled", 0, None)


async def test_the_engine_s_retries_show_as_attempts(site):
    if site.engine == "tasks":
        pytest.skip("Django's Tasks framework has no retries: a failed task stays failed")
    alice = Visitor(site.server)
    alice.visit()
    job_id = start_task(alice, site.engine, "flaky", 2)["id"]
    async with alice.ws() as ws:
        await send_json(ws, {"action": "subscribe", "job": job_id})
        states = await states_until_end(ws, job_id, 40)
    final = states[-1]
    assert final["status"] == "succeeded", final
    assert final["result"] == {"attempt": 3}
    assert final["attempt"] == 3 and final["max_attempts"] == 3
    retries = [state for state in states if state["status"] == "queued" and state["error"]]
    assert [state["error"] for state in retries][:2] == ["attempt 1 failed", "attempt 2 failed"]
    # In the enqueuer's language (the demo's default, Spanish): "attempt 2 of 3".
    assert "intento 2 de 3" in retries[0]["message"]
    assert retries[0]["retry_at"] is not None


async def test_a_killed_worker_s_job_ends_interrupted(site):
    alice = Visitor(site.server)
    alice.visit()
    job_id = start_timer(alice, site.engine, steps=300, interval=0.1)["id"]
    async with alice.ws() as ws:
        await send_json(ws, {"action": "subscribe", "job": job_id})
        await frames_until(ws, lambda f: is_state(f, job_id) and f["job"]["current"] >= 2, 20)
        site.worker.kill()
        killed_at = time.monotonic()
        final = (await states_until_end(ws, job_id, DEAD_WORKER_BOUND))[-1]
        ended_in = time.monotonic() - killed_at
    site.start_worker()
    assert final["status"] == "interrupted"
    assert final["error"]
    assert ended_in <= DEAD_WORKER_BOUND
    await asyncio.sleep(0)


# -- Django's Tasks: enqueue() as the framework's users call it ----------------------------

DB_TASKS = "django_tasks_database_dbtaskresult"


async def test_a_django_task_enqueued_without_an_owner_is_the_system_s(site):
    """``enqueue()`` from code that knows nothing of owners (here a management
    command): the job is ``system:tasks``'s, and django-tasks-db's own result ends
    as the framework tells it, the body's value kept there too."""
    if site.engine != "tasks":
        pytest.skip("Django's Tasks framework only")
    code = "from tests.engine_tasks.tasks import count; print(count.enqueue(3).id)"
    printed = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=REPO_ROOT,
        env=site.server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    result_id = printed.split()[-1]
    query = f"SELECT * FROM {DB_TASKS} WHERE id = %s"  # noqa: S608 (a constant table name)
    job_id = site.query(query, result_id)["args_kwargs"]["kwargs"]["liveprogress_job"]
    deadline = time.monotonic() + 20
    while (task := site.query(query, result_id))["status"] != "SUCCESSFUL":
        assert time.monotonic() < deadline, task
        await asyncio.sleep(0.1)
    assert task["return_value"] == {"steps": 3}
    job = site.row(job_id)
    assert (job["owner"], job["kind"], job["status"], job["result"]) == (
        "system:tasks",
        "tasks:tests.count",
        "succeeded",
        {"steps": 3},
    )


# -- celery-progress's users, switched by one import -------------------------------------


def send_legacy(visitor: Visitor, steps: int, interval: float, *, owned: bool = False) -> str:
    body = {"steps": steps, "interval": interval, "owned": owned}
    status, body = visitor.post_json("/test-legacy/", body)
    assert status == 201, body
    return body["task_id"]


def poll_legacy(visitor: Visitor, task_id: str) -> dict:
    status, info = visitor.get(f"/celery-progress/{task_id}/")
    assert status == 200
    return info


async def test_a_celery_progress_task_appears_live_owned_by_who_asks_first(site):
    if site.engine != "celery":
        pytest.skip("celery-progress is Celery's")
    alice, mallory = Visitor(site.server), Visitor(site.server)
    alice.visit()
    mallory.visit()
    task_id = send_legacy(alice, steps=6, interval=0.25)
    deadline = time.monotonic() + 20
    while (info := poll_legacy(alice, task_id))["progress"].get("total") != 6:
        assert time.monotonic() < deadline, info
        await asyncio.sleep(0.1)
    assert (info["state"], info["complete"]) == ("PROGRESS", False)
    assert info["progress"]["description"].startswith("step ")
    # Alice asked first: the job is hers. Mallory learns nothing, as for an unknown id.
    assert poll_legacy(mallory, task_id)["state"] == "PENDING"
    status, _ = mallory.get(f"/api/jobs/{task_id}/")
    assert status == 404
    async with alice.ws() as ws:
        await send_json(ws, {"action": "subscribe", "job": task_id})
        states = await states_until_end(ws, task_id)
    assert states[-1]["status"] == "succeeded"
    assert states[-1]["result"] == {"steps": 6}
    assert states[-1]["kind"] == "celery:tests.engine_tasks.celery.legacy"
    assert [s["current"] for s in states] == sorted(s["current"] for s in states)
    final = poll_legacy(alice, task_id)
    assert (final["state"], final["complete"], final["success"]) == ("SUCCESS", True, True)
    assert final["result"] == {"steps": 6}


async def test_a_celery_progress_task_stops_at_its_next_set_progress_when_cancelled(site):
    if site.engine != "celery":
        pytest.skip("celery-progress is Celery's")
    alice = Visitor(site.server)
    alice.visit()
    task_id = send_legacy(alice, steps=200, interval=0.05)
    deadline = time.monotonic() + 20
    while poll_legacy(alice, task_id)["state"] != "PROGRESS":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    async with alice.ws() as ws:
        await send_json(ws, {"action": "cancel", "job": task_id})
        final = (await states_until_end(ws, task_id, 15))[-1]
    assert final["status"] == "cancelled" and final["current"] < 200
    info = poll_legacy(alice, task_id)
    assert (info["state"], info["complete"]) == ("REVOKED", True)


async def test_a_celery_progress_task_sent_with_its_owner_is_theirs_from_the_send(site):
    if site.engine != "celery":
        pytest.skip("celery-progress is Celery's")
    alice, mallory = Visitor(site.server), Visitor(site.server)
    alice.visit()
    mallory.visit()
    task_id = send_legacy(alice, steps=4, interval=0.25, owned=True)
    deadline = time.monotonic() + 20
    # Mallory asks first, and often: the job was never anyone else's to claim.
    while (info := poll_legacy(mallory, task_id))["state"] == "PENDING":
        status, _ = alice.get(f"/api/jobs/{task_id}/")
        if status == 200:
            break
        assert time.monotonic() < deadline, info
        await asyncio.sleep(0.1)
    assert poll_legacy(mallory, task_id)["state"] == "PENDING"
    async with alice.ws() as ws:
        await send_json(ws, {"action": "subscribe", "job": task_id})
        states = await states_until_end(ws, task_id)
    assert states[-1]["status"] == "succeeded"
    assert poll_legacy(mallory, task_id)["state"] == "PENDING"
