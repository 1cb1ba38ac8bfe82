"""`make serve` for real: scripts/serve with 2 Uvicorn processes behind one port, Redis between.

Each socket lands on one of the processes; a job started through a socket runs
in that socket's process (the in-process runner), and its row's ``worker`` says
which. A watcher on the other process sees every state of it in order to the
end, a cancel through the other process stops it, and stopping the supervisor
stops every process.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from pathlib import Path

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
from tests.topology import RedisServer, descendants

pytestmark = pytest.mark.integration

PROCS = 2
SETTINGS = {"HEARTBEAT_INTERVAL": 0.5, "RECONCILE_INTERVAL": 0.5, "PERSIST_INTERVAL": 0.2}
#: Sockets tried before giving up on seeing both processes (the kernel hands each
#: connection to whichever process accepts first: 2 processes, 1 in 2^40 to miss one).
CONNECT_TRIES = 40


class ServeScript(DaphneServer):
    """scripts/serve on a port of its own, with a Redis and a SQLite file of the test's."""

    name = "serve"

    def command(self) -> list[str]:
        self.env |= {"PY": sys.executable, "PORT": str(self.port), "PROCS": str(PROCS)}
        return ["bash", str(REPO_ROOT / "scripts" / "serve")]

    def processes(self) -> list[int]:
        """The server processes under the supervisor (spawned by multiprocessing)."""
        return [pid for pid in descendants(self.pid) if b"spawn_main" in cmdline(pid)]


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""  # gone meanwhile


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    directory = tmp_path_factory.mktemp("serve")
    redis = RedisServer(directory)
    redis.start()
    server = ServeScript(
        directory / "db.sqlite3", {"REDIS_URL": redis.url}, liveprogress=SETTINGS,
        ready_path="/api/jobs/", start_timeout=60,
    )  # fmt: skip
    try:
        server.start()
        yield server
    finally:
        server.stop()
        redis.stop()


def worker_of(server: ServeScript, job_id: str, timeout: float = 10) -> str:
    """The pid of the process that runs ``job_id``, from its row (set when it is claimed)."""
    deadline = time.monotonic() + timeout
    with sqlite3.connect(server.db_path) as connection:
        while time.monotonic() < deadline:
            row = connection.execute(
                "SELECT worker FROM liveprogress_job WHERE id = ?", [job_id.replace("-", "")]
            ).fetchone()
            if row and row[0]:
                return row[0].split(":")[1]
            time.sleep(0.05)
    raise AssertionError(f"job {job_id} was never claimed")


async def sockets_on_two_processes(visitor: Visitor, server: ServeScript) -> dict[str, tuple]:
    """Open sockets until two land on different processes: {pid: (socket, a job it started)}."""
    by_pid: dict[str, tuple] = {}
    spare = []
    for _ in range(CONNECT_TRIES):
        ws = await visitor.ws().__aenter__()
        await send_json(ws, {"action": "start", "kind": "demo.timer",
                             "params": {"steps": 1, "interval": 0}})  # fmt: skip
        job_id = (await frames_until(ws, is_state))[-1]["job"]["id"]
        await frames_until(ws, lambda f, job=job_id: is_terminal(f, job))  # nothing more of it
        pid = await asyncio.to_thread(worker_of, server, job_id)
        if pid in by_pid:
            spare.append(ws)
        else:
            by_pid[pid] = (ws, job_id)
        if len(by_pid) == PROCS:
            break
    for ws in spare:
        await ws.close()
    assert len(by_pid) == PROCS, f"{CONNECT_TRIES} sockets all landed on {list(by_pid)}"
    return by_pid


async def test_the_processes_share_one_port_and_the_layer(serve):
    assert len(serve.processes()) == PROCS
    alice = Visitor(serve)
    alice.visit()
    (pid_a, (on_a, _)), (pid_b, (on_b, _)) = (await sockets_on_two_processes(alice, serve)).items()
    try:
        # A job started through a socket on A runs in A; B's socket watches it.
        await send_json(on_a, {"action": "start", "kind": "demo.timer",
                               "params": {"steps": 8, "interval": 0.3}})  # fmt: skip
        job_id = (await frames_until(on_a, is_state))[-1]["job"]["id"]
        assert await asyncio.to_thread(worker_of, serve, job_id) == pid_a
        await send_json(on_b, {"action": "subscribe", "job": job_id})
        frames = await frames_until(on_b, lambda f: is_terminal(f, job_id), 20)
        states = [f["job"] for f in frames if is_state(f, job_id)]
        seqs = [state["seq"] for state in states]
        assert seqs == sorted(set(seqs)), seqs
        currents = [state["current"] for state in states]
        assert currents == sorted(currents), currents
        # Every step, one state each (a step every 0.3 s is slower than any coalescing).
        assert set(range(currents[0], 9)) <= set(currents), currents
        assert states[-1]["status"] == "succeeded"
        assert states[-1]["result"] == {"steps": 8}

        # A cancel through B stops a job running in A.
        await frames_until(on_a, lambda f: is_terminal(f, job_id))  # A's socket is quiet again
        await send_json(on_a, {"action": "start", "kind": "demo.timer",
                               "params": {"steps": 200, "interval": 0.05}})  # fmt: skip
        long_id = (await frames_until(on_a, is_state))[-1]["job"]["id"]
        assert await asyncio.to_thread(worker_of, serve, long_id) == pid_a
        await frames_until(on_a, lambda f: is_state(f, long_id) and f["job"]["current"] >= 2)
        await send_json(on_b, {"action": "cancel", "job": long_id})
        on_b_final = (await frames_until(on_b, lambda f: is_terminal(f, long_id), 15))[-1]
        on_a_final = (await frames_until(on_a, lambda f: is_terminal(f, long_id), 15))[-1]
        assert on_a_final["job"]["status"] == on_b_final["job"]["status"] == "cancelled"
        assert on_a_final["job"]["current"] < 200
    finally:
        await on_a.close()
        await on_b.close()


def test_stopping_the_supervisor_stops_every_process(serve):
    assert len(serve.processes()) == PROCS
    everything = descendants(serve.pid)
    serve.stop()
    deadline = time.monotonic() + 10
    while any(cmdline(pid) for pid in everything) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in everything if cmdline(pid)]
