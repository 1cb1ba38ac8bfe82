"""Production operations in one process: retries with backoff, time limits,
concurrency with a place in line, unique kinds, scheduled starts.

Across processes (a retry after kill -9, concurrency over two servers, a schedule
across a restart): tests/test_scale.py.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from liveprogress import actions, job
from liveprogress.exceptions import AlreadyRunning, BadRequest
from liveprogress.models import TERMINAL_STATUSES, Job
from liveprogress.queueing import client_start_time
from liveprogress.runtime import get_runtime, stop_runtime
from liveprogress.signals import job_retried
from tests import jobs
from tests.jobs import collect

OWNER = "session:operations"
OTHER = "session:someone-else"


async def ended(job_id, timeout: float = 10.0) -> Job:
    """The job once it has ended (it may wait, then run, anywhere in this process)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await Job.objects.aget(pk=job_id)
        if found.status in TERMINAL_STATUSES:
            return found
        assert time.monotonic() < deadline, f"job still {found.status}: {found.message}"
        await asyncio.sleep(0.02)


# -- retries --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_failing_attempt_is_retried_after_its_backoff_and_watchers_see_it(runtime):
    key = uuid.uuid4().hex
    retried = []

    def heard(sender, job, attempt, delay, error, **extra):
        retried.append((attempt, delay, error))

    job_retried.connect(heard)
    try:
        async with collect(owner=OWNER) as seen:
            started = await actions.start_job(OWNER, "tests.flaky", {"key": key, "fail_times": 2})
            assert (started.attempts, started.max_attempts) == (1, 3)
            final = await ended(started.id)
            await asyncio.wait_for(seen.terminal.wait(), 5)
    finally:
        job_retried.disconnect(heard)
    assert (final.status, final.attempts, final.result) == ("succeeded", 3, {"runs": 3})
    # Backoff: 0.2 s after the first failure, then doubled.
    runs = jobs.flaky_runs[key]
    assert runs[1] - runs[0] >= 0.2
    assert runs[2] - runs[1] >= 0.4
    assert retried == [(2, 0.2, "run 1 failed"), (3, 0.4, "run 2 failed")]
    # Each retry was shown: queued, with the attempt, when it is due and the error kept.
    states = [json.loads(m["frame"])["job"] for m in seen.messages]
    waiting = [state for state in states if state["status"] == "queued"]
    retries = [state for state in waiting if state["retry_at"] is not None]
    assert [state["attempt"] for state in retries][:2] == [1, 2]
    assert retries[0]["error"] == "run 1 failed"
    assert "retrying in" in retries[0]["message"].lower() or "reintent" in retries[0]["message"]
    assert all(state["max_attempts"] == 3 for state in retries)
    assert seen.seqs == sorted(seen.seqs)
    # The log says where each attempt ended and why (in the job's language: the
    # site's, Spanish).
    lines, _dropped = await actions.log_lines(final, 0)
    assert [(line["level"], line["text"]) for line in lines] == [
        ("warning", "Ha fallado; se reintenta ahora (intento 2 de 3): run 1 failed"),
        ("warning", "Ha fallado; se reintenta ahora (intento 3 de 3): run 2 failed"),
    ]


@pytest.mark.asyncio
async def test_out_of_attempts_the_job_fails_with_its_last_error(runtime):
    key = uuid.uuid4().hex
    started = await actions.start_job(OWNER, "tests.flaky", {"key": key, "fail_times": 9})
    final = await ended(started.id)
    assert (final.status, final.attempts, final.error) == ("failed", 3, "run 3 failed")
    assert len(jobs.flaky_runs[key]) == 3


@pytest.mark.asyncio
async def test_only_the_chosen_errors_are_retried(runtime):
    key = uuid.uuid4().hex
    params = {"key": key, "fail_times": 1, "error": "TypeError"}
    final = await ended((await actions.start_job(OWNER, "tests.flaky", params)).id)
    assert (final.status, final.attempts, final.error) == ("failed", 1, "run 1 failed")


@pytest.mark.asyncio
async def test_a_job_cancelled_while_it_waits_for_its_retry_never_runs_again(runtime):
    key = uuid.uuid4().hex
    started = await actions.start_job(OWNER, "tests.flaky", {"key": key, "fail_times": 1})
    while (await Job.objects.aget(pk=started.pk)).retry_at is None:
        await asyncio.sleep(0.01)
    await actions.cancel_job(OWNER, str(started.id))
    final = await ended(started.id)
    await asyncio.sleep(0.5)  # past the backoff: nothing starts it again
    assert final.status == "cancelled"
    assert len(jobs.flaky_runs[key]) == 1


# -- time limits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "at_most"),
    [
        ("tests.slow_async", 1.5),  # cancelled at its limit
        ("tests.slow_sync", 1.5),  # stopped at its next progress call
        ("tests.silent_sync", 2.0),  # no progress call: failed once it returns
    ],
)
@pytest.mark.asyncio
async def test_a_job_past_its_time_limit_fails_saying_so(runtime, kind, at_most):
    begun = time.monotonic()
    final = await ended((await actions.start_job(OWNER, kind, {})).id)
    assert final.status == "failed"
    assert final.error == "Stopped: it ran longer than its time limit of 0.3 s"
    assert final.result is None
    assert 0.3 <= time.monotonic() - begun < at_most


