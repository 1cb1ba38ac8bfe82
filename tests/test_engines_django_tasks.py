"""Django's Tasks adapter, in-process: a progress task is a task of the framework, each
enqueue makes its job, and the worker's call runs the body as that job (the queue
is DummyBackend's list, the worker this test; ImmediateBackend runs it inline).
A real ``db_worker`` runs them in tests/test_engines.py."""

from __future__ import annotations

from importlib import import_module

import django
import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from liveprogress import registry
from liveprogress.engines.django_tasks import JOB_KWARG, ProgressTask, progress_task
from liveprogress.models import Job

OWNER = "user:42"
TASKS_MODULE = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"


@pytest.fixture
def tasks(monkeypatch):
    """The test tasks, their kinds registered for this test only: a task of another
    engine left in the registry would make check W009 speak for the rest of the run."""
    monkeypatch.setattr(registry, "_registry", registry.kinds())
    module = import_module("tests.engine_tasks.tasks")
    for task in (module.count, module.attempt):
        registry._registry[task.jobs.kind.name] = task.jobs.kind
    return module


def backend_settings(settings, backend: str):
    settings.TASKS = {"default": {"BACKEND": f"{TASKS_MODULE}.backends.{backend}"}}
    return import_module(TASKS_MODULE).task_backends["default"]


@pytest.fixture
def queue(settings, runtime, tasks):
    """DummyBackend: enqueued tasks are kept, run when the test says."""
    backend = backend_settings(settings, "dummy.DummyBackend")
    backend.clear()
    return backend


@pytest.fixture
def immediate(settings, runtime, tasks):
    return backend_settings(settings, "immediate.ImmediateBackend")


async def work(result):
    """What a worker does with an enqueued task: call it, in a thread of its own."""
    return await sync_to_async(result.task.call, thread_sensitive=False)(
        *result.args, **result.kwargs
    )


def test_a_progress_task_is_a_task_of_the_framework(tasks):
    count = tasks.count
    task_class = import_module(f"{TASKS_MODULE}.base").Task
    assert isinstance(count, task_class)
    # A worker finds it by its path, and using() keeps it a progress task of one kind.
    assert import_string(count.module_path) is count
    bulk = count.using(priority=5, queue_name="default")
    assert isinstance(bulk, ProgressTask) and bulk.priority == 5
    assert bulk.jobs is count.jobs and bulk.func is count.func
    assert count.jobs.kind.name == "tasks:tests.count"
    assert count.jobs.kind.title == "tasks:tests.count"
    assert tasks.attempt.jobs.kind.title == "What the context says"
    assert count.name == "count"


def test_called_directly_the_body_reports_nowhere(db, tasks):
    assert tasks.count.call(3) == {"steps": 3}
    assert not Job.objects.exists()


async def test_start_makes_the_job_and_a_worker_runs_it(queue, tasks):
    handle = await tasks.count.astart(OWNER, 3)
    assert (handle.owner, handle.status, handle.state["kind"]) == (
        OWNER,
        "queued",
        "tasks:tests.count",
    )
    [result] = queue.results
    assert result.kwargs == {JOB_KWARG: handle.id}
    job = await Job.objects.aget(pk=handle.id)
    assert job.params == {"args": [3], "kwargs": {}}
    assert await work(result) == {"steps": 3}
    job = await Job.objects.aget(pk=handle.id)
    assert (job.status, job.result, job.current, job.attempts) == ("succeeded", {"steps": 3}, 3, 1)


async def test_using_sends_with_the_options_given(queue, tasks):
    await tasks.count.using(priority=7).astart(OWNER, 1)
    [result] = queue.results
    assert result.task.priority == 7 and isinstance(result.task, ProgressTask)


async def test_enqueue_makes_a_job_of_the_default_owner(queue, tasks):
    result = await tasks.count.aenqueue(2)
    assert [result.id] == [stored.id for stored in queue.results]
    job = await Job.objects.aget(pk=result.kwargs[JOB_KWARG])
    assert (job.owner, job.status) == ("system:tasks", "queued")
    assert await work(result) == {"steps": 2}
    assert (await Job.objects.aget(pk=job.pk)).status == "succeeded"


async def test_a_task_cancelled_while_queued_is_skipped(queue, tasks):
    handle = await tasks.count.astart(OWNER, 2)
    assert (await handle.acancel()).status == "cancelled"
    assert await work(queue.results[0]) is None
    job = await Job.objects.aget(pk=handle.id)
    assert (job.status, job.attempts, job.started_at) == ("cancelled", 0, None)


async def test_an_error_reaches_the_worker_after_the_job_ends_failed(queue, tasks):
    handle = await tasks.count.astart(OWNER, 2, fail=True)
    with pytest.raises(ValueError, match="told to fail"):
        await work(queue.results[0])
    job = await Job.objects.aget(pk=handle.id)
    assert (job.status, job.error, job.current) == ("failed", "told to fail", 2)


async def test_the_immediate_backend_runs_the_task_inside_start(immediate, tasks):
    handle = await tasks.count.astart(OWNER, 2)
    # The handle holds the state the job was made with; the job ran meanwhile.
    assert handle.status == "queued"
    assert (await handle.arefresh()).status == "succeeded"
    assert handle.state["result"] == {"steps": 2}


async def test_a_task_that_takes_the_context_gets_it_after_the_progress(immediate, tasks):
    result = await tasks.attempt.aenqueue()
    assert result.return_value == {"attempt": 1, "result_id": str(result.id)}
    job = await Job.objects.aget(pk=result.kwargs[JOB_KWARG])
    assert (job.status, job.result) == ("succeeded", result.return_value)


def test_a_task_must_be_sync_and_take_the_progress():
    async def later(progress):
        return None

    with pytest.raises(ImproperlyConfigured, match="is async"):
        progress_task(later)

    def nothing():
        return None

    with pytest.raises(ImproperlyConfigured, match="must take the Progress"):
        progress_task(nothing)


def test_check_w009_names_django_s_tasks_with_the_in_memory_layer(settings, tasks):
    from liveprogress.checks import check_engines_layer

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    [warning] = check_engines_layer()
    assert warning.id == "liveprogress.W009"
    # (Other engines' kinds, registered by other tests' imports, may be named too.)
    assert warning.msg.startswith("Tasks of ") and "Django's Tasks" in warning.msg
