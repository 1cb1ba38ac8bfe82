"""Running jobs in process: outcomes, coalescing, seq and persistence rules."""

from __future__ import annotations

import asyncio
import time

import pytest

from liveprogress import actions
from liveprogress.execution import Execution
from liveprogress.models import UNPERSISTED_SEQ_WINDOW, Job
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


async def test_a_million_advances_are_coalesced(runtime, monkeypatch):
    writes = 0
    persist = Execution._persist

    async def counting(self, fields):
        nonlocal writes
        writes += 1
        return await persist(self, fields)

    monkeypatch.setattr(Execution, "_persist", counting)
    started = time.monotonic()
    async with collect(owner=OWNER) as seen:
        job = await run(runtime, "tests.million")
        await asyncio.wait_for(seen.terminal.wait(), 5)
    elapsed = time.monotonic() - started
    assert job.status == "succeeded"
    assert job.current == 1_000_000
    # At most one message per PUBLISH_INTERVAL (0.02 s), one write per window.
    assert len(seen.messages) <= elapsed / 0.02 + 3
    assert writes <= len(seen.messages) // UNPERSISTED_SEQ_WINDOW + elapsed / 0.2 + 4
    assert seen.seqs == sorted(set(seen.seqs))


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

    params = {"steps": 100, "interval": 0.05}
    started = [await actions.start_job("session:a", "demo.timer", params) for _ in range(2)]
    with pytest.raises(LimitReached, match="2 jobs"):
        await actions.start_job("session:a", "demo.timer", params)
    started.append(await actions.start_job("session:b", "demo.timer", params))
    with pytest.raises(LimitReached, match="as many jobs"):
        await actions.start_job("session:c", "demo.timer", params)
    assert await Job.objects.acount() == 3
    await actions.cancel_job("session:a", str(started[0].id))
    await runtime.runner.wait(str(started[0].id))
    started.append(await actions.start_job("session:c", "demo.timer", params))
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


async def test_a_database_hiccup_delays_states_but_loses_nothing(runtime, monkeypatch):
    failures = {"progress": 1, "final": 1}
    persist = Execution._persist

    async def flaky(self, fields):
        kind = "final" if "finished_at" in fields else "progress"
        if failures[kind]:
            failures[kind] -= 1
            raise ConnectionError("database away")
        return await persist(self, fields)

    monkeypatch.setattr(Execution, "_persist", flaky)
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
