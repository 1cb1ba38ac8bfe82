"""The scale-out setup for real: 2 Daphne servers, 2 django-tasks-db workers, Redis, PostgreSQL.

Watchers on either server see every update of jobs run by either worker; a
cancel through any server stops the job on its worker; killed workers, a killed
server and a restarted Redis leave every job in a truthful state, and watchers
converge to it.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time

import pytest

from tests.servers import DaphneServer, Visitor, frames_until, is_state, is_terminal, send_json
from tests.topology import PostgresDatabase, RedisServer, Worker

pytestmark = pytest.mark.integration

# Short intervals so failures show within seconds (defaults: docs/settings.md).
SETTINGS = {
    "HEARTBEAT_INTERVAL": 0.5,
    "STALE_AFTER": 3.0,
    "RECONCILE_INTERVAL": 0.5,
    "PERSIST_INTERVAL": 0.3,
    "JOB_MODULES": ["tests.jobs"],
}
# A dead worker's job ends within STALE_AFTER + a sweep (HEARTBEAT_INTERVAL), plus slack.
DEAD_WORKER_BOUND = SETTINGS["STALE_AFTER"] + SETTINGS["HEARTBEAT_INTERVAL"] + 5


class Topology:
    def __init__(self, directory) -> None:
        self.directory = directory
        self.redis = RedisServer(directory)
        self.database = PostgresDatabase()
        self.servers: list[DaphneServer] = []
        self.workers: list[Worker] = []

    @property
    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database.url,
            "REDIS_URL": self.redis.url,
            "LIVEPROGRESS_RUNNER": "tasks",
        }

    def start(self) -> None:
        self.redis.start()
        self.database.create()
        for _ in range(2):
            self.servers.append(self._server())
        for index in range(2):
            self.workers.append(self._worker(index))

    def _server(self) -> DaphneServer:
        server = DaphneServer(self.directory / "db", self.env, liveprogress=SETTINGS)
        server.start()
        return server

    def _worker(self, index: int) -> Worker:
        env = self.servers[0].env  # the same settings as the servers
        worker = Worker(env, self.directory / f"worker-{index}.log")
        worker.start()
        return worker

    def replace_worker(self, index: int) -> None:
        self.workers[index].stop()
        self.workers[index] = self._worker(index)

    def replace_server(self, index: int) -> None:
        self.servers[index].stop()
        self.servers[index] = self._server()

    def worker_running(self, job_id: str) -> int:
        """The index of the worker that runs ``job_id``, from the job's row."""
        import psycopg

        with psycopg.connect(self.database.url) as connection:
            (worker,) = connection.execute(
                "SELECT worker FROM liveprogress_job WHERE id = %s", [job_id]
            ).fetchone()
        pid = int(worker.split(":")[1])
        return [w.pid for w in self.workers].index(pid)

    def row(self, job_id: str) -> dict:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.database.url, row_factory=dict_row) as connection:
            return connection.execute(
                "SELECT * FROM liveprogress_job WHERE id = %s", [job_id]
            ).fetchone()

    def stop(self) -> None:
        for process in [*self.workers, *self.servers]:
            process.stop()
        self.redis.stop()
        self.database.drop()


