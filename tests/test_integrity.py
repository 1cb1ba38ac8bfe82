"""Integrity: terminal states are final, and every client's view stays truthful.

Once a job has succeeded, failed, been cancelled or interrupted, nothing moves
it: not a later cancel (socket, API, action), not a heartbeat, a stale sweep, a
start-up recovery or a reconcile, not the runner's own publisher. The row stays
identical and no new state goes out on the channel layer.

Then a randomised interleaving (seeded, several seeds): jobs start and end while
several clients subscribe, unsubscribe, reconnect with ``after`` and cancel at
random moments. Every client keeps, as docs/protocol.md tells it to, the newest state
per job, and finds: seqs that only grow on a socket and across reconnects,
terminal states that stay terminal, the final state of every job it is
subscribed to at the end, and that state equal to the stored row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from liveprogress import actions
from liveprogress.exceptions import JobCancelled
from liveprogress.models import Job
from liveprogress.recovery import recover_dead_processes, sweep_stale
from liveprogress.runtime import get_runtime, stop_runtime
from liveprogress.state import job_state
from tests.conftest import FAST
from tests.jobs import collect
from tests.test_api import visit
from tests.test_consumers import connect

pytestmark = pytest.mark.asyncio

TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")


@pytest.fixture
def fast(settings):
    """FAST, without the runtime's heartbeats and sweeps: the tests here sweep by hand."""
    settings.LIVEPROGRESS = {**FAST, "HEARTBEAT_INTERVAL": 600.0, "STALE_AFTER": 3600.0}
    return settings.LIVEPROGRESS


async def drain(ws, quiet: float = 0.02) -> list[dict[str, Any]]:
    """Every frame that arrives until the socket is quiet for ``quiet`` s.

    (receive_nothing, not a receive with a timeout: the communicator kills the
    consumer when a receive times out.)
    """
    frames = []
    while not await ws.receive_nothing(quiet, interval=0.005):
        frames.append(json.loads(await ws.receive_from()))
    return frames


async def row_of(job_id: str) -> dict[str, Any]:
    return await Job.objects.filter(pk=job_id).values().aget()


async def stored_state(job_id: str) -> dict[str, Any]:
    """The job's wire state as the database holds it."""
    return json.loads(json.dumps(job_state(await Job.objects.aget(pk=job_id))))


# -- terminal states are final -------------------------------------------------------------------


async def end_job(runtime, owner: str, ending: str) -> tuple[str, Any]:
    """A job of ``owner`` that ended as ``ending``, and the execution that ran it."""
    kind, params = {
        "succeeded": ("demo.timer", {"steps": 2, "interval": 0.0}),
        "failed": ("tests.fail", {}),
        "cancelled": ("demo.timer", {"steps": 100, "interval": 0.05}),
        "interrupted": ("demo.timer", {"steps": 100, "interval": 0.05}),
    }[ending]
    job = await actions.start_job(owner, kind, params)
    job_id = str(job.id)
    execution = runtime.runner.executions[job_id]
    if ending == "cancelled":
        await asyncio.sleep(0.1)
        await actions.cancel_job(owner, job_id)
    elif ending == "interrupted":
        # Its process stopped answering, as far as the sweep can tell.
        await asyncio.sleep(0.1)
        await Job.objects.filter(pk=job_id).aupdate(
            heartbeat_at=timezone.now() - timedelta(hours=1)
        )
        assert await sweep_stale() == 1
    await asyncio.wait_for(runtime.runner.wait(job_id), 10)
    assert (await Job.objects.aget(pk=job_id)).status == ending
    return job_id, execution


