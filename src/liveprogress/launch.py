"""Starting a job: validated, within the caps, saved, published, dispatched.

The engine's side of a start, shared by the client-facing ``actions`` (a start
from a request, the CLI or the site's code) and a running job that spawns a
child. It takes the runtime as a parameter instead of importing it: the runtime
uses it too, for its jobs' children.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from django.db.models import Count, Q
from django.utils import timezone

from . import conf, history, tracing
from .eta import before_start
from .exceptions import AlreadyRunning, LimitReached
from .models import ACTIVE_STATUSES, Job, Status
from .owner import is_anonymous
from .publish import publish
from .queueing import active_duplicate, insert
from .registry import JobKind, kinds
from .runners import Dispatcher
from .signals import send_finished

logger = logging.getLogger(__name__)


class Launcher(Protocol):
    """What a start needs of the process's runtime."""

    #: Serialises cap checks and job creation in this process.
    admission: asyncio.Lock
    #: Gets a new job running, per RUNNER.
    dispatcher: Dispatcher

    def wake_dispatch(self) -> None:
        """Ask the dispatch loop for a round soon (a job waits, or a slot freed)."""


def new_job(
    owner: str,
    kind: JobKind,
    params: Any,
    *,
    language: str = "",
    from_strings: bool = False,
    parent: Job | None = None,
    address: str = "",
    run_after: datetime | None = None,
) -> Job:
    """A job of ``kind`` for ``owner`` with its params validated (``BadRequest`` if
    they are not), not saved yet; ``parent`` makes it that job's child. ``address``:
    the client's, kept for a visitor who is not signed in (their per-address cap).
    ``run_after``: it waits `queued` until then."""
    clean = kind.validate({} if params is None else params, from_strings=from_strings)
    most = kind.attempts_allowed(conf.get("MAX_ATTEMPTS"))
    return Job(
        kind=kind.name,
        params=clean,
        owner=owner,
        language=language,
        seq=1,
        parent=parent,
        address=address if is_anonymous(owner) else "",
        run_after=run_after,
        unique_key=kind.unique_key(owner, clean),
        max_attempts=most if most > 1 else None,
        # The request's trace, if any: the job's span is its child (tracing.py).
        trace_context=tracing.capture(),
    )


async def launch(runtime: Launcher, job: Job, *, capped: bool = True) -> Job:
    """Check the caps, save, publish and dispatch a :func:`new_job`; returns it live.

    ``LimitReached`` if its owner, or the server, runs as many jobs as allowed. A
    job the queue refuses ends `failed`, saying why. Not ``capped``: another
    engine's task sent by the site's code, which that engine admits (its jobs run
    in its workers, not here). A job that must wait (its start time, a slot) is
    saved `queued` and left to the dispatch loop. A unique kind's duplicate is not
    saved: its owner gets the active job back (``existing`` set), anyone else
    ``AlreadyRunning``.
    """
    kind = kinds()[job.kind]
    await _expect(job)
    try:
        async with runtime.admission:
            if job.unique_key:
                duplicate = await sync_to_async(active_duplicate, thread_sensitive=True)(job)
                if duplicate is not None:
                    raise AlreadyRunning(duplicate)
            if capped:
                await _admit(job)
            handed_over = await insert(job, kind, runtime.dispatcher.prepare)
    except AlreadyRunning as duplicate:
        if duplicate.job.owner != job.owner:
            raise
        existing: Job = duplicate.job
        existing.existing = True
        return existing
    await publish(job)
    if not handed_over:
        runtime.wake_dispatch()
        return job
    await dispatch(runtime.dispatcher, job)
    return job


async def _expect(job: Job) -> None:
    """Give the new job the ETA its kind's past runs give it (queued, it says how long
    it should run); a database that fails here leaves it without one."""
    try:
        expected = before_start(await history.of_kind(job.kind))
    except Exception:
        logger.warning("past runs not read kind=%s", job.kind, exc_info=True)
        return
    job.eta_s, job.eta_source = expected.eta_s, expected.source


async def dispatch(dispatcher: Dispatcher, job: Job) -> None:
    """Get a job that was handed over running; one the queue refuses ends `failed`,
    saying why."""
    try:
        await dispatcher.dispatch(job)
    except Exception as exc:
        logger.exception("dispatch failed job=%s", job.id)
        await end_unclaimed(job, Status.FAILED, f"The job could not be queued: {exc}")


async def _admit(job: Job) -> None:
    """The caps: its owner's, the server's (jobs of other engines run in their workers
    and don't count there), and those of visitors who are not signed in."""
    anonymous = Q(owner__startswith="session:")
    elsewhere = [name for name, kind in kinds().items() if kind.engine]
    counts = await Job.objects.filter(status__in=ACTIVE_STATUSES).aaggregate(
        mine=Count("id", filter=Q(owner=job.owner)),
        total=Count("id", filter=~Q(kind__in=elsewhere)),
        anonymous=Count("id", filter=anonymous),
        from_address=Count("id", filter=anonymous & Q(address=job.address)),
    )
    per_owner = conf.get("MAX_ACTIVE_PER_OWNER")
    if counts["mine"] >= per_owner:
        raise LimitReached(
            f"You already have {per_owner} jobs queued or running, the most allowed; "
            "wait for one to end or cancel one"
        )
    total = conf.get("MAX_ACTIVE_TOTAL")
    if counts["total"] >= total:
        raise LimitReached("The server is running as many jobs as it may; try again soon")
    if is_anonymous(job.owner):
        _admit_anonymous(job, counts, total)


def _admit_anonymous(job: Job, counts: dict[str, int], total: int) -> None:
    """The caps of visitors who are not signed in, beyond their session's: one
    client can't mint sessions to take the server (the rest stays for signed-in
    users), nor all visitors together take more than their share."""
    per_address = conf.get("MAX_ACTIVE_PER_ADDRESS")
    if job.address and counts["from_address"] >= per_address:
        raise LimitReached(
            f"Visitors at your address already have {per_address} jobs queued or running, "
            "the most allowed without signing in; wait for one to end"
        )
    if counts["anonymous"] >= int(total * conf.get("ANONYMOUS_SHARE")):
        raise LimitReached(
            "The server is running as many jobs for visitors who are not signed in as it "
            "may; sign in, or try again soon"
        )


async def fail_unrunnable(job: Job, reason: str) -> Job:
    """Save a :func:`new_job` that nothing here can run, ended `failed` with
    ``reason`` as its error, and publish it."""
    logger.error("job not run job=%s kind=%s: %s", job.id, job.kind, reason)
    job.status, job.error = Status.FAILED, reason
    job.finished_at = job.updated_at = timezone.now()
    await job.asave(force_insert=True)
    await publish(job)
    await send_finished(job)
    return job


async def end_unclaimed(job: Job, status: Status, error: str) -> bool:
    """End a queued job that no process has claimed, and publish it; False if one
    has (that process ends it)."""
    ended = await Job.objects.end_unclaimed(job.pk, status, error)
    if ended:
        await job.arefresh_from_db()
        await publish(job)
        await send_finished(job)
    return ended
