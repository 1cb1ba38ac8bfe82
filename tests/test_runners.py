"""Where jobs run: the tasks runner, cancel broadcasts, re-queues after a crash."""

from __future__ import annotations

import asyncio
import socket
import subprocess

import django
import pytest
from django.utils import timezone

from liveprogress import actions
from liveprogress.models import UNPERSISTED_SEQ_WINDOW, Job, JobLog
from liveprogress.publish import CANCEL_MESSAGE, control
from liveprogress.runtime import get_runtime, stop_runtime

pytestmark = pytest.mark.asyncio
OWNER = "session:runner-tests"
TASKS_MODULE = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"


@pytest.fixture
def tasks_runner(settings, fast):
    """The tasks runner on django.tasks' DummyBackend: tasks are stored, run by the test."""
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "RUNNER": "tasks"}
    settings.TASKS = {"default": {"BACKEND": f"{TASKS_MODULE}.backends.dummy.DummyBackend"}}
    from importlib import import_module

    backends = import_module(TASKS_MODULE).task_backends
    backends["default"].clear()
    return backends["default"]


async def run_worker_task(result) -> None:
    """What a worker does with a queued task: call it (in a thread of its own)."""
    from liveprogress.runners.tasks import run_job

    await asyncio.to_thread(run_job.call, *result.args, **result.kwargs)


async def test_tasks_runner_queues_and_a_worker_runs_the_job(tasks_runner, transactional_db):
    await stop_runtime()
    job = await actions.start_job(OWNER, "demo.timer", {"steps": 2, "interval": 0})
    stored = await Job.objects.aget(pk=job.pk)
    assert (stored.status, stored.worker, stored.attempts) == ("queued", "", 0)
    [queued] = tasks_runner.results
    assert list(queued.args) == [str(job.id)]
    await run_worker_task(queued)
    stored = await Job.objects.aget(pk=job.pk)
    assert (stored.status, stored.result, stored.attempts) == ("succeeded", {"steps": 2}, 1)
    assert stored.worker.startswith(socket.gethostname() + ":")
    await stop_runtime()


async def test_a_job_cancelled_while_queued_is_never_run(tasks_runner, transactional_db):
    await stop_runtime()
    job = await actions.start_job(OWNER, "demo.timer", {"steps": 2, "interval": 0})
    cancelled = await actions.cancel_job(OWNER, str(job.id))
    assert cancelled.status == "cancelled"
    assert cancelled.started_at is None
    await run_worker_task(tasks_runner.results[0])
    stored = await Job.objects.aget(pk=job.pk)
    assert (stored.status, stored.attempts, stored.started_at) == ("cancelled", 0, None)
    await stop_runtime()


async def test_cancel_broadcast_reaches_the_process_running_the_job(runtime, settings):
    # Heartbeats too slow to matter: only the broadcast can stop the job in time.
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "HEARTBEAT_INTERVAL": 60.0}
    job = await actions.start_job(OWNER, "demo.timer", {"steps": 100, "interval": 0.05})
    await asyncio.sleep(0.2)
    await control(CANCEL_MESSAGE, str(job.id))
    await asyncio.wait_for(runtime.runner.wait(str(job.id)), 2)
    stored = await Job.objects.aget(pk=job.pk)
    assert stored.status == "cancelled"
    assert stored.current < 100


def dead_worker() -> str:
    process = subprocess.Popen(["true"])
    process.wait()
    return f"{socket.gethostname()}:{process.pid}:gone"


async def test_retryable_job_of_a_dead_process_starts_again(fast, transactional_db):
    job = await Job.objects.acreate(
        kind="tests.retryable",
        params={"say": "second attempt"},
        owner=OWNER,
        status="running",
        seq=5,
        current=2,
        total=3,
        worker=dead_worker(),
        heartbeat_at=timezone.now(),
        attempts=1,
        log_seq=2,
    )
    for seq in (1, 2):
        await JobLog.objects.acreate(job=job, seq=seq, level="info", text=f"line {seq}")
    await stop_runtime()
    runtime = await get_runtime()
    await asyncio.wait_for(runtime.runner.wait(str(job.id)), 5)
    stored = await Job.objects.aget(pk=job.pk)
    assert (stored.status, stored.attempts, stored.result) == ("succeeded", 2, {"steps": 3})
    assert stored.seq > 5 + UNPERSISTED_SEQ_WINDOW
    assert stored.worker == runtime.worker
    # The log says where the dead attempt stopped; the next one's lines follow it.
    logged = [(line.seq, line.level, line.text) async for line in stored.log_lines.all()]
    assert logged == [
        (1, "info", "line 1"),
        (2, "info", "line 2"),
        (3, "warning", "The process running this job stopped; starting again"),
        (4, "info", "second attempt"),
    ]
    await stop_runtime()


async def test_retryable_job_out_of_attempts_is_interrupted(fast, transactional_db):
    job = await Job.objects.acreate(
        kind="tests.retryable",
        owner=OWNER,
        status="running",
        seq=5,
        worker=dead_worker(),
        heartbeat_at=timezone.now(),
        attempts=3,
    )
    await stop_runtime()
    await get_runtime()
    stored = await Job.objects.aget(pk=job.pk)
    assert stored.status == "interrupted"
    await stop_runtime()


async def test_a_job_whose_queue_refuses_it_fails_saying_why(
    tasks_runner, transactional_db, monkeypatch
):
    from liveprogress.runners.tasks import TasksRunner

    async def refuse(self, job):
        raise ConnectionError("queue is down")

    monkeypatch.setattr(TasksRunner, "dispatch", refuse)
    await stop_runtime()
    job = await actions.start_job(OWNER, "demo.timer", {"steps": 2, "interval": 0})
    assert job.status == "failed"
    assert "queue is down" in job.error
    assert (await Job.objects.aget(pk=job.pk)).status == "failed"
    await stop_runtime()
