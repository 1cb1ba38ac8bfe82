"""A job waiting for a concurrency slot shows its place in line and when it should
start, live as the line moves, without a new state every dispatch round."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from liveprogress import actions
from liveprogress.models import Job
from tests.jobs import collect
from tests.test_operations import ended

OWNER = "session:place-in-line"


def queued_states(seen, job_id):
    states = [
        json.loads(message["frame"])["job"]
        for message in seen.messages
        if message["job"] == str(job_id)
    ]
    return [state for state in states if state["status"] == "queued"]


@pytest.mark.asyncio
async def test_each_waiting_job_moves_up_and_starts_about_when_it_said(runtime):
    # `tests.paced` runs one at a time; two runs teach it how long one takes.
    params = {"steps": 5, "interval": 0.1}
    for _ in range(2):
        await ended((await actions.start_job(OWNER, "tests.paced", params)).id)
    async with collect(owner=OWNER) as seen:
        line = [
            await actions.start_job(OWNER, "tests.paced", params, language="en") for _ in range(4)
        ]
        finals = [await ended(job.id) for job in line]
    assert [final.status for final in finals] == ["succeeded"] * 4
    for behind, (waiting, final) in enumerate(zip(line[1:], finals[1:], strict=True), start=1):
        states = queued_states(seen, waiting.id)
        placed = [state for state in states if state["queue_position"] is not None]
        # Its place: where it joined, then one up each time a run ends.
        places = [state["queue_position"] for state in placed]
        assert sorted(set(places), reverse=True) == list(range(behind, 0, -1))
        assert places == sorted(places, reverse=True)
        # Each state said when it should start, and it started about then.
        started = final.started_at.timestamp()
        for state in placed:
            assert state["starts_in_s"] is not None, state
            real = started - state["updated_at"]
            assert abs(state["starts_in_s"] - real) <= max(0.3, 0.3 * real), (state, real)
        assert placed[0]["message"].startswith(
            f"Waiting for a free slot: number {behind} in line, starts in"
        )
        # A new state when its place changed (and a few for the estimate), not one
        # every dispatch round (every 0.1 s here, over about 0.5 s per place).
        assert len(placed) <= 2 * behind + 1, places
        # Running, it holds no place nor start estimate.
        assert (final.queue_position, final.starts_in_s) == (None, None)


async def until(holds, job, timeout: float = 10.0) -> Job:
    """The job as the database holds it once ``holds(job)``."""
    deadline = time.monotonic() + timeout
    while not holds(found := await Job.objects.aget(pk=job.pk)):
        assert time.monotonic() < deadline, found.message
        await asyncio.sleep(0.02)
    return found


@pytest.mark.parametrize(
    ("language", "said"),
    [
        ("en", "Waiting for a free slot: number 1 in line, starts in about 20 s"),
        ("es", "Esperando un hueco libre: número 1 en la cola, empieza en aprox. 20 s"),
    ],
)
@pytest.mark.asyncio
async def test_the_start_estimate_follows_the_running_jobs_eta(runtime, language, said):
    # No past runs: the job ahead's own ETA (20 items, 1 s each) says when the slot frees.
    ahead = await actions.start_job(OWNER, "tests.paced", {"steps": 20, "interval": 1.0})
    waiting = await actions.start_job(OWNER, "tests.paced", {}, language=language)
    try:
        await until(lambda job: job.eta_s is not None, ahead)
        found = await until(lambda job: job.starts_in_s is not None, waiting)
        assert found.queue_position == 1
        assert found.starts_in_s == pytest.approx(19, abs=2.5)
        assert found.message == said
    finally:
        for job in (waiting, ahead):
            await actions.cancel_job(OWNER, str(job.id))
