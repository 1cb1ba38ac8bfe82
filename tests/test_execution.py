"""Running jobs in process: outcomes, coalescing, seq and persistence rules."""

from __future__ import annotations

import asyncio
import time

import pytest

from liveprogress import actions, execution, writebehind
from liveprogress.exceptions import JobNotFound
from liveprogress.finalwrites import FinalWrites
from liveprogress.models import UNPERSISTED_SEQ_WINDOW, Job, JobQuerySet
from liveprogress.runtime import get_runtime, stop_runtime
from tests import jobs
from tests.jobs import collect

OWNER = "session:tester"
pytestmark = pytest.mark.asyncio


async def run(runtime, kind, params=None, owner=OWNER):
    job = await actions.start_job(owner, kind, params or {})
    await asyncio.wait_for(runtime.runner.wait(str(job.id)), 30)
    return await Job.objects.aget(pk=job.pk)


async def test_async_job_succeeds_and_publishes_in_seq_order(runtime):
    async with collect(owner=OWNER) as seen:
        job = await run(runtime, "demo.timer", {"steps": 4, "interval": 0.05})
        await asyncio.wait_for(seen.terminal.wait(), 5)
    assert job.status == "succeeded"
    assert job.result == {"steps": 4}
    assert (job.current, job.total) == (4, 4)
    assert job.message == "¡Proceso completado!"
    assert seen.seqs == list(range(1, len(seen.seqs) + 1))
    assert seen.messages[-1]["terminal"]
    assert seen.seqs[-1] == job.seq
    assert job.started_at <= job.finished_at


async def test_language_of_the_starter(runtime):
    job = await actions.start_job(OWNER, "demo.timer", {"steps": 1, "interval": 0}, language="en")
    await runtime.runner.wait(str(job.id))
    stored = await Job.objects.aget(pk=job.pk)
    assert stored.message == "Process completed!"


async def test_sync_job_runs_in_a_thread_without_blocking_the_loop(runtime):
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    job = await run(runtime, "tests.blocking", {"seconds": 0.5})
    ticker.cancel()
    assert job.status == "succeeded"
    assert job.result == "released"
    assert ticks >= 20  # the loop went on while the job's thread waited


def patch_own_writes(monkeypatch, around):
    """Route a job's own writes (``JobQuerySet.write_running``, and ``FinalWrites.end``
    for its final state) through ``around(write, writer, job_id, values)``."""
    for owner, name in ((JobQuerySet, "write_running"), (FinalWrites, "end")):
        write = getattr(owner, name)

        async def routed(self, job_id, values, write=write):
            return await around(write, self, job_id, values)

        monkeypatch.setattr(owner, name, routed)


def count_writes(monkeypatch):
    """Record every write of a job: its own (fields written) and the bulk ones (rows)."""
    own: list[tuple[str, list[str]]] = []
    bulk: list[list[tuple[str, int]]] = []
    write_rows = writebehind.write_rows

    async def recording(write, queryset, job_id, values):
        own.append((str(job_id), list(values)))
        return await write(queryset, job_id, values)

    def writing_rows(rows):
        bulk.append([(str(row.pk), row.values["seq"]) for row in rows])
        return write_rows(rows)

    patch_own_writes(monkeypatch, recording)
    monkeypatch.setattr(writebehind, "write_rows", writing_rows)
    return own, bulk


async def test_a_million_advances_are_coalesced(runtime, monkeypatch):
    own, bulk = count_writes(monkeypatch)
    started = time.monotonic()
    async with collect(owner=OWNER) as seen:
        job = await run(runtime, "tests.million")
        await asyncio.wait_for(seen.terminal.wait(), 5)
    elapsed = time.monotonic() - started
    assert job.status == "succeeded"
    assert job.current == 1_000_000
    # At most one message per PUBLISH_INTERVAL (0.02 s), one write per window.
    assert len(seen.messages) <= elapsed / 0.02 + 3
    writes = len(own) + len(bulk)
    assert writes <= len(seen.messages) // UNPERSISTED_SEQ_WINDOW + elapsed / 0.2 + 4
    assert seen.seqs == sorted(set(seen.seqs))