@pytest.mark.asyncio
async def test_a_job_within_its_time_limit_succeeds(runtime):
    final = await ended((await actions.start_job(OWNER, "tests.slow_async", {"seconds": 0.05})).id)
    assert (final.status, final.result) == ("succeeded", "too late")


# -- concurrency ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_concurrency_one_runs_one_at_a_time_in_order_showing_the_line(runtime):
    jobs.one_at_a_time_most[0] = 0
    async with collect(owner=OWNER) as seen:
        started = [
            await actions.start_job(OWNER, "tests.one_at_a_time", {"label": label}, language="en")
            for label in ("a", "b", "c")
        ]
        finals = [await ended(one.id) for one in started]
    assert [final.status for final in finals] == ["succeeded"] * 3
    assert jobs.one_at_a_time_most[0] == 1
    # In the order they were started.
    assert finals[0].finished_at <= finals[1].started_at
    assert finals[1].finished_at <= finals[2].started_at
    # The third was shown its place in line, moving up: 2, then 1.
    third = [json.loads(m["frame"])["job"] for m in seen.messages if m["job"] == str(started[2].id)]
    places = [state["queue_position"] for state in third if state["status"] == "queued"]
    assert [place for place in places if place is not None][:2] == [2, 1]
    assert "in line" in next(s["message"] for s in third if s["queue_position"] == 2)
    assert third[-1]["queue_position"] is None


@pytest.mark.asyncio
async def test_a_waiting_job_can_be_cancelled_and_frees_nothing_it_never_held(runtime):
    jobs.one_at_a_time_most[0] = 0
    first = await actions.start_job(OWNER, "tests.one_at_a_time", {"label": "x", "seconds": 0.4})
    second = await actions.start_job(OWNER, "tests.one_at_a_time", {"label": "y"})
    assert (second.status, second.dispatched_at, second.slot) == ("queued", None, None)
    cancelled = await actions.cancel_job(OWNER, str(second.id))
    assert cancelled.status == "cancelled"
    assert (await ended(first.id)).status == "succeeded"
    assert (await Job.objects.aget(pk=second.pk)).started_at is None


# -- unique kinds ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_duplicate_start_returns_the_active_job(runtime):
    first = await actions.start_job(OWNER, "tests.monthly", {"month": 3})
    again = await actions.start_job(OWNER, "tests.monthly", {"month": 3, "note": "again"})
    assert again.id == first.id
    assert again.existing and not first.existing
    other_month = await actions.start_job(OWNER, "tests.monthly", {"month": 4})
    assert other_month.id != first.id
    # Another owner's job with the same key is theirs: unique among each owner's.
    theirs = await actions.start_job(OTHER, "tests.monthly", {"month": 3})
    assert theirs.id != first.id
    assert (await ended(first.id)).status == "succeeded"
    # Once it has ended, the same start makes a new job.
    after = await actions.start_job(OWNER, "tests.monthly", {"month": 3, "seconds": 0})
    assert after.id != first.id and not after.existing
    await ended(after.id)
    await ended(other_month.id)
    await ended(theirs.id)


@pytest.mark.asyncio
async def test_a_site_wide_unique_job_is_refused_to_another_owner_without_showing_it(runtime):
    first = await actions.start_job(OWNER, "tests.site_wide", {})
    with pytest.raises(AlreadyRunning) as refused:
        await actions.start_job(OTHER, "tests.site_wide", {})
    assert refused.value.code == "already_running"
    assert str(first.id) not in refused.value.detail
    assert (await actions.start_job(OWNER, "tests.site_wide", {})).id == first.id
    await ended(first.id)
    assert await Job.objects.filter(kind="tests.site_wide").acount() == 1


@pytest.mark.asyncio
async def test_the_database_keeps_uniqueness_whatever_races(runtime):
    # Starts that check the key at the same moment: one job, the rest get it back.
    results = await asyncio.gather(
        *(actions.start_job(OWNER, "tests.monthly", {"month": 7}) for _ in range(5))
    )
    assert len({str(one.id) for one in results}) == 1
    await ended(results[0].id)


# -- scheduled starts -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_scheduled_job_waits_until_its_time(runtime):
    at = timezone.now() + timedelta(seconds=0.6)
    started = await actions.start_job(
        OWNER, "demo.timer", {"steps": 1, "interval": 0}, run_after=at, language="en"
    )
    assert (started.status, started.run_after, started.started_at) == ("queued", at, None)
    assert started.message.startswith("Scheduled to start at")
    await asyncio.sleep(0.3)
    assert (await Job.objects.aget(pk=started.pk)).status == "queued"
    final = await ended(started.id)
    assert final.status == "succeeded"
    assert final.started_at >= at


