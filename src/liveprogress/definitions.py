"""``@job``: what a job kind's definition is, and how the site's code starts one.

``@job("reports.monthly")`` registers the function and returns a
:class:`JobDefinition`: ``monthly.start(request, month=3)`` (sync) or
``await monthly.astart(request, month=3)`` start a job and return its
:class:`~liveprogress.handles.JobHandle`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.functional import Promise

from . import actions, bridge
from .handles import JobHandle
from .owner import as_request, astarter_of
from .queueing import start_time
from .registry import Backoff, JobFunction, JobKind, UniqueScope, operations_of, register
from .runners import unrunnable_reason

#: ``.start(owner, notify=True, **params)`` takes it: no kind's parameter may share it.
RESERVED_START_PARAMETER = "notify"


class JobDefinition:
    """A registered job kind, as the site's code holds it.

    Calling it calls the function itself (a plain call, no job: handy in unit
    tests); :meth:`start` and :meth:`astart` start a job of this kind.
    """

    def __init__(self, kind: JobKind, *, run_after: datetime | None = None) -> None:
        self.kind = kind
        #: When jobs started through this definition may start (see :meth:`using`).
        self.run_after = run_after
        self.__doc__ = kind.function.__doc__
        self.__wrapped__ = kind.function

    def using(self, *, run_after: datetime | timedelta | float | None = None) -> JobDefinition:
        """This kind with start options, as Django's Tasks ``Task.using`` gives them:
        ``monthly.using(run_after=timedelta(hours=1)).start(request, month=3)``.

        ``run_after``: the job stays `queued` until then (an aware datetime, a
        timedelta or seconds from now), survives restarts meanwhile, and can be
        cancelled before it starts.
        """
        return JobDefinition(self.kind, run_after=start_time(run_after))

    @property
    def name(self) -> str:
        return self.kind.name

    def __repr__(self) -> str:
        return f"<JobDefinition {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.kind.function(*args, **kwargs)

    async def astart(self, owner: Any, /, *, notify: bool = False, **params: Any) -> JobHandle:
        """Start a job of this kind for ``owner`` and return its handle.

        ``owner``: a request (its logged-in user, else its session, created when
        needed; a REST framework request's user is the one its authentication
        found), a user, or an owner key such as ``"system:nightly"``. ``params``
        are validated against the function's signature (``BadRequest`` if not).
        The per-owner and total caps apply as to any start (``LimitReached``).
        ``notify``: email the owner, a signed-in user with an address, when the
        job ends (``Forbidden`` for anyone else; see docs/notices.md).
        """
        return await astart_kind(owner, self.name, params, run_after=self.run_after, email=notify)

    def start(self, owner: Any, /, *, notify: bool = False, **params: Any) -> JobHandle:
        """:meth:`astart` for sync code (a sync view, a management command).

        Where no ASGI server runs (a management command, a shell), the job runs
        in this process: call ``handle.wait()`` before the process exits.
        """
        return bridge.call(lambda: self.astart(owner, notify=notify, **params))


async def astart_kind(
    owner: Any,
    kind: Any,
    params: Any,
    *,
    public_only: bool = False,
    run_after: datetime | None = None,
    email: bool = False,
) -> JobHandle:
    """Start a job of the kind named ``kind`` for ``owner``, as
    :meth:`JobDefinition.astart` does. With ``public_only`` (a client named the
    kind) a kind clients may not start is refused as unknown."""
    starter = await astarter_of(owner)
    job = await actions.start_job(
        starter.owner,
        kind,
        params,
        language=starter.language,
        internal=not public_only,
        unrunnable=unrunnable_reason(as_request(owner) or owner),
        address=starter.address,
        run_after=run_after,
        email=email,
    )
    return JobHandle.of(job)


def job(
    name: str,
    *,
    title: str | Promise | None = None,
    retryable: bool = False,
    public: bool = True,
    max_attempts: int = 1,
    retry_on: type[BaseException] | Sequence[type[BaseException]] = (Exception,),
    backoff: float | Backoff = 2.0,
    backoff_max: float = 300.0,
    timeout: float | None = None,
    concurrency: int | None = None,
    unique: bool | str | Sequence[str] = False,
    unique_scope: UniqueScope = "owner",
) -> Callable[[JobFunction], JobDefinition]:
    """Register a function as the job kind ``name``; returns its :class:`JobDefinition`.

    The function takes a :class:`~liveprogress.progress.Progress` first, then its
    parameters by name; their annotations (``Annotated[int, Field(ge=1)]`` for
    bounds) and defaults are what a start may pass. It may be sync (run in a
    thread) or async (run on the server's event loop); what it returns,
    JSON-ready, is the job's result. A ``retryable`` job whose process dies is
    started again from the beginning (so it must be safe to run twice) instead
    of ending `interrupted`. A kind with ``public=False`` is refused to clients
    (the API, the socket, the CLI) as an unknown kind and started only by the
    site's own code (``.start``), e.g. a view that checked an upload first.

    In production (docs/jobs.md says each in full):

    - ``max_attempts``: attempts in all; an attempt that raises one of ``retry_on``
      (default: any exception), or whose process died, is retried after ``backoff``
      seconds, doubled each time up to ``backoff_max`` (or ``backoff(n)`` for a
      function), `queued` meanwhile with the time it is due.
    - ``timeout``: seconds an attempt may run; past it the job ends `failed`, saying
      so (an async function at once, a sync one at its next progress call).
    - ``concurrency``: jobs of this kind that run at once across every process; the
      rest wait `queued`, with their place in line.
    - ``unique``: one active job per key (``True``: every param; a name or names:
      those params), among each owner's jobs or, with ``unique_scope="site"``, the
      site's; starting a duplicate returns the active job instead.
    """
    operations = operations_of(
        max_attempts=max_attempts,
        retry_on=retry_on,
        backoff=backoff,
        backoff_max=backoff_max,
        timeout=timeout,
        concurrency=concurrency,
        unique=unique,
        unique_scope=unique_scope,
    )

    def decorate(function: JobFunction) -> JobDefinition:
        if RESERVED_START_PARAMETER in list(inspect.signature(function).parameters)[1:]:
            raise ImproperlyConfigured(
                f"Job {name!r}: a parameter may not be called {RESERVED_START_PARAMETER!r}: "
                f".start() takes {RESERVED_START_PARAMETER}= for itself; rename it"
            )
        return JobDefinition(
            register(
                name,
                function,
                title=title,
                retryable=retryable,
                public=public,
                operations=operations,
            )
        )

    return decorate
