"""The engines' shared core (liveprogress.engines.base), in-process: a task's job made
at send, then run by a "worker" (a thread of the test) through ``TaskJobs.run``, with
the races a real engine brings: a cancel meeting a retried error, a retry policy that
reads the worker thread's state or fails, results a job can't hold, a worker thread
that leaves before it serves, and the caps. Real engines' workers run the same code
in tests/test_engines.py."""

from __future__ import annotations

import asyncio
import datetime
import threading
import uuid

import pytest
from asgiref.sync import sync_to_async

from liveprogress import actions, registry
from liveprogress.engines import base
from liveprogress.engines.base import TaskJobs
from liveprogress.exceptions import LimitReached
from liveprogress.execution import Retrying
from liveprogress.models import Job

OWNER = "user:7"
#: Seconds any wait here may take.
WAIT = 10


@pytest.fixture
def jobs(monkeypatch, runtime):
    """A task of a made-up engine, registered for this test only (a kind of another
    engine left registered would make check W009 speak for the rest of the run)."""
    monkeypatch.setattr(registry, "_registry", registry.kinds())
    return TaskJobs("fake", f"task{uuid.uuid4().hex[:8]}", lambda progress: None)


async def send(jobs: TaskJobs, owner: str = OWNER) -> str:
    sent = await jobs.asend(owner, lambda job_id: f"message of {job_id}", params={})
    # The engine's send got the job's id, and what it returned comes back with it.
    assert sent.value == f"message of {sent.handle.id}"
    return sent.handle.id


async def work(jobs: TaskJobs, job_id: str, body, **options):
    """What the engine's worker does: run the task, in a thread of its own."""
    return await sync_to_async(jobs.run, thread_sensitive=False)(job_id, body, **options)


async def row(job_id: str) -> Job:
    return await Job.objects.aget(pk=job_id)


async def until(job_id: str, *statuses: str) -> Job:
    async with asyncio.timeout(WAIT):
        while (job := await row(job_id)).status not in statuses:
            await asyncio.sleep(0.02)
    return job


def always_retry(_error: BaseException) -> Retrying:
    return Retrying(delay=0, attempt=2, max_attempts=3)