@pytest.mark.parametrize("ending", TERMINAL)
async def test_nothing_moves_a_job_that_ended(runtime, settings, ending):
    client, token = await visit()
    key = client.cookies["sessionid"].value
    owner = f"session:{key}"
    job_id, execution = await end_job(runtime, owner, ending)
    await asyncio.sleep(0.1)  # what the run itself published is out
    before = await row_of(job_id)
    ws = await connect(key)
    async with collect(job_id=job_id) as by_job, collect(owner=owner) as by_owner:
        # Cancels, every way.
        assert (await actions.cancel_job(owner, job_id)).status == ending
        await ws.send_json_to({"action": "cancel", "job": job_id})
        await ws.send_json_to({"action": "subscribe", "job": job_id})
        response = await client.post(
            f"/api/jobs/{job_id}/cancel/",
            {},
            content_type="application/json",
            headers={"X-CSRFToken": token},
        )
        assert response.status_code == 200 and response.json()["status"] == ending
        # The process's own loops, and a stale sweep that finds its heartbeat old.
        await runtime.runner.heartbeat()
        settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "STALE_AFTER": 0.001}
        await asyncio.sleep(0.01)
        assert await sweep_stale() == 0
        # A process starting on this host, for which this one is a previous life.
        assert await recover_dead_processes("elsewhere:1:boot") == 0
        await runtime.hub.reconcile()
        # The runner that ran it: progress calls and its publisher, after the end.
        with contextlib.suppress(JobCancelled):  # what a cancelled job's progress says
            execution.progress.advance()
            execution.progress.message("late")
        await execution.publish_now()  # what the publish loop would do if it still ran
        await execution.cancel()
        await asyncio.sleep(0.3)
    frames = await drain(ws)
    await ws.disconnect()
    assert by_job.messages == [] and by_owner.messages == []
    assert await row_of(job_id) == before
    # The socket's cancel got the ending as it is stored; its subscribe, an ack.
    stored = await stored_state(job_id)
    assert frames == [
        {"type": "job", "job": stored},
        {"type": "subscribed", "job": job_id, "seq": stored["seq"]},
    ]


