"""Celery: a task whose progress its enqueuer watches live (``pip install
django-liveprogress[celery]``).

    from celery import shared_task
    from liveprogress.engines.celery import ProgressTask

    @shared_task(bind=True, base=ProgressTask)
    def import_rows(self, count):
        for row in self.progress.track(range(count)):
            ...

    handle = import_rows.start(request, 500)          # a sync view: its user's, or session's
    handle = await import_rows.astart(request, 500)   # an async view
    import_rows.delay(500)                            # owned by ProgressTask.default_owner

Every send of the task makes its job, whose id is the Celery task id. The body
reports through ``self.progress`` (or :func:`~liveprogress.engines.current_progress`);
a cancel stops it at its next progress call, and a task cancelled while queued
is revoked and never runs. ``self.retry()`` and ``autoretry_for`` show as the
next attempt ("attempt 2 of 4"). No result backend is needed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from celery import Task
from celery.exceptions import Retry
from django.utils import timezone

from .. import bridge
from ..exceptions import JobCancelled
from ..execution import Retrying
from ..handles import JobHandle
from ..models import Job
from ..progress import Progress
from .base import TaskJobs, current_progress, job_id_of, params_of

__all__ = ["ProgressTask"]


class ProgressTask(Task):  # type: ignore[misc]  # Celery is untyped
    """A Celery task base (``base=ProgressTask``) that gives each send a liveprogress job."""

    #: Who owns the jobs of sends that name no owner (``delay``, a canvas, beat).
    default_owner = "system:celery"
    #: The jobs' title on ``/jobs/`` and in the admin (None: the kind's name,
    #: ``celery:<task name>``); a task sets it as ``@shared_task(..., liveprogress_title=...)``.
    liveprogress_title: str | None = None

    @property
    def jobs(self) -> TaskJobs:
        """This task's kind and its jobs (registered on first use, in each process)."""
        return jobs_of(self)

    @property
    def progress(self) -> Progress:
        """The running task's progress (only inside its body, in a worker)."""
        return current_progress()

    # -- sending -----------------------------------------------------------------------

    async def astart(self, owner: Any, /, *args: Any, **kwargs: Any) -> JobHandle:
        """Send the task for ``owner`` (a request, a user or an owner key) with these
        arguments; its job's handle. Celery's options go through :meth:`apply_async`
        with ``liveprogress_owner=``."""
        sent = await self.jobs.asend(
            owner,
            lambda job_id: self._send(args, kwargs, job_id, {}),
            params=params_of(args, kwargs),
        )
        return sent.handle

    def start(self, owner: Any, /, *args: Any, **kwargs: Any) -> JobHandle:
        """:meth:`astart` for sync code."""
        return bridge.call(lambda: self.astart(owner, *args, **kwargs))

    def apply_async(
        self,
        args: Any = None,
        kwargs: Any = None,
        task_id: str | None = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        shadow: Any = None,
        *,
        liveprogress_owner: Any = None,
        **options: Any,
    ) -> Any:
        """Celery's send, making the task's job first (owned by ``liveprogress_owner``,
        else :attr:`default_owner`) with the task id as its id. A send of a job
        that exists (a retry keeps the task id) makes none."""
        options.update(producer=producer, link=link, link_error=link_error, shadow=shadow)
        if task_id is not None and _job_exists(task_id):
            return super().apply_async(args, kwargs, task_id, **options)
        owner = self.default_owner if liveprogress_owner is None else liveprogress_owner
        sent = self.jobs.send(
            owner,
            lambda job_id: self._send(args, kwargs, job_id, options),
            params=params_of(args, kwargs),
            job_id=job_id_of(task_id),
        )
        return sent.value

    def _send(self, args: Any, kwargs: Any, job_id: str, options: dict[str, Any]) -> Any:
        return super().apply_async(args, kwargs, job_id, **options)

    # -- running -------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        job_id = None if request.called_directly else job_id_of(request.id)
        return self.jobs.run(
            job_id,
            lambda _progress: super(ProgressTask, self).__call__(*args, **kwargs),
            will_retry=lambda error: retry_of(self, error),
        )


def jobs_of(task: Task) -> TaskJobs:
    """The kind and jobs of a Celery task, any task (registered on first use, in each
    process, and kept on the task)."""
    jobs: TaskJobs | None = task.__dict__.get("_liveprogress_jobs")
    if jobs is None:
        title = getattr(task, "liveprogress_title", None)
        jobs = TaskJobs("celery", task.name, task.run, title=title, revoke=task.app.control.revoke)
        task.__dict__["_liveprogress_jobs"] = jobs
    return jobs


def retry_of(task: Task, error: BaseException) -> Retrying | None:
    """Celery retries ``task`` when its body raised ``Retry`` (``self.retry()``,
    ``autoretry_for``): the next attempt, when it is due, and of how many."""
    if not isinstance(error, Retry) or isinstance(error.exc, JobCancelled):
        return None
    when = error.when
    if isinstance(when, datetime):
        if timezone.is_naive(when):
            when = timezone.make_aware(when, UTC)  # Celery's etas are UTC
        delay: float | None = max((when - timezone.now()).total_seconds(), 0.0)
    elif isinstance(when, int | float):
        delay = float(when)
    else:
        delay = None
    most = None if task.max_retries is None else task.max_retries + 1
    cause = error.exc if isinstance(error.exc, BaseException) else None
    return Retrying(
        delay=delay,
        attempt=task.request.retries + 2,
        max_attempts=most,
        cause=(str(cause) or type(cause).__name__) if cause is not None else "",
    )


def _job_exists(task_id: str) -> bool:
    job_id = job_id_of(task_id)
    if job_id is None:
        return False
    return bridge.call(lambda: Job.objects.filter(pk=job_id).aexists())