async def test_running_jobs_are_written_behind_together(runtime, settings, monkeypatch):
    """Progress goes out first; every running job's progress is then written in one
    bulk write per PERSIST_INTERVAL, not one write per job per publish."""
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "PUBLISH_INTERVAL": 0.05}
    own, bulk = count_writes(monkeypatch)
    started = [
        await actions.start_job(OWNER, "demo.timer", {"steps": 1000, "interval": 0.02})
        for _ in range(8)
    ]
    ids = {str(job.id) for job in started}
    begun = time.monotonic()
    await asyncio.sleep(1.5)
    elapsed = time.monotonic() - begun
    rows = {str(job.id): job async for job in Job.objects.filter(pk__in=ids)}
    live = {job_id: runtime.runner.executions[job_id].job for job_id in ids}
    # The jobs' own writes while they ran: their status change, nothing else.
    assert sorted(job_id for job_id, _ in own) == sorted(ids)
    # The bulk writes: about one per PERSIST_INTERVAL (0.2 s), each with every job.
    assert 3 <= len(bulk) <= elapsed / 0.2 + 2
    assert all({job_id for job_id, _ in batch} == ids for batch in bulk[1:])
    for job_id in ids:
        assert rows[job_id].current > 0
        assert 0 <= live[job_id].seq - rows[job_id].seq < UNPERSISTED_SEQ_WINDOW
    for job in started:
        await actions.cancel_job(OWNER, str(job.id))
        await asyncio.wait_for(runtime.runner.wait(str(job.id)), 5)
    finals = [job_id for job_id, fields in own if "finished_at" in fields]
    assert sorted(finals) == sorted(ids)
    async for job in Job.objects.filter(pk__in=ids):
        assert (job.status, job.cancel_requested) == ("cancelled", True)


async def test_what_must_be_stored_is_stored_before_it_is_published(runtime, settings, monkeypatch):
    """Status changes and final states are written, then published; a running state
    may go out first, never more than the window ahead of the database."""
    settings.LIVEPROGRESS = {
        **settings.LIVEPROGRESS,
        "PERSIST_INTERVAL": 100.0,
        "PUBLISH_INTERVAL": 0.001,
    }
    checked = []
    published = execution.publish

    async def checking(job):
        stored = await Job.objects.aget(pk=job.pk)
        checked.append((job.status, job.seq, stored.status, stored.seq))
        await published(job)

    monkeypatch.setattr(execution, "publish", checking)
    job = await actions.start_job(OWNER, "tests.sync_steps", {"steps": 200, "delay": 0.002})
    await asyncio.wait_for(runtime.runner.wait(str(job.id)), 10)
    statuses = [status for status, *_ in checked]
    assert statuses[0] == "running" and statuses[-1] == "succeeded"
    assert len(checked) > 2 * UNPERSISTED_SEQ_WINDOW  # the window was really exercised
    behind = 0
    previous = "queued"
    for status, seq, stored_status, stored_seq in checked:
        if status != previous or status == "succeeded":
            assert (stored_status, stored_seq) == (status, seq)
        else:
            assert stored_status == status
            assert 0 <= seq - stored_seq < UNPERSISTED_SEQ_WINDOW
            behind += seq > stored_seq
        previous = status
    assert behind  # running states did go out before their write


async def test_a_write_behind_keeps_a_cancel_requested_elsewhere(runtime, settings):
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "HEARTBEAT_INTERVAL": 600.0}
    await stop_runtime()
    runtime = await get_runtime()
    job = await actions.start_job(OWNER, "demo.timer", {"steps": 1000, "interval": 0.02})
    execution_ = runtime.runner.executions[str(job.id)]
    await asyncio.sleep(0.1)
    # Another process asked for the cancel (the flag is its only trace here).
    await Job.objects.filter(pk=job.pk).aupdate(cancel_requested=True)
    written = execution_.persisted_seq
    async with asyncio.timeout(5):
        while execution_.persisted_seq < written + 5:
            await asyncio.sleep(0.05)
    stored = await Job.objects.aget(pk=job.pk)
    assert stored.status == "running" and stored.current > 0
    assert stored.cancel_requested
    await actions.cancel_job(OWNER, str(job.id))
    await asyncio.wait_for(runtime.runner.wait(str(job.id)), 5)


