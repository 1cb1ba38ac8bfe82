"""The ``tasks`` runner: every job is a task of Django's Tasks framework.

Starting a job enqueues :func:`run_job` on the ``TASK_BACKEND`` backend's
``TASK_QUEUE`` queue; that backend's workers (e.g. django-tasks-db's
``db_worker``) run it, through the runtime's worker entry
(:func:`~liveprogress.runtime.run_in_worker`): it claims the job, so a job
cancelled while queued, or claimed by another worker, is not run; then it runs
it in the worker with an in-process runner, with heartbeats, publishing through
the shared channel layer. The runtime loads :class:`TasksRunner` by dotted path
(``runners.QUEUE_RUNNERS``), so this module, on top of the runtime, is no circle.
Django's Tasks framework has no progress, no cancel and no lease of its own:
those come from the job's row, its heartbeat and the control group.
"""

from __future__ import annotations

import asyncio

from .. import conf
from ..models import Job
from ..runtime import run_in_worker

try:
    from django.tasks import task
except ImportError:  # Django < 6.0: the django-tasks backport
    from django_tasks import task  # type: ignore[no-redef]


@task()
def run_job(job_id: str) -> None:
    """Run the liveprogress job ``job_id`` in this worker, to its end."""
    asyncio.run(run_in_worker(job_id))


class TasksRunner:
    """Runs every job as a task of Django's Tasks framework."""

    def prepare(self, job: Job) -> None:
        """Nothing: a queued job is claimed by the worker that picks it up."""

    async def dispatch(self, job: Job) -> None:
        """Enqueue the task that runs ``job`` on the configured backend and queue."""
        await run_job.using(
            backend=conf.get("TASK_BACKEND"), queue_name=conf.get("TASK_QUEUE")
        ).aenqueue(str(job.id))
