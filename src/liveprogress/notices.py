"""Notices beyond the tab: what a job's events owe (an email, webhook calls), and
the courier that sends them.

The process that writes an event (the signals in ``signals.py``) makes its
notices as rows, one per job, event and target (a constraint: never two). Every
runtime's courier claims the rows that are due with a conditional write, so two
processes never send one at once, and sends each in a thread of its own: a
receiver that hangs holds its own try only. A try that fails is due again after
``NOTICE_BACKOFF`` seconds, doubled each time, until ``NOTICE_ATTEMPTS``; a process
that dies mid-try leaves a lease that runs out, and the notice is tried again.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

from asgiref.sync import sync_to_async

from . import conf, emails, webhooks
from .models import Job, Notice, NoticeChannel
from .owner import display_owner
from .signals import job_finished, job_retried, job_started
from .state import job_state

logger = logging.getLogger(__name__)

#: Notices one process sends at once (each holds a thread while it waits).
IN_FLIGHT = 8
#: The longest wait between two tries of a notice, in seconds.
BACKOFF_MAX = 6 * 3600
#: A claim outlives the try it is for by this much (seconds), so a slow try is
#: never claimed again while it still runs.
_LEASE_MARGIN = 60.0
#: How long an email's try is given before its lease runs out (the email backend's
#: own timeout, EMAIL_TIMEOUT or its mailer's, should be shorter: docs/notices.md).
EMAIL_LEASE = 300.0
#: How much of a failure is kept on the notice.
_ERROR_KEPT = 1000


def connect() -> None:
    """Make notices of every job's events (``LiveProgressConfig.ready`` calls this)."""
    job_started.connect(_started, sender=Job, dispatch_uid="liveprogress.notices.started")
    job_retried.connect(_retried, sender=Job, dispatch_uid="liveprogress.notices.retried")
    job_finished.connect(_finished, sender=Job, dispatch_uid="liveprogress.notices.finished")


async def _started(sender: Any, job: Job, **details: Any) -> None:
    await _make(_webhook_notices(job, "started", job.attempts))


async def _retried(sender: Any, job: Job, *, attempt: int, **details: Any) -> None:
    await _make(_webhook_notices(job, "retried", attempt))


async def _finished(sender: Any, job: Job, **details: Any) -> None:
    made = _webhook_notices(job, "finished", 0)
    # Only a signed-in user may have asked: no query for anyone else's job.
    if conf.get("EMAIL_NOTICES") and job.owner.startswith("user:"):
        # The address as the row holds it now, not as this process read the job: its
        # owner may have asked since (a conditional write on the active job, so it
        # came before the ending this signal follows).
        address = (
            await Job.objects.filter(pk=job.pk).values_list("notify_email", flat=True).afirst()
        )
        if address:
            made.append(
                Notice(job_id=job.pk, channel=NoticeChannel.EMAIL, event="finished", target=address)
            )
    await _make(made)


def payload(job: Job, event: str) -> dict[str, Any]:
    """What a webhook is sent: the event, the job's wire state then, and its owner
    (a session as its digest: its key is a live cookie)."""
    return {"event": f"job.{event}", "owner": display_owner(job.owner), "job": job_state(job)}


def _webhook_notices(job: Job, event: str, attempt: int) -> list[Notice]:
    hooks = webhooks.webhooks_for(job.kind, event)
    if not hooks:
        return []
    body = payload(job, event)
    return [
        Notice(
            job_id=job.pk,
            channel=NoticeChannel.WEBHOOK,
            event=event,
            attempt=attempt,
            target=hook.url,
            payload=body,
        )
        for hook in hooks
    ]


async def _make(notices: list[Notice]) -> None:
    if not notices:
        return
    await Notice.objects.abulk_create(notices, ignore_conflicts=True)
    # Sent from here at once, when this loop has a courier; else by the next look of
    # any process's.
    courier = _couriers.get(asyncio.get_running_loop())
    if courier is not None:
        courier.look_now()


def backoff(tries: int) -> float | None:
    """Seconds until the next try after ``tries`` failed ones; None: give up."""
    if tries >= conf.get("NOTICE_ATTEMPTS"):
        return None
    return float(min(conf.get("NOTICE_BACKOFF") * 2 ** (tries - 1), BACKOFF_MAX))