async def test_a_write_behind_finds_a_job_ended_elsewhere(runtime, settings):
    """Without heartbeats, a write behind is what notices a job ended elsewhere."""
    settings.LIVEPROGRESS = {
        **settings.LIVEPROGRESS,
        "HEARTBEAT_INTERVAL": 600.0,
        "PUBLISH_INTERVAL": 0.05,  # the window is a second away, the bulk write 0.2 s
    }
    await stop_runtime()
    runtime = await get_runtime()
    job = await actions.start_job(OWNER, "demo.timer", {"steps": 1000, "interval": 0.02})
    await asyncio.sleep(0.1)
    await Job.objects.filter(pk=job.pk).aupdate(status="interrupted", seq=10_000)
    await asyncio.wait_for(runtime.runner.wait(str(job.id)), 2)
    stored = await Job.objects.aget(pk=job.pk)
    assert (stored.status, stored.seq) == ("interrupted", 10_000)


async def test_a_failed_bulk_write_is_tried_again(runtime, monkeypatch):
    own, bulk = count_writes(monkeypatch)
    write_rows = writebehind.write_rows
    failures = 1

    def flaky(rows):
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionError("database away")
        return write_rows(rows)

    monkeypatch.setattr(writebehind, "write_rows", flaky)
    job = await actions.start_job(OWNER, "demo.timer", {"steps": 1000, "interval": 0.02})
    live = runtime.runner.executions[str(job.id)].job
    async with asyncio.timeout(5):
        while len(bulk) < 3:
            await asyncio.sleep(0.05)
    stored = await Job.objects.aget(pk=job.pk)
    assert failures == 0
    assert stored.current > 0
    assert 0 <= live.seq - stored.seq < UNPERSISTED_SEQ_WINDOW
    await actions.cancel_job(OWNER, str(job.id))
    await asyncio.wait_for(runtime.runner.wait(str(job.id)), 5)


async def test_database_never_lags_more_than_the_window(runtime, settings):
    settings.LIVEPROGRESS = {
        **settings.LIVEPROGRESS,
        "PERSIST_INTERVAL": 100.0,
        "PUBLISH_INTERVAL": 0.001,
    }
    lags = []
    async with collect(owner=OWNER) as seen:
        job = await actions.start_job(OWNER, "tests.sync_steps", {"steps": 200, "delay": 0.002})
        while not seen.terminal.is_set():
            await asyncio.sleep(0.005)
            if seen.messages:
                stored = await Job.objects.filter(pk=job.pk).values_list("seq", flat=True).aget()
                lags.append(seen.seqs[-1] - stored)
    assert max(seen.seqs) > 2 * UNPERSISTED_SEQ_WINDOW  # the window was really exercised
    assert max(lags) <= UNPERSISTED_SEQ_WINDOW


async def test_exception_fails_the_job_not_the_server(runtime):
    failed = await run(runtime, "tests.fail")
    assert failed.status == "failed"
    assert failed.error == "boom"
    assert failed.current == 1
    after = await run(runtime, "demo.timer", {"steps": 1, "interval": 0})
    assert after.status == "succeeded"


async def test_result_that_is_not_json_fails_clearly(runtime):
    job = await run(runtime, "tests.not_json")
    assert job.status == "failed"
    assert "JSON" in job.error


