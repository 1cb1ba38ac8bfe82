"""RQ: a job function whose progress its enqueuer watches live, on django-rq's
queues (``pip install django-liveprogress[rq]``).

    from liveprogress.engines.rq import progress_job

    @progress_job("default")
    def import_rows(progress, count):
        for row in progress.track(range(count)):
            ...

    handle = import_rows.start(request, 500)          # a sync view: its user's, or session's
    handle = await import_rows.astart(request, 500)   # an async view
    import_rows.delay(500)                            # owned by ProgressJob.default_owner

Every enqueue through the decorated function makes its job, whose id is the RQ
job's id; the worker imports the function by its dotted path, as RQ does, and
runs its body with the job's Progress first. A cancel stops it at its next
progress call, and a job cancelled while queued is cancelled in RQ too.
``retry=Retry(max=..., interval=...)`` shows as the next attempt ("attempt 2 of
4"). Called directly, outside a worker, the function gets a Progress that
reports nowhere.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from typing import Any, overload

import django_rq
from django.utils.functional import Promise
from rq import Retry, get_current_job
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.queue import Queue

from .. import bridge
from ..execution import Retrying, RetryPolicy
from ..handles import JobHandle
from .base import TaskJobs, job_id_of, params_of

__all__ = ["ProgressJob", "progress_job"]

#: The key of an RQ job's ``meta`` that keeps how many attempts its ``Retry``
#: allows (RQ itself keeps only the retries left).
MAX_ATTEMPTS_META = "liveprogress_max_attempts"

#: The states in which an RQ job has not started yet, and can be cancelled.
_WAITING = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED)

# True while this thread enqueues: a queue that is not async (django-rq's
# ``"ASYNC": False``, for tests) runs the job right there, in the enqueuer's process.
_enqueuing: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "liveprogress_rq_enqueuing", default=False
)


class ProgressJob:
    """An RQ job function (``@progress_job(queue)``) whose every enqueue makes a
    liveprogress job; the worker calls it, and it runs the function as that job."""

    #: Who owns the jobs of enqueues that name no owner (:meth:`delay`).
    default_owner = "system:rq"

    def __init__(
        self,
        function: Callable[..., Any],
        queue: str = "default",
        *,
        name: str | None = None,
        title: str | Promise | None = None,
        retry: Retry | None = None,
        timeout: int | None = None,
        result_ttl: int | None = None,
        ttl: int | None = None,
        failure_ttl: int | None = None,
    ) -> None:
        path = f"{function.__module__}.{function.__qualname__}"
        if inspect.iscoroutinefunction(function):
            raise TypeError(f"RQ job {path!r} is async: its body runs in the worker's thread")
        if "<" in path:
            raise TypeError(
                f"RQ job {path!r} is not at a module's top level: RQ's worker imports it "
                "by its dotted path"
            )
        functools.update_wrapper(self, function)
        self.function = function
        #: Where RQ's worker finds it: the decorated name, this object.
        self.path = path
        self.queue_name = queue
        self.retry = retry
        given = {
            "timeout": timeout,
            "result_ttl": result_ttl,
            "ttl": ttl,
            "failure_ttl": failure_ttl,
        }
        # Only those given: django-rq fills in the queue's defaults for the others.
        self.options: dict[str, Any] = {
            option: value for option, value in given.items() if value is not None
        }
        self.jobs = TaskJobs("rq", name or path, function, title=title, revoke=self._revoke)

    def __repr__(self) -> str:
        return f"<ProgressJob {self.path}>"

    def __reduce__(self) -> str:
        # Pickled as the module's name it is (``queue.enqueue(import_rows)`` pickles
        # the callable), which the function it wraps no longer is.
        return self.function.__qualname__

    # -- enqueueing ----------------------------------------------------------------------

    async def astart(
        self,
        owner: Any,
        /,
        *args: Any,
        retry: Retry | None = None,
        at_front: bool = False,
        **kwargs: Any,
    ) -> JobHandle:
        """Enqueue the function for ``owner`` (a request, a user or an owner key) with
        these arguments; its job's handle. ``retry`` (else the decorator's) and
        ``at_front`` are RQ's, as in ``enqueue``."""
        retry = self.retry if retry is None else retry
        sent = await self.jobs.asend(
            owner,
            lambda job_id: self._send(args, kwargs, job_id, retry, at_front),
            params=params_of(args, kwargs),
            max_attempts=None if retry is None else retry.max + 1,
        )
        return sent.handle

    def start(
        self,
        owner: Any,
        /,
        *args: Any,
        retry: Retry | None = None,
        at_front: bool = False,
        **kwargs: Any,
    ) -> JobHandle:
        """:meth:`astart` for sync code."""
        return bridge.call(
            lambda: self.astart(owner, *args, retry=retry, at_front=at_front, **kwargs)
        )

    def delay(
        self, *args: Any, retry: Retry | None = None, at_front: bool = False, **kwargs: Any
    ) -> JobHandle:
        """django-rq's enqueue (also :meth:`enqueue`, RQ's name): :meth:`start` for
        :attr:`default_owner`."""
        return self.start(self.default_owner, *args, retry=retry, at_front=at_front, **kwargs)

    enqueue = delay

    def _queue(self) -> Queue:
        # The message goes now, whatever django-rq's COMMIT_MODE: the job it carries
        # the id of is saved already (on liveprogress's loop, outside the caller's
        # transaction), and its thread finishes no request.
        return django_rq.get_queue(self.queue_name, commit_mode="auto")

    def _send(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        job_id: str,
        retry: Retry | None,
        at_front: bool,
    ) -> None:
        token = _enqueuing.set(True)
        try:
            self._queue().enqueue_call(
                self.path,
                args=args,
                kwargs=kwargs,
                job_id=job_id,
                at_front=at_front,
                retry=retry,
                meta={} if retry is None else {MAX_ATTEMPTS_META: retry.max + 1},
                **self.options,
            )
        finally:
            _enqueuing.reset(token)

    def _revoke(self, job_id: str) -> None:
        rq_job = self._queue().fetch_job(job_id)
        if rq_job is not None and rq_job.get_status() in _WAITING:
            rq_job.cancel()

    # -- running ---------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """RQ's worker runs the job: the function, as the liveprogress job of the RQ
        job's id. Called otherwise, the function reports nowhere."""
        rq_job = get_current_job()
        if rq_job is None or not self._performs(rq_job):
            # Outside a worker, or from within another job's function.
            return self.jobs.run(None, lambda progress: self.function(progress, *args, **kwargs))
        return self.jobs.run(
            job_id_of(rq_job.id),
            lambda progress: self.function(progress, *args, **kwargs),
            will_retry=_retries_of(rq_job),
            # RQ's worker forks a work horse for each job, which exits after it (a
            # SimpleWorker's process stays, and starts a runtime for the next job);
            # a job run as it is enqueued runs on the enqueuer's runtime, which stays.
            own_runtime=not _enqueuing.get(),
        )

    def _performs(self, rq_job: RQJob) -> bool:
        """Whether ``rq_job`` is a job of this function (by its dotted path, or this
        object pickled), not one whose function called it."""
        function = rq_job.func
        return getattr(function, "__self__", function) is self


