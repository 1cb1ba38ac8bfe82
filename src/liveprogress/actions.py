"""What a client can do to jobs, shared by the WebSocket, the HTTP API and the CLI.

Every function takes the caller's owner key and answers a job that is not the
caller's exactly like one that does not exist.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import QuerySet
from django.utils import translation
from django.utils.translation import gettext

from . import conf, emails
from .cascade import end_children
from .exceptions import BadRequest, Forbidden, JobNotFound
from .launch import end_unclaimed, fail_unrunnable, launch, new_job
from .models import ACTIVE_STATUSES, Job, JobLog, Status
from .publish import CANCEL_MESSAGE, PAUSE_MESSAGE, control, publish
from .registry import get_kind, kinds
from .runtime import get_runtime

logger = logging.getLogger(__name__)


def require_owner(owner: str | None) -> str:
    if not owner:
        raise Forbidden("No session: load a page of this site first, then connect")
    return owner


def parse_job_id(value: Any, field: str = "job") -> str:
    """The canonical text of a job id, or a ``BadRequest`` naming the field."""
    if isinstance(value, str) and len(value) <= 64:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    raise BadRequest(f"{field} must be a job id (a UUID)", field=field)


async def start_job(
    owner: str,
    kind: Any,
    params: Any = None,
    *,
    language: str = "",
    from_strings: bool = False,
    internal: bool = False,
    parent: Job | None = None,
    unrunnable: str = "",
    address: str = "",
    run_after: datetime | None = None,
    email: bool = False,
) -> Job:
    """Validate, check the caps, create and start a job; returns it live.

    Only ``internal`` starts (the site's own code, a parent job) may start kinds
    that are not public; ``parent`` makes the new job a child of that one. A job
    ``unrunnable`` (nothing here can run it) is created and ends `failed` at once,
    with that reason as its error. ``address``: the client's (caps visitors who are
    not signed in per address). ``run_after``: it waits `queued` until then. A
    unique kind's duplicate returns the caller's active job (``existing`` set on it).
    ``email``: its owner is emailed when it ends (``Forbidden`` if they can't be:
    not signed in, no address).
    """
    job_kind = get_kind(kind, public_only=not (internal or parent is not None))
    job = new_job(
        owner,
        job_kind,
        params,
        language=language,
        from_strings=from_strings,
        parent=parent,
        address=address,
        run_after=run_after,
    )
    if emails.wanted(email):
        job.notify_email = await emails.owner_address(owner)
    if unrunnable:
        # No runtime is started for it: here, it would not outlive the request.
        return await fail_unrunnable(job, unrunnable)
    return await launch(await get_runtime(), job)


async def get_job(owner: str, job_id: str) -> Job:
    """The caller's job as it is now: live from this process while it runs here,
    with no query (the database lags the live state by up to the window, and every
    subscribe, poll and cancel of a running job asks for it), else from the database."""
    runtime = await get_runtime()
    execution = runtime.runner.executions.get(job_id)
    if (
        execution is not None
        and execution.job.owner == owner
        and execution.job.is_active
        and not execution.ended_elsewhere
    ):
        return execution.job
    job = await Job.objects.filter(pk=job_id, owner=owner).afirst()
    if job is None:
        raise JobNotFound("No such job", field="job")
    return job


async def cancel_job(owner: str, job_id: str, *, by: str = "owner") -> Job:
    """Cancel the caller's job: ended at once if nobody runs it yet, else asked to stop.
    A job that has ended stays as it is; children it left running are stopped.
    ``by``: who cancels, recorded on the job with when ("owner", or "staff:<pk>"
    for a staff member; the first cancel's record stays)."""
    job = await get_job(owner, job_id)
    if not job.is_active:
        await end_children(job)
        return job
    await Job.objects.record_cancel(job_id, by)
    await _cancel_children(job, by)
    runtime = await get_runtime()
    execution = runtime.runner.executions.get(job_id)
    if execution is not None:
        return await execution.cancel()
    # Elsewhere: the flag is the truth (read at every heartbeat), the broadcast is
    # the fast path; a job no worker has claimed yet ends here and now.
    await Job.objects.request_cancel(job_id)
    job = await Job.objects.aget(pk=job_id)
    if await end_unclaimed(job, Status.CANCELLED, ""):
        await _revoke(job)
    else:
        await control(CANCEL_MESSAGE, job_id)
        job = await Job.objects.aget(pk=job_id)
    return job


async def pause_job(owner: str, job_id: str) -> Job:
    """Pause the caller's job: at once if nobody runs it yet, else at its next
    checkpoint (where it runs). A job paused or ended stays as it is."""
    job = await get_job(owner, job_id)
    if job.status not in (Status.QUEUED, Status.RUNNING):
        return job
    kind = kinds().get(job.kind)
    if kind is None or kind.engine:
        raise BadRequest(
            "Only jobs liveprogress runs can pause (another engine's task can't)", field="job"
        )
    runtime = await get_runtime()
    execution = runtime.runner.executions.get(job_id)
    if execution is not None:
        return await execution.pause()
    await Job.objects.request_pause(job_id)
    with translation.override(job.language or settings.LANGUAGE_CODE):
        paused_message = gettext("Paused")
    if await Job.objects.park(job_id, paused_message):
        job = await Job.objects.aget(pk=job_id)
        await publish(job)
        return job
    # Running elsewhere: the flag is the truth (read at every heartbeat), the
    # broadcast the fast path.
    await control(PAUSE_MESSAGE, job_id)
    return await Job.objects.aget(pk=job_id)


async def resume_job(owner: str, job_id: str) -> Job:
    """Resume the caller's paused job: queued again, it goes on from its checkpoint
    in whichever process hands it over first. A job not paused stays as it is."""
    job = await get_job(owner, job_id)
    with translation.override(job.language or settings.LANGUAGE_CODE):
        message = gettext("Resuming")
    if await Job.objects.resume(job_id, message):
        job = await Job.objects.aget(pk=job_id)
        await publish(job)
        (await get_runtime()).wake_dispatch()
    return job


async def ask_email(owner: str, job_id: str, email: Any) -> bool:
    """Email the caller when their job ends (``email`` true), or no longer; the choice
    now. ``Forbidden`` if they can't be emailed; ``BadRequest`` once it has ended."""
    job = await get_job(owner, job_id)
    want = emails.wanted(email)
    address = await emails.owner_address(owner) if want else ""
    if not job.is_active or not await Job.objects.ask_email(job_id, owner, address):
        raise BadRequest("The job has ended: its notices are already decided", field="job")
    return want


async def emailed(owner: str, job_id: str) -> bool:
    """Whether the caller's job emails them when it ends, as its row says (the state
    a running process holds doesn't carry it)."""
    found = Job.objects.filter(pk=job_id, owner=owner).values_list("notify_email", flat=True)
    address = await found.afirst()
    if address is None:
        raise JobNotFound("No such job", field="job")
    return bool(address)


async def emailing_jobs(owner: str) -> list[str]:
    """The ids of the caller's active jobs that will email them when they end."""
    found = owner_jobs(owner, active_only=True).exclude(notify_email="")
    return [str(job_id) async for job_id in found.values_list("pk", flat=True)]


async def _revoke(job: Job) -> None:
    """Take a cancelled, still queued task of another engine off that engine's queue,
    where the engine can. Only tidiness: its worker's claim fails in any case, so
    the task never runs."""
    kind = kinds().get(job.kind)
    if kind is None or kind.revoke is None:
        return
    try:
        await sync_to_async(kind.revoke, thread_sensitive=False)(str(job.id))
    except Exception:
        logger.warning("revoke failed job=%s kind=%s", job.id, job.kind, exc_info=True)


async def _cancel_children(job: Job, by: str) -> None:
    """Cancelling a job cancels the children it started (theirs too)."""
    children = Job.objects.filter(parent_id=job.pk, status__in=ACTIVE_STATUSES)
    async for child_id in children.values_list("pk", flat=True):
        await cancel_job(job.owner, str(child_id), by=by)


async def log_lines(job: Job, after: int) -> tuple[list[dict[str, Any]], int]:
    """The caller's job's stored log lines after seq ``after`` (at most LOG_LIMIT),
    and the seq through which older lines were dropped (0 when none it lacks)."""
    stored = JobLog.objects.filter(job_id=job.pk, seq__gt=after).order_by("seq")
    lines = [
        {"seq": line.seq, "level": line.level, "text": line.text, "at": line.created_at.timestamp()}
        async for line in stored[: conf.get("LOG_LIMIT")]
    ]
    return lines, job.log_dropped if job.log_dropped > after else 0


def owner_jobs(owner: str, *, active_only: bool = False) -> QuerySet[Job]:
    """The caller's jobs, newest first, as stored: a query to slice or paginate,
    then to bring up to date with :func:`live_jobs`."""
    jobs = Job.objects.filter(owner=owner)
    if active_only:
        jobs = jobs.filter(status__in=ACTIVE_STATUSES)
    return jobs.order_by("-created_at")


async def live_jobs(jobs: Iterable[Job]) -> list[Job]:
    """``jobs`` as they are now: live where they run in this process."""
    runtime = await get_runtime()
    return [runtime.runner.newest(job) for job in jobs]


async def list_jobs(owner: str, *, limit: int, active_only: bool = False) -> list[Job]:
    """The caller's jobs, newest first, live where they run in this process."""
    # The runtime first: its start settles the jobs a dead process left running.
    await get_runtime()
    found = owner_jobs(owner, active_only=active_only)[:limit]
    return await live_jobs([job async for job in found])
