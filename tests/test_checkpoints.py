"""Checkpoints that resume, and pause and resume, in one process.

Across processes (a worker killed mid-import, pause on one worker and resume on
another): tests/test_scale.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from liveprogress import actions
from liveprogress.exceptions import BadRequest
from liveprogress.models import Job
from liveprogress.progress import Progress
from tests import jobs
from tests.test_operations import ended

OWNER = "session:checkpoints"


async def until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (found := await predicate()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)
    return found


@pytest.mark.asyncio
async def test_a_retry_goes_on_from_the_row_that_failed(runtime):
    key = uuid.uuid4().hex
    started = await actions.start_job(OWNER, "tests.rows", {"key": key, "fail_at": 12})
    final = await ended(started.id)
    assert (final.status, final.attempts) == ("succeeded", 2)
    assert final.result == {"rows": 20, "resumed": True}
    # Every row done exactly once: the retry skipped the twelve the first attempt did.
    assert jobs.rows_done[key] == list(range(20))
    assert final.resumed_from == 12
    assert final.checkpoint["loops"] == [20]


@pytest.mark.asyncio
async def test_the_job_s_own_checkpoint_data_comes_back(runtime):
    key = uuid.uuid4().hex
    started = await actions.start_job(OWNER, "tests.pages", {"key": key, "fail_at": 6})
    final = await ended(started.id)
    assert (final.status, final.attempts, final.resumed_from) == ("succeeded", 2, 6)
    assert jobs.pages_fetched[key] == list(range(10))
    assert final.checkpoint["data"] == {"next": 10}


@pytest.mark.asyncio
async def test_pause_frees_the_job_and_resume_goes_on_from_the_checkpoint(runtime):
    key = uuid.uuid4().hex
    started = await actions.start_job(OWNER, "tests.rows", {"key": key, "count": 40})
    await until(lambda: _done_at_least(key, 5))
    asked = await actions.pause_job(OWNER, str(started.id))
    assert asked.pause_requested or asked.status == "paused"
    paused = await until(lambda: _status(started.id, "paused"))
    assert paused.paused_at is not None and paused.worker == "" and paused.slot is None
    assert paused.attempts == 1  # and the resumed run goes on with this attempt
    at = paused.checkpoint["loops"][0]
    assert jobs.rows_done[key] == list(range(at))
    await asyncio.wait_for(runtime.runner.wait(str(started.id)), 5)
    assert str(started.id) not in runtime.runner.executions  # its worker is free
    await asyncio.sleep(0.3)
    assert (await Job.objects.aget(pk=started.pk)).status == "paused"  # stays paused
    # A pause twice, and a resume of a job not paused, change nothing.
    assert (await actions.pause_job(OWNER, str(started.id))).status == "paused"
    resumed = await actions.resume_job(OWNER, str(started.id))
    assert resumed.status == "queued"
    final = await ended(started.id)
    assert (final.status, final.resumed_from, final.attempts) == ("succeeded", at, 1)
    assert jobs.rows_done[key] == list(range(40))
    assert (await actions.resume_job(OWNER, str(started.id))).status == "succeeded"


@pytest.mark.asyncio
async def test_a_queued_job_pauses_at_once_and_a_paused_one_can_be_cancelled(runtime):
    from datetime import timedelta

    from django.utils import timezone

    later = timezone.now() + timedelta(seconds=30)
    waiting = await actions.start_job(OWNER, "demo.timer", {"steps": 1}, run_after=later)
    paused = await actions.pause_job(OWNER, str(waiting.id))
    assert (paused.status, paused.dispatched_at) == ("paused", None)
    cancelled = await actions.cancel_job(OWNER, str(waiting.id))
    assert cancelled.status == "cancelled"


@pytest.mark.asyncio
async def test_only_the_owner_pauses_and_another_engine_s_task_never(runtime):
    from liveprogress.exceptions import JobNotFound

    key = uuid.uuid4().hex
    started = await actions.start_job(OWNER, "tests.rows", {"key": key, "count": 10})
    with pytest.raises(JobNotFound):
        await actions.pause_job("session:stranger", str(started.id))
    with pytest.raises(JobNotFound):
        await actions.resume_job("session:stranger", str(started.id))
    await ended(started.id)
    task = await Job.objects.acreate(kind="celery:some.task", owner=OWNER, status="running")
    with pytest.raises(BadRequest, match="another engine"):
        await actions.pause_job(OWNER, str(task.id))


def test_track_skips_what_a_checkpoint_says_was_done():
    progress = Progress(resume={"loops": [3, 2], "data": {"x": 1}, "current": 2})
    assert progress.resumed and progress.checkpoint_data == {"x": 1}
    first = list(progress.track(range(5)))
    second = list(progress.track("abcd"))
    third = list(progress.track([7, 8]))
    assert (first, second, third) == ([3, 4], ["c", "d"], [7, 8])
    assert progress.snapshot().checkpoint == {"loops": [5, 4, 2], "data": {"x": 1}, "current": 2}


def test_checkpoint_data_must_be_small_json():
    progress = Progress()
    assert progress.snapshot().checkpoint is None
    with pytest.raises(TypeError, match="must be JSON"):
        progress.checkpoint({"when": object()})
    with pytest.raises(ValueError, match="keep a position"):
        progress.checkpoint("x" * 20_000)
    progress.checkpoint({"page": 3})
    assert progress.snapshot().checkpoint == {"loops": [], "data": {"page": 3}, "current": 0}


async def _done_at_least(key: str, count: int) -> bool:
    return len(jobs.rows_done.get(key, [])) >= count


async def _status(job_id, status: str):
    job = await Job.objects.aget(pk=job_id)
    return job if job.status == status else None
