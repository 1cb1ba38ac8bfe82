"""Django's Tasks: a task of ``django.tasks`` whose progress its enqueuer watches live
(Django >= 6; on Django 5.2 the ``django-tasks`` backport).

    from liveprogress.engines.django_tasks import progress_task

    @progress_task(priority=10)                     # django.tasks.task's options
    def import_rows(progress, count):
        for row in progress.track(range(count)):
            ...

    handle = import_rows.start(request, 500)          # a sync view: its user's, or session's
    handle = await import_rows.astart(request, 500)   # an async view
    import_rows.using(run_after=in_an_hour).start(request.user, 500)
    import_rows.enqueue(500)                          # owned by ProgressTask.default_owner

The decorator makes a real :class:`~django.tasks.Task` of the framework: any
backend's workers (django-tasks-db's ``db_worker``, ...) run it. Every enqueue
makes its job first; the backend chooses its own result id, so the job's id
travels with the task as the keyword argument ``liveprogress_job``, which the
task takes off again in the worker before calling the body. The framework has no
retry and no revoke: a task cancelled while queued stays on its queue, and the
worker that takes it finds its job ended and skips the body.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import datetime
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Concatenate,
    Generic,
    Literal,
    ParamSpec,
    TypeVar,
    cast,
    overload,
)

from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections
from django.utils.functional import Promise

from .. import bridge
from ..handles import JobHandle
from ..progress import Progress
from .base import Send, TaskJobs, params_of

try:
    from django.tasks.base import (
        DEFAULT_TASK_BACKEND_ALIAS,
        DEFAULT_TASK_PRIORITY,
        DEFAULT_TASK_QUEUE_NAME,
        Task,
    )
except ImportError:  # Django < 6.0: the django-tasks backport
    from django_tasks.base import (  # type: ignore[no-redef]
        DEFAULT_TASK_BACKEND_ALIAS,
        DEFAULT_TASK_PRIORITY,
        DEFAULT_TASK_QUEUE_NAME,
        Task,
    )

P = ParamSpec("P")
R = TypeVar("R")

if TYPE_CHECKING:
    from django.tasks.base import TaskContext, TaskResult

    class _Task(Task[P, R]): ...

else:

    class _Task(Task, Generic[P, R]):
        """Django 6's Task is not generic at run time (its stubs are)."""


__all__ = ["JOB_KWARG", "ProgressTask", "progress_task"]

#: The keyword argument that carries a task's job id from its enqueue to its worker.
JOB_KWARG = "liveprogress_job"

#: Each task's kind and jobs, by the function the framework calls (its ``func``):
#: ``using()`` makes new Task objects around the same one.
_jobs: dict[Callable[..., Any], TaskJobs] = {}


