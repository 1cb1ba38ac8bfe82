"""Final states of jobs that end together: written together, each then published
once; and a job that never spawned asks for no children at its end."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from contextlib import asynccontextmanager

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError, connection
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from liveprogress import actions
from liveprogress.cascade import PARENT_ENDED
from liveprogress.finalwrites import FinalWrites
from liveprogress.models import Job, JobQuerySet, Status
from tests import jobs
from tests.jobs import collect

OWNER = "session:finals"
JOBS = 20
pytestmark = pytest.mark.asyncio


@pytest.fixture
def room(settings):
    """Room for every job of a test at once (one owner, one address)."""
    caps = dict.fromkeys(("MAX_ACTIVE_PER_OWNER", "MAX_ACTIVE_PER_ADDRESS"), JOBS)
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, **caps}


@asynccontextmanager
async def database_thread_held():
    """Hold the thread that runs the thread-sensitive database calls (the one every
    final write goes through), so that what queues there meanwhile waits together."""
    held, let_go = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        let_go.wait(10)

    holding = asyncio.ensure_future(sync_to_async(hold, thread_sensitive=True)())
    await asyncio.to_thread(held.wait, 10)
    try:
        yield
    finally:
        let_go.set()
        await holding


@pytest.fixture
def queries(monkeypatch):
    """Every SQL statement run meanwhile, in any thread (each context has a
    connection of its own, so one connection's wrappers would miss the jobs')."""
    seen: list[str] = []
    execute = CursorWrapper.execute

    def recording(self, sql, params=None):
        seen.append(sql)
        return execute(self, sql, params)

    monkeypatch.setattr(CursorWrapper, "execute", recording)
    return seen


def asks_for_children(sql: str) -> bool:
    """Whether ``sql`` looks a job's children up (``end_children``'s query)."""
    return '"parent_id" = %s' in sql


def record_final_writes(monkeypatch, fail_first: bool = False):
    """The jobs each call of ``FinalWrites.end`` writes for, and the size of each
    transaction of final writes (``Job.objects.end``); the first fails if asked."""
    calls: list[str] = []
    batches: list[int] = []
    end, end_all = FinalWrites.end, JobQuerySet.end

    async def calling(self, job_id, values):
        calls.append(str(job_id))
        return await end(self, job_id, values)

    def writing(self, endings):
        endings = list(endings)
        batches.append(len(endings))
        if fail_first and len(batches) == 1:
            raise OperationalError("database away")
        return end_all(self, endings)

    monkeypatch.setattr(FinalWrites, "end", calling)
    monkeypatch.setattr(JobQuerySet, "end", writing)
    return calls, batches


async def start_gated(count: int) -> list[Job]:
    jobs.gate.clear()
    started = [await actions.start_job(OWNER, "tests.gated", {"value": n}) for n in range(count)]
    ids = [job.pk for job in started]
    async with asyncio.timeout(10):
        while await Job.objects.filter(pk__in=ids, status=Status.RUNNING).acount() < count:
            await asyncio.sleep(0.01)
    return started


async def end_together(runtime, started: list[Job], calls: list[str], *, meanwhile=None):
    """Open the gate while the database thread is held: every job's final write
    queues there before any runs. ``meanwhile`` runs first, as the thread is held."""
    async with database_thread_held():
        if meanwhile is not None:
            await meanwhile()
        jobs.gate.set()
        async with asyncio.timeout(10):
            while len(calls) < len(started):
                await asyncio.sleep(0.005)
    async with asyncio.timeout(15):
        for job in started:
            await runtime.runner.wait(str(job.id))


def by_job(messages):
    found = defaultdict(list)
    for message in messages:
        found[message["job"]].append(message)
    return found


def assert_ended_once_in_order(messages, row):
    """The job's states reached its watchers in seq order, its final state (as the
    database holds it) once, and last."""
    seqs = [message["seq"] for message in messages]
    assert seqs == sorted(set(seqs))
    assert [message["terminal"] for message in messages].count(True) == 1
    assert messages[-1]["terminal"] and seqs[-1] == row.seq


async def test_jobs_ending_together_are_written_together_then_each_published_once(
    runtime, room, monkeypatch
):
    calls, batches = record_final_writes(monkeypatch)
    async with collect(owner=OWNER) as seen:
        started = await start_gated(JOBS)
        elsewhere = started[0]

        async def sweep_one() -> None:
            # Through a connection of its own: the database thread is held.
            def interrupt() -> None:
                Job.objects.filter(pk=elsewhere.pk).update(
                    status=Status.INTERRUPTED, error="swept", finished_at=timezone.now()
                )
                connection.close()

            await sync_to_async(interrupt, thread_sensitive=False)()

        await end_together(runtime, started, calls, meanwhile=sweep_one)
    # Every final write in one transaction.
    assert batches == [JOBS]
    rows = {str(row.pk): row async for row in Job.objects.filter(owner=OWNER)}
    published = by_job(seen.messages)
    # The one ended elsewhere keeps that ending; its write said it didn't take, so
    # its own ending was never published.
    assert (rows[str(elsewhere.pk)].status, rows[str(elsewhere.pk)].error) == (
        "interrupted",
        "swept",
    )
    assert not any(message["terminal"] for message in published[str(elsewhere.pk)])
    for value, job in enumerate(started[1:], start=1):
        row = rows[str(job.pk)]
        assert (row.status, row.result) == ("succeeded", value)
        assert_ended_once_in_order(published[str(job.pk)], row)


async def test_a_failed_write_of_jobs_ending_together_is_tried_again_for_each(
    runtime, room, monkeypatch
):
    calls, batches = record_final_writes(monkeypatch, fail_first=True)
    async with collect(owner=OWNER) as seen:
        started = await start_gated(JOBS)
        await end_together(runtime, started, calls)
    # All in the one that failed, then each job's own retry (together again or not).
    assert batches[0] == JOBS and sum(batches[1:]) == JOBS
    rows = {str(row.pk): row async for row in Job.objects.filter(owner=OWNER)}
    published = by_job(seen.messages)
    for value, job in enumerate(started):
        row = rows[str(job.pk)]
        assert (row.status, row.result) == ("succeeded", value)
        assert_ended_once_in_order(published[str(job.pk)], row)


async def test_endings_written_together_each_learn_whether_theirs_took(transactional_db):
    active = [await Job.objects.acreate(kind="demo.timer", owner=OWNER) for _ in range(3)]
    ended = await Job.objects.acreate(kind="demo.timer", owner=OWNER, status=Status.CANCELLED)
    finals = FinalWrites()
    values = {"status": Status.SUCCEEDED, "seq": 7}
    async with database_thread_held():
        writes = [asyncio.ensure_future(finals.end(job.pk, values)) for job in [*active, ended]]
        await asyncio.sleep(0.05)
    assert await asyncio.gather(*writes) == [True, True, True, False]
    rows = {row.pk: (row.status, row.seq) async for row in Job.objects.all()}
    assert [rows[job.pk] for job in active] == [("succeeded", 7)] * 3
    assert rows[ended.pk] == ("cancelled", 0)


async def test_a_job_that_never_spawned_asks_for_no_children(runtime, queries):
    job = await actions.start_job(OWNER, "demo.timer", {"steps": 2, "interval": 0})
    await asyncio.wait_for(runtime.runner.wait(str(job.id)), 10)
    assert (await Job.objects.aget(pk=job.pk)).status == "succeeded"
    assert any("UPDATE" in sql for sql in queries)  # its writes were seen
    assert not any(asks_for_children(sql) for sql in queries)


async def test_a_job_that_spawned_still_ends_its_children(runtime, queries):
    parent = await actions.start_job(OWNER, "tests.abandons", {"children": 2})
    await asyncio.wait_for(runtime.runner.wait(str(parent.id)), 10)
    assert (await Job.objects.aget(pk=parent.pk)).status == "failed"
    assert any(asks_for_children(sql) for sql in queries)
    children = [child async for child in Job.objects.filter(parent_id=parent.pk)]
    assert len(children) == 2
    async with asyncio.timeout(10):
        for child in children:
            await runtime.runner.wait(str(child.id))
    async for child in Job.objects.filter(parent_id=parent.pk):
        assert child.status == "cancelled"
        assert child.error in (PARENT_ENDED, "")