@pytest.mark.asyncio
async def test_a_scheduled_job_cancelled_before_its_time_never_runs(runtime):
    at = timezone.now() + timedelta(seconds=0.4)
    started = await actions.start_job(OWNER, "demo.timer", {"steps": 1}, run_after=at)
    assert (await actions.cancel_job(OWNER, str(started.id))).status == "cancelled"
    await asyncio.sleep(0.6)
    final = await Job.objects.aget(pk=started.pk)
    assert (final.status, final.started_at, final.attempts) == ("cancelled", None, 0)


@pytest.mark.asyncio
async def test_a_scheduled_job_survives_a_restart(runtime):
    at = timezone.now() + timedelta(seconds=0.5)
    started = await actions.start_job(OWNER, "demo.timer", {"steps": 1}, run_after=at)
    await stop_runtime()
    await asyncio.sleep(0.7)  # its time passes while no runtime runs
    await get_runtime()
    final = await ended(started.id)
    assert final.status == "succeeded"


@pytest.mark.asyncio
async def test_the_definition_schedules_with_using(runtime):
    from proyecto.demo.jobs import timer

    handle = await timer.using(run_after=timedelta(seconds=0.3)).astart(OWNER, steps=1)
    assert handle.status == "queued"
    assert handle.state["run_after"] is not None
    assert (await ended(handle.id)).status == "succeeded"


def test_a_client_start_time_is_checked():
    assert client_start_time(None) is None
    in_a_minute = timezone.now() + timedelta(minutes=1)
    assert abs(client_start_time(in_a_minute.timestamp()) - in_a_minute) < timedelta(seconds=1)
    assert client_start_time(in_a_minute.isoformat()) == in_a_minute
    for bad in ("tomorrow", "2026-12-01T10:00:00", True, [1], 1e20, "x" * 100):
        with pytest.raises(BadRequest) as refused:
            client_start_time(bad)
        assert refused.value.field == "run_after"
    with pytest.raises(BadRequest, match="at most 366 days"):
        client_start_time((timezone.now() + timedelta(days=400)).timestamp())


# -- declaring them -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"max_attempts": 0}, "max_attempts must be a whole number >= 1"),
        ({"concurrency": 0}, "concurrency must be a whole number >= 1"),
        ({"timeout": -1}, "timeout must be a positive number"),
        ({"backoff": "soon"}, "backoff must be seconds"),
        ({"retry_on": [KeyError, "oops"]}, "retry_on must be exception classes"),
        ({"unique": ["month", "year"]}, "unique names 'year', not among its parameters"),
        ({"unique_scope": "world"}, "unique_scope must be 'owner' or 'site'"),
    ],
)
def test_a_wrong_declaration_names_the_fix(options, complaint):
    with pytest.raises(ImproperlyConfigured, match=complaint):

        @job(f"tests.wrong_{uuid.uuid4().hex[:8]}", **options)
        def wrong(progress, month: int = 1):
            return month


# -- the database keeps the rules when processes race ---------------------------------


@pytest.mark.asyncio
async def test_a_slot_held_by_another_process_s_job_is_never_taken_twice(runtime, monkeypatch):
    from liveprogress import queueing

    # Another process's job of the kind holds slot 0 (and stays running meanwhile).
    elsewhere = await Job.objects.acreate(
        kind="tests.one_at_a_time",
        owner=OTHER,
        status="running",
        worker="elsewhere:1:x",
        heartbeat_at=timezone.now(),
        dispatched_at=timezone.now(),
        slot=0,
    )
    # This process saw the slot free an instant before (a race the lookup lost).
    monkeypatch.setattr(queueing, "_free_slots", lambda kind, concurrency: [0])
    started = await actions.start_job(OWNER, "tests.one_at_a_time", {"label": "late"})
    assert (started.status, started.slot, started.dispatched_at) == ("queued", None, None)
    await asyncio.sleep(0.3)  # dispatch rounds run: the slot is still held
    waiting = await Job.objects.aget(pk=started.pk)
    assert (waiting.status, waiting.queue_position) == ("queued", 1)
    monkeypatch.undo()
    # The other process's job ends: the slot frees, the waiting job runs.
    await Job.objects.filter(pk=elsewhere.pk).aupdate(status="succeeded")
    final = await ended(started.id)
    assert (final.status, final.slot) == ("succeeded", 0)


@pytest.mark.asyncio
async def test_a_unique_key_another_process_just_took_returns_that_job(runtime, monkeypatch):
    from liveprogress import launch

    first = await actions.start_job(OWNER, "tests.monthly", {"month": 11, "seconds": 1})
    # The check before the start missed it (another process inserted it meanwhile):
    # the database's constraint refuses the duplicate all the same.
    monkeypatch.setattr(launch, "active_duplicate", lambda job: None)
    again = await actions.start_job(OWNER, "tests.monthly", {"month": 11})
    assert again.id == first.id and again.existing
    site_wide = await actions.start_job(OWNER, "tests.site_wide", {})
    with pytest.raises(AlreadyRunning):
        await actions.start_job(OTHER, "tests.site_wide", {})
    assert await Job.objects.filter(kind="tests.monthly", unique_key=first.unique_key).acount() == 1
    await ended(first.id)
    await ended(site_wide.id)