def _retries_of(rq_job: RQJob) -> RetryPolicy:
    """RQ retries a job whose function raised while it has retries left (its
    ``Retry``): the next attempt, when it is due, and of how many."""

    def will_retry(error: BaseException) -> Retrying | None:
        left = rq_job.retries_left
        if not left:
            return None
        # Set by every enqueue with a Retry; without it, this was the first attempt.
        most = int(rq_job.meta.get(MAX_ATTEMPTS_META, left + 1))
        return Retrying(
            delay=float(rq_job.get_retry_interval()),
            # This attempt is ``most - left`` (RQ has ``left`` retries to give still).
            attempt=most - left + 1,
            max_attempts=most,
        )

    return will_retry


@overload
def progress_job(queue: Callable[..., Any], /) -> ProgressJob: ...


@overload
def progress_job(
    queue: str = "default",
    /,
    *,
    name: str | None = None,
    title: str | Promise | None = None,
    retry: Retry | None = None,
    timeout: int | None = None,
    result_ttl: int | None = None,
    ttl: int | None = None,
    failure_ttl: int | None = None,
) -> Callable[[Callable[..., Any]], ProgressJob]: ...


def progress_job(
    queue: str | Callable[..., Any] = "default", /, **options: Any
) -> ProgressJob | Callable[[Callable[..., Any]], ProgressJob]:
    """django-rq's ``@job(queue)`` for a function that takes a
    :class:`~liveprogress.progress.Progress` first: ``@progress_job("default")``,
    or ``@progress_job`` for the default queue. ``name``: its job kind is
    ``rq:<name>`` (default: its dotted path); ``retry``, ``timeout``,
    ``result_ttl``, ``ttl``, ``failure_ttl``: RQ's, for every enqueue."""
    if callable(queue):
        return ProgressJob(queue)
    queue_name = queue

    def decorate(function: Callable[..., Any]) -> ProgressJob:
        return ProgressJob(function, queue_name, **options)

    return decorate