@pytest.fixture(scope="module")
def topology(tmp_path_factory):
    running = Topology(tmp_path_factory.mktemp("scale"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


def start(visitor: Visitor, kind: str = "demo.timer", **params) -> dict:
    status, state = visitor.post_json("/api/jobs/", {"kind": kind, "params": params})
    assert status == 201, state
    return state


def seqs_increase(states: list[dict]) -> bool:
    seqs = [state["seq"] for state in states]
    return seqs == sorted(set(seqs))


async def watch_until_terminal(ws, job_ids: set[str], timeout: float = 30) -> dict[str, list]:
    """Every state each job sends on ``ws`` until all of them ended."""
    seen: dict[str, list] = {job_id: [] for job_id in job_ids}
    open_jobs = set(job_ids)
    deadline = time.monotonic() + timeout
    while open_jobs:
        frames = await frames_until(ws, is_state, max(deadline - time.monotonic(), 0.1))
        state = frames[-1]["job"]
        seen[state["id"]].append(state)
        if is_terminal(frames[-1]):
            open_jobs.discard(state["id"])
    return seen


async def test_watchers_on_both_servers_see_jobs_of_both_workers(topology):
    server_a, server_b = topology.servers
    alice = Visitor(server_a)
    jobs = [start(alice, steps=6, interval=0.15)["id"] for _ in range(4)]
    async with alice.ws() as on_a, alice.on(server_b).ws() as on_b:
        for ws in (on_a, on_b):
            for job_id in jobs:
                await send_json(ws, {"action": "subscribe", "job": job_id})
        seen = await asyncio.gather(
            watch_until_terminal(on_a, set(jobs)), watch_until_terminal(on_b, set(jobs))
        )
    for by_job in seen:
        for states in by_job.values():
            assert seqs_increase(states)
            assert states[-1]["status"] == "succeeded"
            assert states[-1]["result"] == {"steps": 6}
            # Live progress, not just the end: several running states came through.
            assert sum(state["status"] == "running" for state in states) >= 3
    workers = {topology.row(job_id)["worker"] for job_id in jobs}
    assert len({worker.split(":")[1] for worker in workers}) == 2  # both workers ran jobs


async def test_cancel_through_the_other_server_stops_the_job_on_its_worker(topology):
    server_a, server_b = topology.servers
    alice = Visitor(server_a)
    job_id = start(alice, steps=200, interval=0.05)["id"]
    async with alice.ws() as on_a, alice.on(server_b).ws() as on_b:
        await send_json(on_a, {"action": "subscribe", "job": job_id})
        await frames_until(on_a, lambda f: is_state(f, job_id) and f["job"]["current"] >= 2)
        await send_json(on_b, {"action": "cancel", "job": job_id})
        on_b_final = (await frames_until(on_b, lambda f: is_terminal(f, job_id), 15))[-1]
        on_a_final = (await frames_until(on_a, lambda f: is_terminal(f, job_id), 15))[-1]
    assert on_a_final == on_b_final
    assert on_a_final["job"]["status"] == "cancelled"
    assert on_a_final["job"]["current"] < 200
    assert topology.row(job_id)["status"] == "cancelled"


async def test_a_killed_worker_s_job_ends_interrupted_for_its_watchers(topology):
    server_b = topology.servers[1]
    alice = Visitor(server_b)
    job_id = start(alice, steps=300, interval=0.1)["id"]
    async with alice.ws() as ws:
        await send_json(ws, {"action": "subscribe", "job": job_id})
        before = await frames_until(
            ws, lambda f: is_state(f, job_id) and f["job"]["current"] >= 2, 15
        )
        index = topology.worker_running(job_id)
        topology.workers[index].kill()
        killed_at = time.monotonic()
        after = await frames_until(ws, lambda f: is_terminal(f, job_id), DEAD_WORKER_BOUND)
        ended_in = time.monotonic() - killed_at
    final = after[-1]["job"]
    assert final["status"] == "interrupted"
    assert final["error"]
    assert final["seq"] > max(f["job"]["seq"] for f in before + after[:-1] if is_state(f))
    assert ended_in <= DEAD_WORKER_BOUND
    topology.replace_worker(index)


async def test_a_retryable_job_starts_again_on_the_other_worker(topology):
    server_a = topology.servers[0]
    alice = Visitor(server_a)
    job_id = start(alice, "tests.retryable", steps=40, interval=0.1)["id"]
    async with alice.ws() as ws:
        await send_json(ws, {"action": "subscribe", "job": job_id})
        await frames_until(ws, lambda f: is_state(f, job_id) and f["job"]["current"] >= 2, 15)
        index = topology.worker_running(job_id)
        topology.workers[index].kill()
        frames = await frames_until(ws, lambda f: is_terminal(f, job_id), 40)
    states = [f["job"] for f in frames if is_state(f, job_id)]
    assert seqs_increase(states)
    assert "queued" in [state["status"] for state in states]  # re-queued, visibly
    assert states[-1]["status"] == "succeeded"
    row = topology.row(job_id)
    assert row["attempts"] == 2
    assert int(row["worker"].split(":")[1]) == topology.workers[1 - index].pid
    topology.replace_worker(index)


async def test_a_job_with_attempts_is_retried_after_its_worker_is_killed(topology):
    alice = Visitor(topology.servers[0])
    job_id = start(alice, "tests.steady", steps=40, interval=0.1)["id"]
    async with alice.ws() as ws:
        await send_json(ws, {"action": "subscribe", "job": job_id})
        await frames_until(ws, lambda f: is_state(f, job_id) and f["job"]["current"] >= 2, 15)
        index = topology.worker_running(job_id)
        topology.workers[index].kill()
        frames = await frames_until(ws, lambda f: is_terminal(f, job_id), 40)
    states = [f["job"] for f in frames if is_state(f, job_id)]
    assert seqs_increase(states)
    # Shown waiting for its retry: when it is due, and which attempt comes.
    waiting = [state for state in states if state["status"] == "queued"]
    assert waiting and waiting[0]["retry_at"] is not None
    assert (waiting[0]["attempt"], waiting[0]["max_attempts"]) == (1, 3)
    assert states[-1]["status"] == "succeeded"
    assert (states[-1]["attempt"], states[-1]["current"]) == (2, 40)
    row = topology.row(job_id)
    assert row["attempts"] == 2
    assert row["started_at"].timestamp() >= waiting[0]["retry_at"]
    topology.replace_worker(index)


async def test_concurrency_one_holds_across_both_servers_and_workers(topology):
    server_a, server_b = topology.servers
    alice = Visitor(server_a)
    bob = Visitor(server_b)
    labels = ["a", "b", "c", "d"]
    job_ids = [
        start(visitor, "tests.one_at_a_time", label=label, seconds=0.6)["id"]
        for visitor, label in zip([alice, bob, alice, bob], labels, strict=True)
    ]
    async with alice.ws() as ws:
        for job_id in job_ids[::2]:
            await send_json(ws, {"action": "subscribe", "job": job_id})
        seen = await watch_until_terminal(ws, set(job_ids[::2]), timeout=40)
    deadline = time.monotonic() + 20
    while any(topology.row(job_id)["status"] != "succeeded" for job_id in job_ids):
        assert time.monotonic() < deadline, [topology.row(j)["status"] for j in job_ids]
        await asyncio.sleep(0.2)
    runs = sorted(
        (topology.row(job_id)["started_at"], topology.row(job_id)["finished_at"])
        for job_id in job_ids
    )
    # One at a time, whichever server started them and whichever worker ran them.
    for (_, finished), (next_started, _) in zip(runs, runs[1:], strict=False):
        assert finished <= next_started
    # Alice's third job waited in line, and was told its place.
    places = [state["queue_position"] for state in seen[job_ids[2]] if state["status"] == "queued"]
    assert any(place is not None and place >= 1 for place in places)


def people_csv(rows: int) -> tuple[bytes, list[list[str]]]:
    """A CSV of ``rows`` people, every tenth with a bad email; and its good rows."""
    lines, good = ["name,email,city"], []
    for n in range(1, rows + 1):
        email = f"p{n}@example.com" if n % 10 else "not-an-email"
        lines.append(f"P{n},{email},C{n}")
        if n % 10:
            good.append([f"P{n}", email, f"C{n}"])
    return "\n".join(lines).encode(), good


async def test_an_import_whose_worker_is_killed_goes_on_from_its_checkpoint(topology):
    alice = Visitor(topology.servers[0], language="en")
    alice.visit("/import/")
    content, good = people_csv(300)
    status, started = alice.post_file("/api/imports/", "people.csv", content)
    assert status == 201, started
    job_id = started["id"]

    def importing(frame, at_least):
        if not is_state(frame, job_id):
            return False
        running = [s["name"] for s in frame["job"]["stages"] if s["status"] == "running"]
        return running == ["Import"] and frame["job"]["current"] >= at_least

    async with alice.ws() as ws:
        await send_json(ws, {"action": "subscribe", "job": job_id})
        killed_at = (await frames_until(ws, lambda f: importing(f, 60), 20))[-1]["job"]["current"]
        index = topology.worker_running(job_id)
        topology.workers[index].kill()
        try:
            frames = await frames_until(ws, lambda f: is_terminal(f, job_id), 60)
        finally:
            topology.replace_worker(index)
    states = [f["job"] for f in frames if is_state(f, job_id)]
    assert seqs_increase(states)
    final = states[-1]
    assert (final["status"], final["attempt"]) == ("succeeded", 2), final
    # It went on from its checkpoint (written with its states: up to a persist
    # interval behind the row the worker reached), not from row 1.
    resumed = [state["resumed_from"] for state in states if state["resumed_from"] is not None]
    assert resumed and 0 < resumed[0] <= killed_at
    assert final["result"] | {"columns": None} == {
        "file": "people.csv",
        "rows": 300,
        "imported": 270,
        "skipped": 30,
        "columns": None,
    }
    # The cleaned file holds each good row once, in order: none lost, none twice.
    status, _ = alice.get(final["files"][0]["url"])
    assert status == 200
    rows = list(csv.reader(io.StringIO(alice.last_text)))
    assert rows == [["name", "email", "city"], *good]


async def test_a_job_paused_on_one_worker_resumes_on_the_other(topology):
    server_a, server_b = topology.servers
    alice = Visitor(server_a)
    job_id = start(alice, "tests.rows", key="scale", count=150, delay=0.05)["id"]
    async with alice.ws() as ws:
        await send_json(ws, {"action": "subscribe", "job": job_id})
        await frames_until(ws, lambda f: is_state(f, job_id) and f["job"]["current"] >= 10, 20)
        index = topology.worker_running(job_id)
        # Asked through the other server: it reaches the worker that runs the job.
        status, asked = alice.on(server_b).post_json(f"/api/jobs/{job_id}/pause/")
        assert status in (200, 202), asked
        frames = await frames_until(
            ws, lambda f: is_state(f, job_id) and f["job"]["status"] == "paused", 15
        )
        paused = frames[-1]["job"]
        assert paused["paused_at"] is not None and not paused["pause_requested"]
        at = paused["current"]
        assert 10 <= at < 150
        row = topology.row(job_id)
        assert (row["worker"], row["checkpoint"]["loops"]) == ("", [at])
        # Its worker goes away: the resume must be taken by the other one.
        topology.workers[index].stop()
        try:
            await asyncio.sleep(1.0)
            assert topology.row(job_id)["status"] == "paused"  # paused stays paused
            status, resumed = alice.post_json(f"/api/jobs/{job_id}/resume/")
            assert (status, resumed["status"]) == (200, "queued")
            frames = await frames_until(ws, lambda f: is_terminal(f, job_id), 30)
        finally:
            topology.replace_worker(index)
    states = [f["job"] for f in frames if is_state(f, job_id)]
    assert seqs_increase(states)
    final = states[-1]
    assert (final["status"], final["resumed_from"], final["attempt"]) == ("succeeded", at, 1)
    assert final["current"] == 150
    assert int(topology.row(job_id)["worker"].split(":")[1]) == topology.workers[1 - index].pid


async def test_a_client_of_a_killed_server_converges_through_the_other(topology):
    server_a, server_b = topology.servers
    alice = Visitor(server_a)
    job_id = start(alice, steps=20, interval=0.1)["id"]
    async with alice.ws() as ws:
        await send_json(ws, {"action": "subscribe", "job": job_id})
        before = await frames_until(
            ws, lambda f: is_state(f, job_id) and f["job"]["current"] >= 3, 15
        )
        server_a.kill()
    held = max(f["job"]["seq"] for f in before if is_state(f))
    async with alice.on(server_b).ws() as ws:
        await send_json(ws, {"action": "subscribe", "job": job_id, "after": held})
        after = await frames_until(ws, lambda f: is_terminal(f, job_id), 20)
    states = [f["job"] for f in after if is_state(f)]
    assert all(state["seq"] > held for state in states)
    assert seqs_increase(states)
    assert states[-1]["status"] == "succeeded"  # the job ran on a worker: unharmed
    assert states[-1]["current"] == 20
    topology.replace_server(0)


async def test_jobs_and_watchers_survive_a_redis_restart(topology):
    server_b = topology.servers[1]
    alice = Visitor(server_b)
    job_id = start(alice, steps=40, interval=0.1)["id"]
    async with alice.ws() as ws:
        await send_json(ws, {"action": "subscribe", "job": job_id})
        await frames_until(ws, lambda f: is_state(f, job_id) and f["job"]["current"] >= 2, 15)
        topology.redis.stop()
        during = topology.row(job_id)["current"]
        await asyncio.sleep(1.5)
        # The job went on running and persisting with Redis away.
        assert topology.row(job_id)["current"] > during
        topology.redis.start()
        frames = await frames_until(ws, lambda f: is_terminal(f, job_id), 30)
    states = [f["job"] for f in frames if is_state(f)]
    assert seqs_increase(states)
    assert states[-1]["status"] == "succeeded"
    assert states[-1]["current"] == 40
    # Live again after the restart: a new job is watched through Redis as before.
    second = start(alice, steps=3, interval=0.05)["id"]
    async with alice.ws() as ws:
        await send_json(ws, {"action": "subscribe", "job": second})
        final = (await frames_until(ws, lambda f: is_terminal(f, second), 15))[-1]
    assert final["job"]["status"] == "succeeded"