async def test_cancel_async_job(runtime):
    job = await actions.start_job(OWNER, "demo.timer", {"steps": 100, "interval": 0.05})
    await asyncio.sleep(0.2)
    answer = await actions.cancel_job(OWNER, str(job.id))
    assert answer.cancel_requested
    await asyncio.wait_for(runtime.runner.wait(str(job.id)), 5)
    stored = await Job.objects.aget(pk=job.pk)
    assert stored.status == "cancelled"
    assert stored.cancel_requested
    assert 0 < stored.current < 100


async def test_cancel_sync_job_cooperatively(runtime):
    job = await actions.start_job(OWNER, "tests.ignores_cancel_checks", {"steps": 1000})
    while (await Job.objects.aget(pk=job.pk)).current == 0:
        await asyncio.sleep(0.05)
    await actions.cancel_job(OWNER, str(job.id))
    await asyncio.wait_for(runtime.runner.wait(str(job.id)), 5)
    stored = await Job.objects.aget(pk=job.pk)
    assert stored.status == "cancelled"
    assert stored.current < 1000


async def test_cancel_sync_job_still_waiting_for_a_thread(runtime, settings):
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "SYNC_WORKERS": 1}
    from liveprogress.runtime import get_runtime, stop_runtime

    await stop_runtime()
    runtime = await get_runtime()
    jobs.release.clear()
    try:
        first = await actions.start_job(OWNER, "tests.blocking", {"seconds": 10})
        waiting = await actions.start_job(OWNER, "tests.sync_steps")
        await asyncio.sleep(0.1)
        assert (await Job.objects.aget(pk=waiting.pk)).status == "queued"
        await actions.cancel_job(OWNER, str(waiting.id))
        await asyncio.wait_for(runtime.runner.wait(str(waiting.id)), 2)
        stored = await Job.objects.aget(pk=waiting.pk)
        assert stored.status == "cancelled"
        assert stored.started_at is None
    finally:
        jobs.release.set()
    await asyncio.wait_for(runtime.runner.wait(str(first.id)), 5)
    # As the next test finds it: a `tests.blocking` job blocks until released.
    jobs.release.clear()
    assert (await Job.objects.aget(pk=first.pk)).status == "succeeded"


async def test_job_ended_elsewhere_stops_and_publishes_nothing_more(runtime):
    async with collect(owner=OWNER) as seen:
        job = await actions.start_job(OWNER, "demo.timer", {"steps": 100, "interval": 0.02})
        await asyncio.sleep(0.2)
        await Job.objects.filter(pk=job.pk).aupdate(status="interrupted", seq=10_000)
        await asyncio.wait_for(runtime.runner.wait(str(job.id)), 5)
        await asyncio.sleep(0.2)
    stored = await Job.objects.aget(pk=job.pk)
    assert stored.status == "interrupted"
    assert stored.seq == 10_000
    assert all(message["seq"] < 10_000 for message in seen.messages)
    assert not any(message["terminal"] for message in seen.messages)


async def test_caps_per_owner_and_in_all(runtime, settings):
    settings.LIVEPROGRESS = {
        **settings.LIVEPROGRESS,
        "MAX_ACTIVE_PER_OWNER": 2,
        "MAX_ACTIVE_TOTAL": 3,
    }
    from liveprogress.exceptions import LimitReached

    # Signed-in owners: visitors' own caps (per address, their share) are tested apart.
    params = {"steps": 100, "interval": 0.05}
    started = [await actions.start_job("user:1", "demo.timer", params) for _ in range(2)]
    with pytest.raises(LimitReached, match="2 jobs"):
        await actions.start_job("user:1", "demo.timer", params)
    started.append(await actions.start_job("user:2", "demo.timer", params))
    with pytest.raises(LimitReached, match="as many jobs"):
        await actions.start_job("user:3", "demo.timer", params)
    assert await Job.objects.acount() == 3
    await actions.cancel_job("user:1", str(started[0].id))
    await runtime.runner.wait(str(started[0].id))
    started.append(await actions.start_job("user:3", "demo.timer", params))
    for job in started:
        await actions.cancel_job(job.owner, str(job.id))


