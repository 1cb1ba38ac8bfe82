"""Dramatiq: an actor whose progress its enqueuer watches live (``pip install
django-liveprogress[dramatiq]``).

    from liveprogress.engines.dramatiq import progress_actor

    @progress_actor(max_retries=3)
    def import_rows(progress, count):
        for row in progress.track(range(count)):
            ...

    handle = import_rows.start(request, 500)          # a sync view: its user's, or session's
    handle = await import_rows.astart(request, 500)   # an async view
    import_rows.send(500)                             # owned by ProgressActor.default_owner

Every send of the actor makes its job, whose id is the Dramatiq message id. The
body gets the job's :class:`~liveprogress.progress.Progress` first; a cancel stops
it at its next progress call, and a task cancelled while queued is skipped by the
worker that takes its message (Dramatiq can't take a message off its queue). The
Retries middleware's retries show as the next attempt ("attempt 2 of 4"). No
result backend is needed.

The worker finds a message's job through :class:`LiveprogressMiddleware`, which
:func:`progress_actor` adds to the actor's broker; it also closes the worker
threads' old database connections after each message.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar
from datetime import timedelta
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

from django import db
from django.utils.functional import Promise
from dramatiq import Actor, Broker, Message, Retry, get_broker
from dramatiq.actor import actor as dramatiq_actor
from dramatiq.broker import MessageProxy
from dramatiq.common import compute_backoff
from dramatiq.middleware import Middleware, Retries, TimeLimitExceeded
from dramatiq.middleware.retries import DEFAULT_MAX_BACKOFF
from dramatiq.results import Results

from .. import bridge
from ..execution import Retrying
from ..handles import JobHandle
from ..progress import Progress
from .base import TaskJobs, job_id_of, params_of

__all__ = ["LiveprogressMiddleware", "ProgressActor", "current_message", "progress_actor"]

P = ParamSpec("P")
R = TypeVar("R")

_message: ContextVar[MessageProxy | None] = ContextVar(
    "liveprogress_dramatiq_message", default=None
)
# The message whose job runs in this thread: an actor its body calls directly is not
# that message's.
_running: ContextVar[MessageProxy | None] = ContextVar(
    "liveprogress_dramatiq_running", default=None
)


def current_message() -> MessageProxy | None:
    """The message this worker thread is processing (its ``options["retries"]`` counts
    the retries before this attempt), or None outside of one."""
    return _message.get()


class _TimeLimited(Exception):
    """Dramatiq's time limit cut the body off. Dramatiq raises it in the worker's
    thread as a ``BaseException`` (``TimeLimitExceeded``), as if the worker were
    stopping: the job is told it failed instead (or is retried), and Dramatiq gets
    its own exception back."""


class LiveprogressMiddleware(Middleware):
    """Keeps the message each worker thread processes (:func:`current_message`), and,
    as django-dramatiq's ``DbConnectionsMiddleware`` does, closes the threads' old
    database connections around each message and all of them when a thread stops."""

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        db.close_old_connections()
        _message.set(message)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        _message.set(None)
        db.close_old_connections()

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        _message.set(None)
        db.close_old_connections()

    def before_consumer_thread_shutdown(self, broker: Broker, thread: Any) -> None:
        db.connections.close_all()

    def before_worker_thread_shutdown(self, broker: Broker, thread: Any) -> None:
        db.connections.close_all()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        db.connections.close_all()


class ProgressActor(Actor[P, R | None], Generic[P, R]):
    """A Dramatiq actor whose sends each get a liveprogress job (made by
    :func:`progress_actor`). Its function takes the job's Progress first."""

    #: Who owns the jobs of sends that name no owner (``send``, ``send_with_options``).
    default_owner = "system:dramatiq"

    def __init__(
        self,
        fn: Callable[Concatenate[Progress, P], R],
        *,
        broker: Broker,
        actor_name: str,
        queue_name: str,
        priority: int,
        options: dict[str, Any],
        title: str | Promise | None = None,
    ) -> None:
        if not any(isinstance(each, LiveprogressMiddleware) for each in broker.middleware):
            broker.add_middleware(LiveprogressMiddleware())
        super().__init__(
            cast(Callable[P, R], fn),
            broker=broker,
            actor_name=actor_name,
            queue_name=queue_name,
            priority=priority,
            options=options,
        )
        # Dramatiq's ``fn`` (the function, or its sync wrapper), given the Progress first.
        self._body = cast(Callable[Concatenate[Progress, P], R], self.fn)
        #: This actor's kind and its jobs (``dramatiq:<actor name>``).
        self.jobs = TaskJobs("dramatiq", actor_name, fn, title=title)

    # -- sending -----------------------------------------------------------------------

    async def astart(self, owner: Any, /, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        """Send the actor a message for ``owner`` (a request, a user or an owner key)
        with these arguments; its job's handle. Dramatiq's options (``delay``, ...) go
        through :meth:`send_with_options` with ``liveprogress_owner=``."""

        def send(job_id: str) -> Message[R | None]:
            return self._enqueue(job_id, args, kwargs, None, {})

        sent = await self.jobs.asend(owner, send, params=params_of(args, kwargs))
        return sent.handle

    def start(self, owner: Any, /, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        """:meth:`astart` for sync code."""
        return bridge.call(lambda: self.astart(owner, *args, **kwargs))

    def send_with_options(
        self,
        *,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        delay: timedelta | int | None = None,
        liveprogress_owner: Any = None,
        **options: Any,
    ) -> Message[R | None]:
        """Dramatiq's send, making the message's job first (owned by
        ``liveprogress_owner``, else :attr:`default_owner`) with the message id as
        its id; ``send`` comes here too."""
        owner = self.default_owner if liveprogress_owner is None else liveprogress_owner

        def send(job_id: str) -> Message[R | None]:
            return self._enqueue(job_id, args, kwargs, delay, options)

        message: Message[R | None] = self.jobs.send(
            owner, send, params=params_of(args, kwargs)
        ).value
        return message

    def _enqueue(
        self,
        job_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        delay: timedelta | int | None,
        options: dict[str, Any],
    ) -> Message[R | None]:
        if isinstance(delay, timedelta):
            delay = int(delay.total_seconds() * 1000)
        message = self.message_with_options(args=args, kwargs=kwargs, **options)
        return self.broker.enqueue(message.copy(message_id=job_id), delay=delay)

    # -- running -------------------------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R | None:
        message = _message.get()
        if message is None or message.actor_name != self.actor_name or _running.get() is not None:
            # Called directly (a test, or another actor's body): nothing to report to.
            return self.jobs.run(None, lambda progress: self._body(progress, *args, **kwargs))

        def body(progress: Progress) -> R:
            try:
                return self._body(progress, *args, **kwargs)
            except TimeLimitExceeded as exc:
                raise _TimeLimited("Time limit exceeded") from exc

        token = _running.set(message)
        try:
            value = self.jobs.run(
                job_id_of(message.message_id),
                body,
                will_retry=functools.partial(self._will_retry, message),
            )
        except _TimeLimited as exc:
            # The job has ended (or is retried) as failed; Dramatiq's middleware reads
            # its own exception.
            raise cast(BaseException, exc.__cause__) from None
        finally:
            _running.reset(token)
        if message.options.get("pipe_target") is None and not any(
            isinstance(each, Results) for each in self.broker.middleware
        ):
            # The job keeps the value; Dramatiq would warn that it drops it.
            return None
        return value

    def _will_retry(self, message: MessageProxy, error: BaseException) -> Retrying | None:
        """Whether Dramatiq's Retries middleware retries the message after ``error``,
        read as the middleware reads it, and about when (its backoff is partly random)."""
        retries = next((each for each in self.broker.middleware if isinstance(each, Retries)), None)
        if retries is None:
            return None

        def option(name: str, default: Any) -> Any:
            # The message's option, else the actor's, else the middleware's.
            return message.options.get(name, self.options.get(name, default))

        if isinstance(error, _TimeLimited) and error.__cause__ is not None:
            error = error.__cause__
        throws = message.options.get("throws") or self.options.get("throws")
        if throws and isinstance(error, throws):
            return None
        done: int = message.options.get("retries", 0)
        retry_when = self.options.get("retry_when", retries.retry_when)
        most: int | None = option("max_retries", retries.max_retries)
        if retry_when is not None:
            if not retry_when(done, error):
                return None
            most = None
        elif most is not None:
            if done >= most:
                return None
            most += 1
        if isinstance(error, Retry) and error.delay is not None:
            delay_ms = float(error.delay)
        else:
            least = option("min_backoff", retries.min_backoff)
            longest = min(option("max_backoff", retries.max_backoff), DEFAULT_MAX_BACKOFF)
            # Dramatiq's backoff without its random part, which makes the wait up to
            # twice this (Dramatiq 2), or down to half of it (1.x).
            _, backoff = compute_backoff(done, factor=least, jitter=False, max_backoff=longest)
            delay_ms = float(backoff)
        return Retrying(delay=delay_ms / 1000, attempt=done + 2, max_attempts=most)


@overload
def progress_actor(fn: Callable[Concatenate[Progress, P], R], /) -> ProgressActor[P, R]: ...


@overload
def progress_actor(
    *,
    actor_name: str | None = None,
    queue_name: str = "default",
    priority: int = 0,
    broker: Broker | None = None,
    title: str | Promise | None = None,
    **options: Any,
) -> Callable[[Callable[Concatenate[Progress, P], R]], ProgressActor[P, R]]: ...


def progress_actor(
    fn: Callable[Concatenate[Progress, P], R] | None = None,
    /,
    *,
    actor_name: str | None = None,
    queue_name: str = "default",
    priority: int = 0,
    broker: Broker | None = None,
    title: str | Promise | None = None,
    **options: Any,
) -> ProgressActor[P, R] | Callable[[Callable[Concatenate[Progress, P], R]], ProgressActor[P, R]]:
    """``dramatiq.actor`` for a function taking the job's Progress first: the
    :class:`ProgressActor` of it, on ``broker`` (else the global broker, which must
    be set before). ``title``: the jobs' title (else the actor's name); the other
    options are Dramatiq's (``max_retries``, ``min_backoff``, ``time_limit``, ...)."""

    def decorator(function: Callable[Concatenate[Progress, P], R]) -> ProgressActor[P, R]:
        # dramatiq.actor checks the name and the options, and builds the actor.
        declare = dramatiq_actor(
            actor_class=functools.partial(ProgressActor, title=title),
            actor_name=actor_name,
            queue_name=queue_name,
            priority=priority,
            broker=broker or get_broker(),
            **options,
        )
        return cast(ProgressActor[P, R], declare(cast(Callable[..., R], function)))

    return decorator if fn is None else decorator(fn)