class ProgressTask(_Task[P, R]):
    """A :class:`~django.tasks.Task` whose every enqueue gives it a liveprogress job;
    made by :func:`progress_task`."""

    #: Who owns the jobs of enqueues that name no owner (``enqueue``, ``aenqueue``).
    default_owner: ClassVar[str] = "system:tasks"

    @property
    def jobs(self) -> TaskJobs:
        """This task's kind and its jobs."""
        return _jobs[self.func]

    def using(
        self,
        *,
        priority: int | None = None,
        queue_name: str | None = None,
        run_after: datetime | None = None,
        backend: str | None = None,
    ) -> ProgressTask[P, R]:
        """The framework's ``using``: the same task with these options (still a
        ProgressTask, so ``.using(...).start(owner, ...)`` works)."""
        # The framework's using() is dataclasses.replace: it keeps the class.
        return cast(
            "ProgressTask[P, R]",
            super().using(
                priority=priority, queue_name=queue_name, run_after=run_after, backend=backend
            ),
        )

    async def astart(self, owner: Any, /, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        """Enqueue the task for ``owner`` (a request, a user or an owner key) with these
        arguments; its job's handle. The backend's options go through :meth:`using`."""
        sent = await self.jobs.asend(
            owner, self._sender(args, kwargs), params=params_of(args, kwargs)
        )
        return sent.handle

    def start(self, owner: Any, /, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        """:meth:`astart` for sync code."""
        return bridge.call(lambda: self.astart(owner, *args, **kwargs))

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> TaskResult[P, R]:
        """The framework's enqueue, making the task's job first (owned by
        :attr:`default_owner`); the backend's result."""
        sent = self.jobs.send(
            self.default_owner, self._sender(args, kwargs), params=params_of(args, kwargs)
        )
        result: TaskResult[P, R] = sent.value
        return result

    async def aenqueue(self, *args: P.args, **kwargs: P.kwargs) -> TaskResult[P, R]:
        """:meth:`enqueue` for async code."""
        sent = await self.jobs.asend(
            self.default_owner, self._sender(args, kwargs), params=params_of(args, kwargs)
        )
        result: TaskResult[P, R] = sent.value
        return result

    def _sender(self, args: Any, kwargs: Any) -> Send:
        """The send of this task with these arguments; it returns the backend's result."""

        def send(job_id: str) -> TaskResult[P, R]:
            # In a thread of liveprogress's own (base._Sender): its database
            # connection is checked and let go as a request's would be.
            close_old_connections()
            try:
                backend = self.get_backend()
                return backend.enqueue(self, args, {**kwargs, JOB_KWARG: job_id})
            finally:
                close_old_connections()

        return send


@overload
def progress_task(function: Callable[Concatenate[Progress, P], R], /) -> ProgressTask[P, R]: ...


@overload
def progress_task(
    *,
    priority: int = ...,
    queue_name: str = ...,
    backend: str = ...,
    takes_context: Literal[False] = False,
    name: str | None = ...,
    title: str | Promise | None = ...,
) -> Callable[[Callable[Concatenate[Progress, P], R]], ProgressTask[P, R]]: ...


@overload
def progress_task(
    *,
    priority: int = ...,
    queue_name: str = ...,
    backend: str = ...,
    takes_context: Literal[True],
    name: str | None = ...,
    title: str | Promise | None = ...,
) -> Callable[
    [Callable[Concatenate[Progress, TaskContext[Any, Any], P], R]], ProgressTask[P, R]
]: ...


def progress_task(
    function: Callable[..., Any] | None = None,
    /,
    *,
    priority: int = DEFAULT_TASK_PRIORITY,
    queue_name: str = DEFAULT_TASK_QUEUE_NAME,
    backend: str = DEFAULT_TASK_BACKEND_ALIAS,
    takes_context: bool = False,
    name: str | None = None,
    title: str | Promise | None = None,
) -> ProgressTask[Any, Any] | Callable[[Callable[..., Any]], ProgressTask[Any, Any]]:
    """``django.tasks.task`` for a module-level function whose first parameter takes
    the :class:`~liveprogress.progress.Progress` (then, with ``takes_context``, the
    framework's ``TaskContext``, then the task's own arguments).

    ``name``: the job kind's name after ``tasks:`` (default: the function's dotted
    path); ``title``: the jobs' title (default: the kind's name). Called directly
    (``task.call(...)``), the body gets a Progress that reports nowhere.
    """

    def decorate(function: Callable[..., Any]) -> ProgressTask[Any, Any]:
        path = f"{function.__module__}.{function.__qualname__}"
        if inspect.iscoroutinefunction(function):
            raise ImproperlyConfigured(
                f"Task {path!r} is async: the worker runs a task's body in its own "
                "thread; write it as a plain function"
            )
        if not inspect.signature(function).parameters:
            raise ImproperlyConfigured(f"Task {path!r}: its first parameter must take the Progress")
        jobs = TaskJobs("tasks", name or path, function, title=title)
        run = _in_worker(function, jobs, takes_context=takes_context)
        _jobs[run] = jobs
        return ProgressTask(
            func=run,
            priority=priority,
            queue_name=queue_name,
            backend=backend,
            takes_context=takes_context,
        )

    return decorate if function is None else decorate(function)


def _in_worker(
    function: Callable[..., Any], jobs: TaskJobs, *, takes_context: bool
) -> Callable[..., Any]:
    """The function the framework calls, named as ``function`` (a worker finds the
    task by that name): it takes the job id off the arguments and runs ``function``
    as the job (or, with no job id, with a Progress that reports nowhere)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        job_id = kwargs.pop(JOB_KWARG, None)
        return jobs.run(job_id, lambda progress: function(progress, *args, **kwargs))

    def run_with_context(context: Any, /, *args: Any, **kwargs: Any) -> Any:
        # The framework checks that such a task's first parameter is named so.
        return run(context, *args, **kwargs)

    called = run_with_context if takes_context else run
    called.__module__ = function.__module__
    called.__name__ = function.__name__
    called.__qualname__ = function.__qualname__
    called.__doc__ = function.__doc__
    return called