async def test_concurrent_starts_respect_the_cap(runtime, settings):
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "MAX_ACTIVE_PER_OWNER": 3}
    params = {"steps": 100, "interval": 0.05}
    outcomes = await asyncio.gather(
        *(actions.start_job("session:a", "demo.timer", params) for _ in range(10)),
        return_exceptions=True,
    )
    assert sum(isinstance(outcome, Job) for outcome in outcomes) == 3
    for outcome in outcomes:
        if isinstance(outcome, Job):
            await actions.cancel_job("session:a", str(outcome.id))


async def test_foreign_jobs_are_not_found(runtime):
    from liveprogress.exceptions import NotFound

    job = await actions.start_job("session:a", "demo.timer", {"steps": 2, "interval": 0.05})
    for call in (actions.get_job, actions.cancel_job):
        with pytest.raises(NotFound):
            await call("session:b", str(job.id))
    await runtime.runner.wait(str(job.id))
    assert (await Job.objects.aget(pk=job.pk)).status == "succeeded"


async def test_a_job_running_here_is_read_from_memory_with_no_query(runtime, monkeypatch):
    """Every subscribe, poll and cancel asks for the job: while it runs here, the
    live state answers (newer than the row) and the database is not asked."""
    from django.db.models.query import QuerySet

    job = await actions.start_job("session:a", "demo.timer", {"steps": 50, "interval": 0.02})
    execution = runtime.runner.executions[str(job.id)]
    while execution.job.current < 3:
        await asyncio.sleep(0.01)

    def no_query(*args, **kwargs):
        raise AssertionError("the database was asked")

    with monkeypatch.context() as patched:
        patched.setattr(QuerySet, "afirst", no_query)
        found = await actions.get_job("session:a", str(job.id))
    assert found is execution.job and found.status == "running" and found.current >= 3
    # Not the owner: the row decides, and it says no.
    with pytest.raises(JobNotFound):
        await actions.get_job("session:b", str(job.id))
    await actions.cancel_job("session:a", str(job.id))
    await runtime.runner.wait(str(job.id))
    # Ended: from the database, as written.
    ended = await actions.get_job("session:a", str(job.id))
    assert ended is not execution.job and ended.status == "cancelled"


async def test_a_database_hiccup_delays_states_but_loses_nothing(runtime, monkeypatch):
    failures = {"progress": 1, "final": 1}

    async def flaky(write, queryset, job_id, values):
        kind = "final" if "finished_at" in values else "progress"
        if failures[kind]:
            failures[kind] -= 1
            raise ConnectionError("database away")
        return await write(queryset, job_id, values)

    patch_own_writes(monkeypatch, flaky)
    async with collect(owner=OWNER) as seen:
        job = await run(runtime, "demo.timer", {"steps": 30, "interval": 0.05})
        await asyncio.wait_for(seen.terminal.wait(), 5)
    assert failures == {"progress": 0, "final": 0}
    assert job.status == "succeeded"
    assert job.current == 30
    # The publisher went on after the failed write: live states, not just the end.
    assert len(seen.messages) >= 5
    assert seen.messages[-1]["seq"] == job.seq
    assert seen.seqs == sorted(set(seen.seqs))


async def test_a_cancel_that_comes_after_the_end_leaves_the_final_state_as_written(runtime):
    """A cancel racing the job's end (it found the job active a moment ago) answers
    with the final state as stored, not one marked cancel_requested that no one
    else ever sees."""
    job = await actions.start_job("session:a", "tests.sync_steps", {"steps": 2})
    running = runtime.runner.executions[str(job.id)]
    async with asyncio.timeout(10):
        while (await Job.objects.aget(pk=job.pk)).is_active:
            await asyncio.sleep(0.02)
    answered = await running.cancel()
    stored = await Job.objects.aget(pk=job.pk)
    assert (answered.status, answered.cancel_requested) == ("succeeded", False)
    assert (stored.seq, stored.cancel_requested) == (answered.seq, False)
