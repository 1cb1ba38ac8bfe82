"""The ``tasks`` runner: every job is a task of Django's Tasks framework.

Starting a job enqueues :func:`run_job` on the ``TASK_BACKEND`` backend's
``TASK_QUEUE`` queue; that backend's workers (e.g. django-tasks-db's
``db_worker``) run it. The task claims the job, so a job cancelled while queued,
or claimed by another worker, is not run; then it runs it in the worker with an
in-process runner, with heartbeats, publishing through the shared channel layer.
Django's Tasks framework has no progress, no cancel and no lease of its own:
those come from the job's row, its heartbeat and the control group.
"""

from __future__ import annotations

import asyncio
import logging

from .. import conf
from ..models import Job

try:
    from django.tasks import task
except ImportError:  # Django < 6.0: the django-tasks backport
    from django_tasks import task  # type: ignore[no-redef]

logger = logging.getLogger(__name__)


@task()
def run_job(job_id: str) -> None:
    """Run the liveprogress job ``job_id`` in this worker, to its end."""
    asyncio.run(_run(job_id))


async def _run(job_id: str) -> None:
    from ..runtime import get_runtime, stop_runtime

    runtime = await get_runtime()
    try:
        if not await Job.objects.claim(job_id, runtime.worker):
            logger.info("job not run: ended or claimed elsewhere job=%s", job_id)
            return
        job = await Job.objects.aget(pk=job_id)
        runtime.runner.submit(job)
        await runtime.runner.wait(job_id)
    finally:
        await stop_runtime()


class TasksRunner:
    def prepare(self, job: Job) -> None:
        """Nothing: a queued job is claimed by the worker that picks it up."""

    async def dispatch(self, job: Job) -> None:
        await run_job.using(
            backend=conf.get("TASK_BACKEND"), queue_name=conf.get("TASK_QUEUE")
        ).aenqueue(str(job.id))
