"""A server stopped mid-job (SIGTERM, then SIGKILL), a new one on the same database.

Real Daphne processes (``tests/servers.py``), two visitors with jobs in every
state: after the restart every job tells the truth. Those that were running
are ``interrupted``, with a seq past anything their watchers saw; those that had
ended keep their ending, unchanged. Each visitor finds its own jobs, and only
those, over the API and over the socket, where resubscribing with the ``after``
it held gets the interrupted state (or an ack, if it had seen it already).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from .servers import (
    TERMINAL,
    DaphneServer,
    Visitor,
    frames_until,
    is_state,
    next_frame,
    send_json,
    wait_for_http,
)

pytestmark = pytest.mark.integration

#: Seconds a stopped server may take to exit on its own.
EXIT_TIMEOUT = 10.0


def new_visitor(server: DaphneServer) -> Visitor:
    visitor = Visitor(server)
    assert visitor.visit() == 200
    return visitor


def start(visitor: Visitor, steps: int, interval: float) -> str:
    status, state = visitor.post_json(
        "/api/jobs/", {"kind": "demo.timer", "params": {"steps": steps, "interval": interval}}
    )
    assert status == 201, (status, state)
    return state["id"]


def ended(visitor: Visitor, job_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        status, state = visitor.get(f"/api/jobs/{job_id}/")
        assert status == 200, (status, state)
        return state if state["status"] in TERMINAL else None

    return wait_for_http(check, timeout=10)


def listing(visitor: Visitor) -> dict[str, dict[str, Any]]:
    status, body = visitor.get("/api/jobs/?limit=200")
    assert status == 200, (status, body)
    return {state["id"]: state for state in body["jobs"]}


class Owner:
    """A visitor and its jobs: one running, one succeeded, one cancelled."""

    def __init__(self, server: DaphneServer) -> None:
        self.visitor = new_visitor(server)
        self.running = start(self.visitor, 200, 0.1)
        done = start(self.visitor, 1, 0.0)
        cancelled = start(self.visitor, 200, 0.1)
        status, _ = self.visitor.post_json(f"/api/jobs/{cancelled}/cancel/")
        assert status in (200, 202)
        # What an ended job says now is what it must say after any restart.
        self.ended = {job_id: ended(self.visitor, job_id) for job_id in (done, cancelled)}
        assert [state["status"] for state in self.ended.values()] == ["succeeded", "cancelled"]
        # The newest state of the running job this visitor's socket got.
        self.last: dict[str, Any] = {}

    @property
    def jobs(self) -> set[str]:
        return {self.running, *self.ended}

    def take(self, frame: Any) -> None:
        if frame.get("type") == "subscribed":
            # The answer to subscribe when a live state got there first: it names
            # a state the socket already has.
            assert frame["job"] == self.running and self.last, frame
            assert frame["seq"] <= self.last["seq"], (frame, self.last)
            return
        assert is_state(frame, self.running), frame
        if not self.last or frame["job"]["seq"] > self.last["seq"]:
            self.last = frame["job"]


async def watch_until_stopped(server: DaphneServer, owners: list[Owner], sig: int) -> int:
    """Watch the running jobs live, send ``sig`` to the server mid-job; its exit code."""
    async with contextlib.AsyncExitStack() as stack:
        connections = [await stack.enter_async_context(owner.visitor.ws()) for owner in owners]
        for owner, ws in zip(owners, connections, strict=True):
            await send_json(ws, {"action": "subscribe", "job": owner.running})
            frames = await frames_until(
                ws, lambda f: is_state(f) and f["job"]["current"] >= 3, timeout=10
            )
            for frame in frames:
                owner.take(frame)
            assert owner.last["status"] == "running"
        assert server.process is not None
        server.process.send_signal(sig)
        returncode = await asyncio.to_thread(server.process.wait, EXIT_TIMEOUT)
        # Whatever was in flight may still arrive; then the socket is closed.
        for owner, ws in zip(owners, connections, strict=True):
            with pytest.raises(ConnectionClosed):
                for _ in range(1000):
                    owner.take(await next_frame(ws, 5))
        return returncode


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_jobs_tell_the_truth_after_a_restart(tmp_path, sig):
    db = tmp_path / "restart.sqlite3"
    first = DaphneServer(db)
    first.start()
    try:
        owners = [Owner(first), Owner(first)]
        began = time.monotonic()
        returncode = await watch_until_stopped(first, owners, sig)
        stopped_in = time.monotonic() - began
    finally:
        first.stop()
    if sig == signal.SIGKILL:
        assert returncode == -signal.SIGKILL
    else:
        # It stopped on its own (stop() would have killed it after STOP_TIMEOUT).
        assert returncode != -signal.SIGKILL, first.log_text()
    assert stopped_in < 60

    with DaphneServer(db) as second:
        for owner, other in zip(owners, reversed(owners), strict=True):
            visitor = owner.visitor.on(second)  # same cookies: sessions live in the database
            mine = listing(visitor)
            assert set(mine) == owner.jobs, (set(mine), owner.jobs)
            interrupted = mine[owner.running]
            assert interrupted["status"] == "interrupted", interrupted
            assert interrupted["error"] and interrupted["finished_at"] is not None
            assert interrupted["seq"] >= owner.last["seq"], (interrupted, owner.last)
            if owner.last["status"] == "running":
                assert interrupted["seq"] > owner.last["seq"]
            else:
                # It said so itself on the way out, and the socket got it.
                assert owner.last == interrupted
            assert interrupted["current"] < interrupted["total"] == 200
            if sig == signal.SIGKILL:
                # What was last written: never more than the socket saw reached.
                assert interrupted["current"] <= owner.last["current"]
            for job_id, before in owner.ended.items():
                assert mine[job_id] == before
            for job_id in other.jobs:
                status, body = visitor.get(f"/api/jobs/{job_id}/")
                assert (status, body["code"]) == (404, "not_found")

            async with visitor.ws() as ws:
                await send_json(
                    ws, {"action": "subscribe", "job": owner.running, "after": owner.last["seq"]}
                )
                answer = await next_frame(ws)
                if owner.last["status"] == "running":
                    assert answer == {"type": "job", "job": interrupted}
                else:
                    assert answer == {
                        "type": "subscribed",
                        "job": owner.running,
                        "seq": interrupted["seq"],
                    }
                for job_id, before in owner.ended.items():
                    await send_json(ws, {"action": "subscribe", "job": job_id})
                    assert await next_frame(ws) == {"type": "job", "job": before}
                for job_id in other.jobs:
                    await send_json(ws, {"action": "subscribe", "job": job_id})
                    answer = await next_frame(ws)
                    assert (answer["code"], answer["job"]) == ("not_found", job_id)