async def test_a_swept_job_stays_as_the_sweep_left_it(runtime):
    """A live job that a sweep ends (its heartbeat looked stale): its runner stops
    and never writes over the ending."""
    job = await actions.start_job("session:a", "demo.timer", {"steps": 1000, "interval": 0.01})
    await asyncio.sleep(0.2)
    await Job.objects.filter(pk=job.pk).aupdate(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert await sweep_stale() == 1
    swept = await row_of(str(job.id))
    assert swept["status"] == "interrupted"
    await asyncio.wait_for(runtime.runner.wait(str(job.id)), 5)
    await asyncio.sleep(0.3)
    assert await row_of(str(job.id)) == swept


async def sweep_just_after_a_write(job_id: str) -> None:
    """Sweep a job running here as if its heartbeat were stale, just after its runner
    wrote it: its next writes are a PERSIST_INTERVAL away, its next publishes are not."""
    written = (await Job.objects.aget(pk=job_id)).seq
    async with asyncio.timeout(5):
        while (await Job.objects.aget(pk=job_id)).seq == written:
            await asyncio.sleep(0.002)
    await Job.objects.filter(pk=job_id).aupdate(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert await sweep_stale() == 1


async def test_a_swept_job_is_never_published_again(runtime):
    job = await actions.start_job("session:a", "demo.timer", {"steps": 1000, "interval": 0.01})
    await asyncio.sleep(0.2)
    async with collect(job_id=str(job.id)) as seen:
        await sweep_just_after_a_write(str(job.id))
        await asyncio.wait_for(runtime.runner.wait(str(job.id)), 5)
        await asyncio.sleep(0.2)
    ended = [n for n, message in enumerate(seen.messages) if message["terminal"]]
    assert ended, seen.messages
    after_the_end = seen.messages[ended[0] + 1 :]
    assert after_the_end == [], [(m["seq"], m["terminal"]) for m in seen.messages]


async def test_a_swept_job_reads_as_ended_at_once(runtime):
    client, _ = await visit()
    owner = f"session:{client.cookies['sessionid'].value}"
    job = await actions.start_job(owner, "demo.timer", {"steps": 1000, "interval": 0.01})
    await asyncio.sleep(0.2)
    await sweep_just_after_a_write(str(job.id))
    try:
        state = (await client.get(f"/api/jobs/{job.id}/")).json()
        assert state == await stored_state(str(job.id))
    finally:
        await asyncio.wait_for(runtime.runner.wait(str(job.id)), 5)


async def test_a_second_cancel_still_ends_the_job_cancelled(runtime):
    key = (await visit())[0].cookies["sessionid"].value
    owner = f"session:{key}"
    watcher = await connect(key)  # the page that shows the job (its process joins the group)
    job = await actions.start_job(owner, "demo.timer", {"steps": 100, "interval": 0.05})
    await watcher.send_json_to({"action": "subscribe", "job": str(job.id)})
    await asyncio.sleep(0.15)
    try:
        # Two cancel requests back to back: two tabs, or the socket and the API.
        await actions.cancel_job(owner, str(job.id))
        await actions.cancel_job(owner, str(job.id))
        await asyncio.wait_for(runtime.runner.wait(str(job.id)), 5)
        await asyncio.sleep(0.2)
        frames = await drain(watcher)
        stored = await Job.objects.aget(pk=job.pk)
        assert stored.status == "cancelled", (stored.status, [f["job"]["seq"] for f in frames])
        assert frames[-1]["job"]["status"] == "cancelled"
    finally:
        await watcher.disconnect()


# -- a randomised interleaving -----------------------------------------------------------------


@dataclass
class Client:
    """A browser tab: one socket at a time, the newest state per job it was sent."""

    name: str
    key: str
    rng: random.Random
    ws: Any = None
    held: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Jobs this tab wants: resubscribed (with after) on every reconnect.
    wanted: set[str] = field(default_factory=set)
    # Per socket: the last state of each job it got, what was cancelled on it, and
    # the jobs it was told it no longer watches.
    last_here: dict[str, dict[str, Any]] = field(default_factory=dict)
    cancelled_here: set[str] = field(default_factory=set)
    silenced: set[str] = field(default_factory=set)
    # Every state any socket of this tab got: (job, seq) -> states.
    log: list[dict[str, Any]] = field(default_factory=list)
    reconnects: int = 0

    async def open(self) -> None:
        self.ws = await connect(self.key)
        self.last_here, self.cancelled_here, self.silenced = {}, set(), set()
        for job_id in sorted(self.wanted):
            await self.subscribe(job_id)

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_json_to(frame)

    async def subscribe(self, job_id: str) -> None:
        frame = {"action": "subscribe", "job": job_id}
        if job_id in self.held:
            frame["after"] = self.held[job_id]["seq"]
            # Whatever comes next for the job on this socket is newer than that.
            self.last_here.setdefault(job_id, {**self.held[job_id], "after": True})
        self.wanted.add(job_id)
        self.silenced.discard(job_id)
        await self.send(frame)

    async def unsubscribe(self, job_id: str) -> None:
        self.wanted.discard(job_id)
        await self.send({"action": "unsubscribe", "job": job_id})

    async def cancel(self, job_id: str) -> None:
        self.wanted.add(job_id)  # a cancel subscribes the socket
        self.silenced.discard(job_id)
        self.cancelled_here.add(job_id)
        await self.send({"action": "cancel", "job": job_id})

    async def reconnect(self) -> None:
        await self.ws.disconnect()
        self.reconnects += 1
        await self.open()

    async def read(self, quiet: float = 0.01) -> None:
        for frame in await drain(self.ws, quiet):
            self.take(frame)

    def take(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        assert kind in ("job", "subscribed", "unsubscribed"), (self.name, frame)
        if kind == "unsubscribed":
            if frame["job"] not in self.wanted:
                self.silenced.add(frame["job"])
            return
        if kind == "subscribed":
            # An ack: the socket holds that state already.
            held = self.held.get(frame["job"])
            assert held is not None and frame["seq"] <= held["seq"], (self.name, frame, held)
            return
        state = frame["job"]
        job_id, seq = state["id"], state["seq"]
        assert job_id not in self.silenced, (self.name, "a state after unsubscribed", state)
        self.log.append(state)
        last = self.last_here.get(job_id)
        if last is not None:
            if seq == last["seq"] and job_id in self.cancelled_here:
                # Only the answer to a cancel may repeat a seq: the same state, but
                # for the cancel request it may now carry.
                before = {k: v for k, v in last.items() if k != "after"}
                assert {**before, "cancel_requested": state["cancel_requested"]} == state
                assert state["cancel_requested"] or not before["cancel_requested"]
            else:
                # Newer than the last one here, or than the `after` it resubscribed with.
                assert seq > last["seq"], (self.name, "not newer", last, state)
        self.last_here[job_id] = state
        held = self.held.get(job_id)
        if held is not None and held["status"] in TERMINAL:
            # Terminal states are final: nothing newer ever comes.
            assert seq <= held["seq"], (self.name, "a state after the end", held, state)
        if held is None or seq > held["seq"]:
            self.held[job_id] = state


async def play(client: Client, jobs: list[str], cancelled: set[str], until: float) -> None:
    """Random actions at random moments until the loop's clock reaches ``until``."""
    loop = asyncio.get_running_loop()
    rng = client.rng
    while loop.time() < until:
        await asyncio.sleep(rng.uniform(0, 0.04))
        if not jobs:
            continue
        job_id = rng.choice(jobs)
        roll = rng.random()
        if roll < 0.45:
            await client.subscribe(job_id)
        elif roll < 0.65:
            await client.unsubscribe(job_id)
        elif roll < 0.75:
            # One cancel per job, from any tab: a second one while the job stops
            # loses its ending (test_a_second_cancel_still_ends_the_job_cancelled).
            if job_id not in cancelled:
                cancelled.add(job_id)
                await client.cancel(job_id)
        elif roll < 0.85:
            await client.reconnect()
        await client.read()


async def start_jobs(rng: random.Random, owner: str, jobs: list[str], count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(rng.uniform(0, 0.15))
        params = {"steps": rng.randint(2, 12), "interval": rng.choice([0.0, 0.01, 0.03, 0.06])}
        job = await actions.start_job(owner, "demo.timer", params)
        jobs.append(str(job.id))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_random_interleavings_keep_every_client_truthful(runtime, settings, seed):
    settings.LIVEPROGRESS = {
        **FAST,
        "MAX_ACTIVE_PER_OWNER": 100,
        # Heartbeats and sweeps on: a job whose ending was lost anyway ends interrupted
        # within seconds, and a live one is not swept for a loop that stalls under load.
        "STALE_AFTER": 3.0,
        "MAX_FRAMES_PER_SECOND": 1000,
        "FRAME_BURST": 1000,
    }
    await stop_runtime()
    runtime = await get_runtime()
    rng = random.Random(seed)
    client, _ = await visit()
    key = client.cookies["sessionid"].value
    owner = f"session:{key}"
    clients = [Client(f"tab{n}", key, random.Random(rng.random())) for n in range(4)]
    for tab in clients:
        await tab.open()
    jobs: list[str] = []
    cancelled: set[str] = set()
    until = asyncio.get_running_loop().time() + 2.0
    try:
        await asyncio.gather(
            start_jobs(random.Random(rng.random()), owner, jobs, 10),
            *(play(tab, jobs, cancelled, until) for tab in clients),
        )
        for job_id in jobs:
            await asyncio.wait_for(runtime.runner.wait(job_id), 20)
        # The end reaches every tab subscribed to the job (reconcile included).
        async with asyncio.timeout(10):
            for tab in clients:
                while any(
                    tab.held.get(job_id, {}).get("status") not in TERMINAL for job_id in tab.wanted
                ):
                    await tab.read(0.05)
        for tab in clients:
            await tab.read(0.1)
    finally:
        for tab in clients:
            await tab.ws.disconnect()

    assert len(jobs) == 10
    stored = {job_id: await stored_state(job_id) for job_id in jobs}
    assert all(state["status"] in TERMINAL for state in stored.values())
    by_seq: dict[tuple[str, int], dict[str, Any]] = {}
    for tab in clients:
        for job_id in tab.wanted:
            assert tab.held[job_id] == stored[job_id], (tab.name, tab.held[job_id])
        for job_id, state in tab.held.items():
            assert state["seq"] <= stored[job_id]["seq"]
            if state["status"] in TERMINAL:
                assert state == stored[job_id], (tab.name, state, stored[job_id])
        # One seq is one state everywhere, but for the cancel request it may carry.
        for state in tab.log:
            seen = by_seq.setdefault((state["id"], state["seq"]), state)
            assert {**seen, "cancel_requested": None} == {**state, "cancel_requested": None}
    assert sum(tab.reconnects for tab in clients) > 0