class Gate:
    """A task body that reports, then waits for the test before it fails."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.go = threading.Event()
        self.runs = 0

    def __call__(self, progress):
        self.runs += 1
        progress.start(total=2)
        progress.advance()
        self.started.set()
        assert self.go.wait(WAIT)
        raise ValueError("the attempt failed")

    async def wait_started(self) -> None:
        assert await asyncio.to_thread(self.started.wait, WAIT)


async def test_a_cancel_beats_a_retried_error_and_the_next_attempt_never_runs(jobs):
    job_id = await send(jobs)
    gate = Gate()
    running = asyncio.ensure_future(work(jobs, job_id, gate, will_retry=always_retry))
    await gate.wait_started()
    await actions.cancel_job(OWNER, job_id)
    gate.go.set()
    # The engine gets its error (its retry is its own), but the job ended on the cancel.
    with pytest.raises(ValueError, match="the attempt failed"):
        await running
    ended = await row(job_id)
    assert (ended.status, ended.attempts) == ("cancelled", 1)
    # The retry the engine sent finds the job ended: the body never runs again.
    assert await work(jobs, job_id, gate, will_retry=always_retry) is None
    assert gate.runs == 1


async def test_a_cancel_asked_through_another_process_is_not_given_back_to_the_queue(jobs):
    job_id = await send(jobs)
    gate = Gate()
    running = asyncio.ensure_future(work(jobs, job_id, gate, will_retry=always_retry))
    await gate.wait_started()
    # Only the row's flag, as a cancel through another server sets it, not yet seen here.
    await Job.objects.request_cancel(job_id)
    gate.go.set()
    with pytest.raises(ValueError):
        await running
    ended = await row(job_id)
    assert ended.status == "cancelled" and ended.cancel_requested
    assert await work(jobs, job_id, gate, will_retry=always_retry) is None
    assert gate.runs == 1


async def test_the_retry_policy_is_asked_in_the_worker_s_thread(jobs):
    job_id = await send(jobs)
    asked_in: list[str] = []
    worker = threading.local()

    def policy(error: BaseException) -> Retrying:
        # An engine's running task is the worker thread's (Celery's request is
        # thread-local): the policy must see it.
        asked_in.append(threading.current_thread().name)
        return Retrying(delay=30, attempt=worker.retries + 2, max_attempts=4)

    def body(progress):
        worker.retries = 1
        raise ValueError("try again")

    def in_the_worker() -> None:
        with pytest.raises(ValueError):
            jobs.run(job_id, body, will_retry=policy)

    thread = threading.Thread(target=in_the_worker, name="engine-worker")
    await asyncio.to_thread(lambda: (thread.start(), thread.join(WAIT)))
    assert asked_in == ["engine-worker"]
    queued = await row(job_id)
    assert (queued.status, queued.worker, queued.error) == ("queued", "", "try again")
    assert queued.max_attempts == 4 and queued.retry_at is not None
    assert "intento 3 de 4" in queued.message  # in the sender's language (Spanish here)


async def test_a_retry_policy_that_fails_ends_the_job_failed_instead_of_stuck(jobs):
    job_id = await send(jobs)

    def broken_policy(error: BaseException) -> Retrying:
        raise TypeError("can't compare offset-naive and offset-aware datetimes")

    def body(progress):
        raise ValueError("the task failed")

    with pytest.raises(ValueError):
        await work(jobs, job_id, body, will_retry=broken_policy)
    ended = await row(job_id)
    assert (ended.status, ended.error) == ("failed", "the task failed")


async def test_a_result_the_job_can_t_hold_still_reaches_the_engine(jobs, settings, fast):
    job_id = await send(jobs)
    day = datetime.date(2026, 12, 1)
    assert await work(jobs, job_id, lambda progress: day) == day
    ended = await row(job_id)
    # The task succeeded: its engine holds the value, the job its repr.
    assert (ended.status, ended.result) == ("succeeded", repr(day))

    settings.LIVEPROGRESS = {**fast, "MAX_RESULT_BYTES": 100}
    job_id = await send(jobs)
    big = ["x" * 50] * 10
    assert await work(jobs, job_id, lambda progress: big) == big
    ended = await row(job_id)
    assert ended.status == "succeeded"
    assert ended.result == {"note": "a result of 540 bytes, not kept"}


class TimeLimit(BaseException):
    """What an engine raises in its worker thread to stop a task (Dramatiq's
    TimeLimitExceeded, a signal's exception)."""


async def test_a_worker_thread_that_leaves_before_serving_leaves_no_job_claimed(jobs, monkeypatch):
    job_id = await send(jobs)
    ran: list[bool] = []

    def stopped(self) -> None:
        raise TimeLimit  # arrives just as the thread would serve the job's call

    monkeypatch.setattr(base._InWorkerThread, "serve", stopped)
    with pytest.raises(TimeLimit):
        await work(jobs, job_id, lambda progress: ran.append(True))
    ended = await until(job_id, "failed", "interrupted")
    assert "stopped the task before it began" in ended.error
    assert ran == []


async def test_tasks_the_site_s_code_sends_are_not_capped_but_clients_are(jobs, settings, fast):
    settings.LIVEPROGRESS = {**fast, "MAX_ACTIVE_PER_OWNER": 2, "MAX_ACTIVE_TOTAL": 2}
    # A backlog of tasks sent by code (delay(), a system owner): the engine admits them.
    for _ in range(3):
        await send(jobs, "system:fake")
    # Nor do they fill the server's total: they run in the engine's workers.
    await send(jobs, OWNER)
    await send(jobs, OWNER)
    with pytest.raises(LimitReached):
        await send(jobs, OWNER)


def test_a_celery_progress_task_called_directly_reports_nowhere():
    celery = pytest.importorskip("celery")
    from liveprogress.engines.celery import ProgressTask

    app = celery.Celery("direct", set_as_current=False)

    @app.task(bind=True, base=ProgressTask)
    def count(self, n):
        for _ in self.progress.track(range(n)):
            pass
        return n

    assert count(3) == 3
