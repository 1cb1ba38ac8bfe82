"""``@job``: what a job kind's definition is, and how the site's code starts one.

``@job("reports.monthly")`` registers the function and returns a
:class:`JobDefinition`: ``monthly.start(request, month=3)`` (sync) or
``await monthly.astart(request, month=3)`` start a job and return its
:class:`~liveprogress.handles.JobHandle`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.functional import Promise

from . import actions, bridge
from .handles import JobHandle
from .owner import as_request, astarter_of
from .registry import JobFunction, JobKind, register
from .runners import unrunnable_reason

#: ``.start(owner, notify=True, **params)`` takes it: no kind's parameter may share it.
RESERVED_START_PARAMETER = "notify"


class JobDefinition:
    """A registered job kind, as the site's code holds it.

    Calling it calls the function itself (a plain call, no job: handy in unit
    tests); :meth:`start` and :meth:`astart` start a job of this kind.
    """

    def __init__(self, kind: JobKind) -> None:
        self.kind = kind
        self.__doc__ = kind.function.__doc__
        self.__wrapped__ = kind.function

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
        return await astart_kind(owner, self.name, params, email=notify)

    def start(self, owner: Any, /, *, notify: bool = False, **params: Any) -> JobHandle:
        """:meth:`astart` for sync code (a sync view, a management command).

        Where no ASGI server runs (a management command, a shell), the job runs
        in this process: call ``handle.wait()`` before the process exits.
        """
        return bridge.call(lambda: self.astart(owner, notify=notify, **params))


async def astart_kind(
    owner: Any, kind: Any, params: Any, *, public_only: bool = False, email: bool = False
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
        email=email,
    )
    return JobHandle.of(job)


def job(
    name: str,
    *,
    title: str | Promise | None = None,
    retryable: bool = False,
    public: bool = True,
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
    """

    def decorate(function: JobFunction) -> JobDefinition:
        if RESERVED_START_PARAMETER in list(inspect.signature(function).parameters)[1:]:
            raise ImproperlyConfigured(
                f"Job {name!r}: a parameter may not be called {RESERVED_START_PARAMETER!r}: "
                f".start() takes {RESERVED_START_PARAMETER}= for itself; rename it"
            )
        return JobDefinition(
            register(name, function, title=title, retryable=retryable, public=public)
        )

    return decorate
