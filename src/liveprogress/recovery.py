"""Ending jobs whose process died, truthfully: they end `interrupted`.

Two ways to know a process died: its heartbeat is older than ``STALE_AFTER``
(any host), or, at a process's start-up, it ran on this host and its pid is gone
or reused. Both end the job with a conditional write, so a job that ends on its
own at the same moment keeps its own ending.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from . import conf
from .cascade import end_children
from .models import ACTIVE_STATUSES, Job
from .publish import ENDED_MESSAGE, control, publish, publish_log
from .registry import JobKind, kinds
from .signals import send_finished, send_retried

if TYPE_CHECKING:
    from .runners import Dispatcher, InProcessRunner

logger = logging.getLogger(__name__)


def worker_id(boot: str) -> str:
    """``host:pid:boot``: names this process among all runs of all hosts."""
    return f"{socket.gethostname()}:{os.getpid()}:{boot}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dead_on_this_host(worker: str, alive: set[str]) -> bool:
    """True if ``worker`` ran on this host and is gone: its pid is, or it was a
    runtime of this very process that is no longer among the ``alive`` ones."""
    host, _, rest = worker.partition(":")
    pid_text, _, _boot = rest.partition(":")
    if host != socket.gethostname() or worker in alive or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    return pid == os.getpid() or not _pid_alive(pid)


async def _interrupt(job: Job, reason: str, runner: InProcessRunner | None) -> bool:
    ended = await Job.objects.interrupt(job, reason)
    if ended:
        job = await Job.objects.aget(pk=job.pk)
        logger.warning("job interrupted job=%s worker=%s reason=%r", job.id, job.worker, reason)
        await _stop_where_it_runs(job.pk, job.worker, runner)
        await publish(job)
        await send_finished(job)
        await end_children(job)
    return ended


async def _stop_where_it_runs(job_id: Any, worker: str, runner: InProcessRunner | None) -> None:
    """A job just ended or re-queued for a process that looked dead may still run
    there (a stalled loop misses heartbeats): stop it, so nothing of it is published
    after the state that ended it. Here at once; elsewhere by broadcast."""
    execution = runner.executions.get(str(job_id)) if runner is not None else None
    if execution is not None and runner is not None and runner.worker == worker:
        await execution.stop_as_ended_elsewhere()
    else:
        await control(ENDED_MESSAGE, str(job_id), worker)


async def _requeue(job: Job, reason: str, kind: JobKind, runner: InProcessRunner | None) -> bool:
    """Queue a job that may run twice again, to start from the beginning: at once for
    a kind that is only ``retryable``, after its backoff for one with
    ``max_attempts`` (a dispatch loop hands it over then)."""
    dead_worker = job.worker
    delay = kind.operations.retry_delay(job.attempts) if kind.operations.max_attempts > 1 else 0
    due = timezone.now() + timedelta(seconds=delay) if delay else None
    logged = await Job.objects.requeue(job, reason, due)
    if logged is not None:
        logger.warning("job re-queued job=%s reason=%r", job.id, reason)
        await _stop_where_it_runs(job.pk, dead_worker, runner)
        await publish(job)
        await publish_log(job, [logged])
        await send_retried(job, attempt=job.attempts + 1, delay=delay or None, error=reason)
    return logged is not None


async def _end(
    job: Job, reason: str, dispatcher: Dispatcher | None, runner: InProcessRunner | None
) -> bool:
    """Interrupt the job of a dead process, or re-queue it if its kind allows."""
    kind = kinds().get(job.kind)
    if (
        kind is not None
        and kind.restarts_after_crash()
        and job.attempts < kind.attempts_allowed(conf.get("MAX_ATTEMPTS"))
        and not job.cancel_requested
    ):
        if dispatcher is None:
            return False  # left to a process that can start it again
        return await _requeue(job, f"{reason}; starting again", kind, runner)
    return await _interrupt(job, reason, runner)


async def recover_dead_processes(
    me: str,
    dispatcher: Dispatcher | None = None,
    runner: InProcessRunner | None = None,
    *,
    alive: set[str] | frozenset[str] = frozenset(),
) -> int:
    """At start-up: end the jobs of processes on this host that are gone (``me`` and
    the ``alive`` runtimes of this process are not)."""
    count = 0
    host_prefix = socket.gethostname() + ":"
    candidates = Job.objects.filter(status__in=ACTIVE_STATUSES, worker__startswith=host_prefix)
    async for job in candidates:
        if _dead_on_this_host(job.worker, {me, *alive}):
            count += await _end(job, "The process running this job stopped", dispatcher, runner)
    return count


async def sweep_stale(
    dispatcher: Dispatcher | None = None, runner: InProcessRunner | None = None
) -> int:
    """End (or re-queue) every job whose process stopped sending heartbeats.

    Without a ``dispatcher`` (an observer such as ``watchjob``), retryable jobs
    are left for a server or worker to start again.
    """
    cutoff = timezone.now() - timedelta(seconds=conf.get("STALE_AFTER"))
    count = 0
    stale = Job.objects.filter(status__in=ACTIVE_STATUSES, heartbeat_at__lt=cutoff).exclude(
        worker=""
    )
    async for job in stale:
        reason = "The process running this job stopped answering"
        count += await _end(job, reason, dispatcher, runner)
    return count
