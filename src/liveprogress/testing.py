"""Running a job to its end inside a test, with what it published.

    from liveprogress.testing import run_job

    def test_monthly_report(self):                  # Django TestCase, pytest-django
        run = run_job(monthly_report, month=3)
        assert run.status == "succeeded"
        assert run.result == {"rows": 120}
        assert [state["percent"] for state in run.states][-1] == 100
        assert run.logs[0]["text"] == "120 rows"

The job runs here and now, through the same execution as on a server (its
states are validated, stored, published and ended the same way), with no server,
no runtime and no worker: its database work runs on the test's own connection,
inside the test's transaction, so ``TestCase`` works and nothing waits on a lock.
Children a job spawns run the same way, beside it. Async tests ``await
arun_job(...)`` (with pytest-django, give them ``transactional_db``, as any async
ORM code needs).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.utils import timezone

from . import files
from .definitions import JobDefinition
from .execution import Execution
from .launch import new_job
from .models import Job
from .owner import aowner_of
from .registry import JobKind, get_kind
from .state import JobState, StateFields, job_state
from .writebehind import WriteBehind

#: The owner of a test's jobs unless it names one.
TEST_OWNER = "tests:runner"
#: The worker a test's jobs are marked with (no process claims them: nothing sweeps them).
TEST_WORKER = "liveprogress.testing"

__all__ = ["TEST_OWNER", "JobRun", "arun_job", "run_job"]


@dataclass(frozen=True)
class JobRun(StateFields):
    """A job run to its end by :func:`run_job`."""

    #: The job's row as it ended.
    job: Job
    #: The final state, as the API and the socket send it.
    state: JobState
    #: Every state published, first (queued) to last (the final one), in seq order.
    states: list[JobState]
    #: Every log line, in order: ``{"seq", "level", "text", "at"}``.
    logs: list[dict[str, Any]]
    #: The runs of the children it spawned, in the order it spawned them.
    children: list[JobRun] = field(default_factory=list)


def run_job(
    kind: JobDefinition | str, /, *, owner: Any = TEST_OWNER, language: str = "", **params: Any
) -> JobRun:
    """Run a job of ``kind`` (its definition or its name) to its end; its :class:`JobRun`.

    ``owner``: an owner key, a user or a request (default ``tests:runner``);
    ``params`` are validated as for any start (``BadRequest`` if not). The caps
    don't apply: nothing else runs.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return async_to_sync(arun_job)(kind, owner=owner, language=language, **params)
    raise RuntimeError("run_job is for sync tests: in an async test, await arun_job(...)")


async def arun_job(
    kind: JobDefinition | str, /, *, owner: Any = TEST_OWNER, language: str = "", **params: Any
) -> JobRun:
    """:func:`run_job` for async tests."""
    job_kind = kind.kind if isinstance(kind, JobDefinition) else get_kind(kind)
    # Validated before anything else, as any start is (nothing is saved when they are bad).
    job = new_job(await aowner_of(owner), job_kind, params, language=language)
    return await _Runner().run(job, job_kind)


async def _in_this_thread(call: Any) -> Any:
    # The test's thread: the test's database connection, inside its transaction.
    return await sync_to_async(call, thread_sensitive=True)()


class _Runner:
    """Runs one job (and the children it spawns) on the running loop."""

    async def run(self, job: Job, kind: JobKind) -> JobRun:
        await self.save(job)
        return await self.follow(job, kind)

    async def save(self, job: Job) -> None:
        """Save a :func:`~liveprogress.launch.new_job`, claimed as a test's: no
        process of the tests' claims it, so nothing sweeps it."""
        job.worker, job.attempts, job.heartbeat_at = TEST_WORKER, 1, timezone.now()
        # Handed over here and now: no dispatch loop may take it (nor its schedule,
        # its kind's slots or its retries apply: one attempt, run at once).
        job.dispatched_at = job.heartbeat_at
        await job.asave(force_insert=True)

    async def follow(
        self, job: Job, kind: JobKind, started: list[Execution] | None = None
    ) -> JobRun:
        """Run ``job`` to its end (its execution added to ``started`` as it begins)."""
        states: list[JobState] = [job_state(job)]
        logs: list[dict[str, Any]] = []
        context = _TestContext(self, job)
        writer = WriteBehind()
        execution = Execution(
            job,
            kind,
            writer=writer,
            on_publish=lambda published: states.append(job_state(published)),
            context=context,
            call_sync=_in_this_thread,
        )
        execution.on_log = logs.extend
        if started is not None:
            started.append(execution)
        try:
            await execution.run()
        finally:
            writer.close()
        # A job that ends ends the children it left running, as on a server.
        for child in context.executions:
            await child.cancel()
        children = await asyncio.gather(*context.children)
        ended = await Job.objects.aget(pk=job.pk)
        return JobRun(
            job=ended, state=job_state(ended), states=states, logs=logs, children=list(children)
        )


class _TestContext:
    """A test's job context: files through the storage, children run beside it."""

    def __init__(self, runner: _Runner, job: Job) -> None:
        self.runner = runner
        self.job = job
        self.children: list[asyncio.Task[JobRun]] = []
        self.executions: list[Execution] = []

    def store_file(
        self, name: str, content: bytes, content_type: str, attached: list[dict[str, Any]]
    ) -> dict[str, Any]:
        # The test's thread (a sync job runs in it): the owner's rows read right here.
        kept = files.owner_bytes(self.job.owner, besides=self.job.pk)
        return files.store(
            self.job, name, content, content_type, owner_kept=kept, attached=attached
        )

    async def astore_file(
        self, name: str, content: bytes, content_type: str, attached: list[dict[str, Any]]
    ) -> dict[str, Any]:
        job = self.job
        kept = await _in_this_thread(lambda: files.owner_bytes(job.owner, besides=job.pk))
        storing = sync_to_async(files.store, thread_sensitive=False)
        return await storing(job, name, content, content_type, owner_kept=kept, attached=attached)

    async def spawn(self, kind: str, params: Any) -> str:
        child_kind = get_kind(kind)
        job = self.job
        child = new_job(job.owner, child_kind, params, language=job.language, parent=job)
        await self.runner.save(child)
        self.children.append(
            asyncio.create_task(self.runner.follow(child, child_kind, self.executions))
        )
        return str(child.id)

    async def children_states(self) -> list[dict[str, Any]]:
        children = Job.objects.filter(parent_id=self.job.pk).order_by("created_at")
        return [dict(job_state(child)) async for child in children]