def lease(channel: str) -> float:
    """How long a try on ``channel`` may take before another process may claim it."""
    if channel == NoticeChannel.WEBHOOK:
        return conf.get("WEBHOOK_TIMEOUT") + _LEASE_MARGIN
    return EMAIL_LEASE + _LEASE_MARGIN


class GiveUp(Exception):
    """A notice no later try can send (its webhook is configured no more)."""


def send(notice: Notice) -> None:
    """One try of ``notice`` (claimed, its job loaded); raises if it failed.
    Blocking: the courier runs it in a thread."""
    job = notice.job
    if notice.channel == NoticeChannel.EMAIL:
        emails.message(job, notice.target).send()
        return
    secret = webhooks.secret_for(job.kind, notice.target)
    if secret is None:
        raise GiveUp(f"no webhook at this URL for {job.kind!r} in WEBHOOKS any more")
    webhooks.post(
        notice.target, secret, notice.payload, str(notice.pk), conf.get("WEBHOOK_TIMEOUT")
    )


# The courier of each running loop's runtime, for the notices made on that loop.
_couriers: dict[asyncio.AbstractEventLoop, Courier] = {}


class Courier:
    """Sends this process's share of the notices due: a runtime looks every
    ``NOTICE_INTERVAL``, and at once after it made some."""

    def __init__(self, worker: str, loop: asyncio.AbstractEventLoop) -> None:
        self.worker = worker
        self.loop = loop
        self._looks: set[asyncio.Task[None]] = set()
        self._sending: set[asyncio.Task[None]] = set()
        _couriers[loop] = self

    def look_now(self) -> None:
        self._track(self._looks, self.deliver_due())

    def _track(self, tasks: set[asyncio.Task[None]], work: Any) -> None:
        task = self.loop.create_task(work, context=contextvars.Context())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def deliver_due(self) -> None:
        """Claim the notices due, as many as there are free places, and send each
        in a task of its own."""
        free = IN_FLIGHT - len(self._sending)
        if free <= 0:
            return
        due = Notice.objects.due().order_by("due_at").values_list("pk", "channel")
        async for notice_id, channel in due[:free]:
            notice = await Notice.objects.claim(notice_id, self.worker, lease(channel))
            if notice is not None:
                self._track(self._sending, self._send(notice))

    async def _send(self, notice: Notice) -> None:
        try:
            try:
                await sync_to_async(send, thread_sensitive=False)(notice)
            except Exception as error:
                await self._failed(notice, error)
            else:
                await Notice.objects.delivered(notice)
                logger.info(
                    "notice delivered notice=%s job=%s channel=%s event=%s try=%d",
                    notice.pk,
                    notice.job_id,
                    notice.channel,
                    notice.event,
                    notice.tries,
                )
        except Exception:
            # The database was away: the lease runs out and the notice is tried again.
            logger.warning("notice not settled notice=%s", notice.pk, exc_info=True)

    async def _failed(self, notice: Notice, error: Exception) -> None:
        retry_in = None if isinstance(error, GiveUp) else backoff(notice.tries)
        text = str(error) or type(error).__name__
        expected = isinstance(error, webhooks.WebhookFailed | GiveUp)
        await Notice.objects.failed(notice, text[:_ERROR_KEPT], retry_in)
        logger.log(
            logging.WARNING if retry_in is not None else logging.ERROR,
            "notice failed notice=%s job=%s channel=%s try=%d %s: %s",
            notice.pk,
            notice.job_id,
            notice.channel,
            notice.tries,
            f"retry_in={retry_in:g}s" if retry_in is not None else "given up",
            text[:200],
            exc_info=None if expected else error,
        )

    async def stop(self) -> None:
        """Stop looking; let the tries under way end (each within its timeout)."""
        if _couriers.get(self.loop) is self:
            del _couriers[self.loop]
        for look in list(self._looks):
            look.cancel()
        if self._sending:
            await asyncio.wait(list(self._sending), timeout=conf.get("WEBHOOK_TIMEOUT") + 1)
        for task in list(self._sending):
            # Its claim stays until the lease runs out: another process tries again.
            task.cancel()
