"""The Job: one long-running piece of work, its progress and how it ended."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.db import models, transaction
from django.db.models import Case, F, When
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

if TYPE_CHECKING:
    from .progress import LogLine


class Status(models.TextChoices):
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    # Stopped at a checkpoint on its owner's request, holding no worker; resumed, it
    # is queued again and goes on from there.
    PAUSED = "paused", _("Paused")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")
    INTERRUPTED = "interrupted", _("Interrupted")


# Not ended: a paused job is unfinished too (it counts against the caps, keeps its
# unique key, and may be cancelled).
ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING, Status.PAUSED)
TERMINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.INTERRUPTED)

# A running job publishes at most this many states past the last one it wrote to
# the database (the publisher writes before it would go further). Whoever ends a
# job from the outside (stale heartbeat, dead process) jumps its seq past this
# window, so the final state is newer than anything a watcher may have seen.
UNPERSISTED_SEQ_WINDOW = 20


class JobQuerySet(models.QuerySet["Job"]):
    """The job row's transitions, each one conditional write.

    Every condition encodes a race: a process that looked dead may still run its
    job, a job may end on its own while a sweep ends it, a cancel may meet a worker
    claiming the job. A write whose condition no longer holds changes nothing and
    says so (False), and the caller leaves the job as the winner wrote it.
    """

    async def claim(self, job_id: Any, worker: str) -> bool:
        """``worker`` claims a queued job to run it; False if it ended meanwhile (a
        cancel while queued) or another worker claimed it first."""
        claimed = await self.filter(
            pk=job_id, status=Status.QUEUED, worker="", cancel_requested=False
        ).aupdate(
            worker=worker,
            heartbeat_at=timezone.now(),
            # A resumed job goes on with the attempt it paused in.
            attempts=Case(
                When(paused_at__isnull=True, then=F("attempts") + 1),
                default=F("attempts"),
                output_field=models.PositiveIntegerField(),
            ),
            paused_at=None,
            retry_at=None,
        )
        return bool(claimed)

    async def heartbeat(self, job_ids: Iterable[Any]) -> None:
        """Mark the jobs a process runs alive now (those still active)."""
        await self.filter(pk__in=list(job_ids), status__in=ACTIVE_STATUSES).aupdate(
            heartbeat_at=timezone.now()
        )

    async def write_running(self, job_id: Any, values: dict[str, Any]) -> bool:
        """An execution's write of its job's running state (a status change, or a
        state the write-behind would leave too far behind), before it publishes it.
        Only while the job is active; False: it ended elsewhere."""
        return await self._write_active(job_id, values)

    def end(self, endings: Iterable[tuple[Any, dict[str, Any]]]) -> set[Any]:
        """Executions' final writes of their jobs (id, values), in one transaction;
        the ids whose write took. Each only while its job is active: an ending
        decided elsewhere (a sweep, a cancel while queued) stays.

        Sync, unlike the other transitions: it runs in the database thread, where
        :class:`~liveprogress.finalwrites.FinalWrites` gathers the endings that
        arrive together (one commit instead of one each).
        """
        with transaction.atomic(using=self.db):
            return {
                job_id
                for job_id, values in endings
                if self.filter(pk=job_id, status__in=ACTIVE_STATUSES).update(**values)
            }

    async def _write_active(self, job_id: Any, values: dict[str, Any]) -> bool:
        updated = await self.filter(pk=job_id, status__in=ACTIVE_STATUSES).aupdate(**values)
        return bool(updated)

    async def interrupt(self, job: Job, reason: str) -> bool:
        """End the job of a process that died, `interrupted` with ``reason``.

        Only while the row is as ``job`` was read (active, the same worker and
        heartbeat): a job that ends on its own, or is claimed again, meanwhile
        keeps that. Its seq jumps past :data:`UNPERSISTED_SEQ_WINDOW`, past anything
        the dead process may have published but not written.
        """
        now = timezone.now()
        ended = await self.filter(
            pk=job.pk,
            status__in=ACTIVE_STATUSES,
            worker=job.worker,
            heartbeat_at=job.heartbeat_at,
        ).aupdate(
            status=Status.INTERRUPTED,
            error=reason,
            eta_s=None,
            finished_at=now,
            updated_at=now,
            seq=F("seq") + UNPERSISTED_SEQ_WINDOW + 1,
        )
        return bool(ended)

    async def requeue(self, job: Job, reason: str, due: datetime | None) -> LogLine | None:
        """Queue the job of a process that died again, to start from the beginning
        (or its checkpoint) when ``due`` (None: at once), handed over by a dispatch
        loop then; ``reason`` is its message and a warning line in its log: the line,
        stored (None: not re-queued).

        ``job`` (as read) takes the queued state, and the row takes it only while it
        is as ``job`` was read (active, the same worker and heartbeat). Its seq jumps
        past :data:`UNPERSISTED_SEQ_WINDOW`, as for :meth:`interrupt`.
        """
        dead = {"pk": job.pk, "worker": job.worker, "heartbeat_at": job.heartbeat_at}
        now = timezone.now()
        job.status, job.current, job.total, job.eta_s = Status.QUEUED, 0, None, None
        job.message, job.started_at, job.updated_at = reason, None, now
        job.worker, job.heartbeat_at = "", None
        job.dispatched_at, job.slot, job.retry_at = None, None, due
        job.seq += UNPERSISTED_SEQ_WINDOW + 1
        fields = [
            "status",
            "current",
            "total",
            "eta_s",
            "message",
            "started_at",
            "updated_at",
            "worker",
            "heartbeat_at",
            "seq",
            "dispatched_at",
            "slot",
            "retry_at",
        ]
        values = {field: getattr(job, field) for field in fields}

        def write() -> LogLine | None:
            # Imported here: each imports this module.
            from . import conf
            from .logstore import store_lines
            from .progress import LogLine

            # The reason goes to the job's log too, in the same transaction: a next
            # attempt (claimed once this commits) counts its lines on from it.
            with transaction.atomic():
                if not self.filter(status__in=ACTIVE_STATUSES, **dead).update(**values):
                    return None
                stored = self.filter(pk=job.pk).values_list("log_seq", flat=True).get()
                line = LogLine(stored + 1, "warning", reason, time.time())
                job.log_seq, job.log_dropped = store_lines(job.pk, [line], 0, conf.get("LOG_LIMIT"))
            return line

        return await sync_to_async(write, thread_sensitive=True)()

    async def release(
        self, job_id: Any, worker: str, values: dict[str, Any], *, status: Status = Status.QUEUED
    ) -> bool:
        """``worker`` gives a job it runs back, with ``values``: to the queue for its
        next attempt (a retry), or `paused`; only while it is active, still that
        worker's, and nobody asked to cancel it. The next attempt claims it like a
        new job."""
        released = await self.filter(
            pk=job_id, status__in=ACTIVE_STATUSES, worker=worker, cancel_requested=False
        ).aupdate(**values, status=status, worker="", heartbeat_at=None)
        return bool(released)

    async def request_pause(self, job_id: Any) -> None:
        """Ask whichever process runs the job to pause it at its next checkpoint: read
        at every heartbeat, like a cancel."""
        await self.filter(pk=job_id, status__in=(Status.QUEUED, Status.RUNNING)).aupdate(
            pause_requested=True
        )

    async def park(self, job_id: Any, message: str) -> bool:
        """Pause a queued job that no process has claimed (it waits, or its task
        waits in a queue: that task's claim then fails); False if one has."""
        now = timezone.now()
        parked = await self.filter(
            pk=job_id, status=Status.QUEUED, worker="", cancel_requested=False
        ).aupdate(
            status=Status.PAUSED,
            paused_at=now,
            pause_requested=False,
            dispatched_at=None,
            slot=None,
            queue_position=None,
            message=message,
            updated_at=now,
            seq=F("seq") + 1,
        )
        return bool(parked)

    async def resume(self, job_id: Any, message: str) -> bool:
        """Queue a paused job again, for a dispatch loop to hand over (it goes on from
        its checkpoint); False if it is not paused."""
        now = timezone.now()
        # Its paused_at stays until a process takes it: that run goes on with the
        # attempt it paused in (a pause is no failed attempt).
        resumed = await self.filter(pk=job_id, status=Status.PAUSED).aupdate(
            status=Status.QUEUED,
            pause_requested=False,
            dispatched_at=None,
            message=message,
            updated_at=now,
            seq=F("seq") + 1,
        )
        return bool(resumed)

    async def reopen(self, job_id: Any, message: str) -> bool:
        """Queue again a job that ended `interrupted` (its process died) because its
        engine delivers it again; never one whose owner asked to cancel it. Its seq
        moves on: watchers take the queued state over the interrupted one."""
        now = timezone.now()
        reopened = await self.filter(
            pk=job_id, status=Status.INTERRUPTED, cancel_requested=False
        ).aupdate(
            status=Status.QUEUED,
            worker="",
            heartbeat_at=None,
            error="",
            message=message,
            finished_at=None,
            updated_at=now,
            seq=F("seq") + 1,
        )
        return bool(reopened)

    async def adopt(self, job_id: Any, placeholder: str, owner: str) -> bool:
        """Give a job held by the ``placeholder`` owner to ``owner``; False if it has
        another owner already (the first to adopt it keeps it)."""
        adopted = await self.filter(pk=job_id, owner=placeholder).aupdate(owner=owner)
        return bool(adopted)

    async def request_cancel(self, job_id: Any) -> None:
        """Ask whichever process runs the job to cancel it: the flag is read at every
        heartbeat, and only ever set (never on a job that has ended)."""
        await self.filter(pk=job_id, status__in=ACTIVE_STATUSES).aupdate(cancel_requested=True)

    async def record_cancel(self, job_id: Any, by: str) -> None:
        """Record who asked to cancel an active job, and when; the first to ask
        stays recorded."""
        await self.filter(pk=job_id, status__in=ACTIVE_STATUSES, cancelled_by="").aupdate(
            cancelled_by=by, cancelled_at=timezone.now()
        )

    async def ask_email(self, job_id: Any, owner: str, address: str) -> bool:
        """Set (or, with an empty ``address``, clear) the address the owner of a job
        asked to be emailed at when it ends; only while it is active. A job that ends
        meanwhile keeps what it had: its ending read the address after its write."""
        asked = await self.filter(pk=job_id, owner=owner, status__in=ACTIVE_STATUSES).aupdate(
            notify_email=address
        )
        return bool(asked)

    async def end_unclaimed(self, job_id: Any, status: Status, error: str) -> bool:
        """End a queued (or paused) job that no process holds; False if one does (it
        ends the job itself) or it has ended."""
        now = timezone.now()
        ended = await self.filter(
            pk=job_id, status__in=(Status.QUEUED, Status.PAUSED), worker=""
        ).aupdate(status=status, error=error, finished_at=now, updated_at=now, seq=F("seq") + 1)
        return bool(ended)


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(_("kind"), max_length=100)
    params = models.JSONField(_("parameters"), default=dict, blank=True)
    # "user:<pk>", "session:<session key>" or "cli:<name>": who may see and cancel it.
    owner = models.CharField(_("owner"), max_length=100)
    # The client address a visitor who is not signed in started it from (their jobs
    # are capped per address: MAX_ACTIVE_PER_ADDRESS); empty otherwise.
    address = models.CharField(_("client address"), max_length=45, blank=True)
    # The language of whoever started it: the job's messages are written in it.
    language = models.CharField(_("language"), max_length=16, blank=True)
    status = models.CharField(
        _("status"), max_length=12, choices=Status.choices, default=Status.QUEUED
    )
    current = models.BigIntegerField(_("current"), default=0)
    total = models.BigIntegerField(_("total"), null=True, blank=True)
    # Share done, 0 to 1, when the job reports it in stages or nested loops (the
    # weighted sum); null: current / total says it.
    fraction = models.FloatField(_("fraction done"), null=True, blank=True)
    # [{"name", "weight", "status": pending|running|done, "fraction"}], in order.
    stages = models.JSONField(_("stages"), default=list, blank=True)
    # Units per second over the recent window (the innermost counter's units).
    rate = models.FloatField(_("rate"), null=True, blank=True)
    message = models.TextField(_("message"), blank=True)
    eta_s = models.FloatField(_("seconds left"), null=True, blank=True)
    # Where eta_s comes from: "history" (past runs of its kind), "rate" (its recent
    # pace), "blend" (both, handing over); empty with no eta_s.
    eta_source = models.CharField(_("ETA from"), max_length=8, blank=True)
    result = models.JSONField(_("result"), null=True, blank=True)
    # Files the job attached: [{"name", "size", "content_type"}], stored through the
    # RESULT_STORAGE storage under liveprogress/<job id>/<name>.
    files = models.JSONField(_("files"), default=list, blank=True)
    # Set by `prunejobs` once the result and the files have expired and are gone.
    expired = models.BooleanField(_("expired"), default=False)
    # Log lines: the seq of the newest one, and how many of the oldest were dropped
    # (stored lines are log_dropped + 1 .. log_seq).
    log_seq = models.BigIntegerField(_("log sequence"), default=0)
    log_dropped = models.BigIntegerField(_("log lines dropped"), default=0)
    # The job that started this one (group progress); cancelling it cancels this.
    parent = models.ForeignKey(
        "self",
        verbose_name=_("parent"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="children",
    )
    error = models.TextField(_("error"), blank=True)
    # +1 for every published change; watchers keep a state only if its seq is newer.
    seq = models.BigIntegerField(_("sequence"), default=0)
    cancel_requested = models.BooleanField(_("cancel requested"), default=False)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated"), default=timezone.now)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    heartbeat_at = models.DateTimeField(_("heartbeat"), null=True, blank=True)
    # "host:pid:boot" of the process that runs it; empty while nobody has claimed it.
    worker = models.CharField(_("worker"), max_length=200, blank=True)
    # Times it was started: more than one for a retryable job re-queued after a crash,
    # or a task its engine retried.
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    # The most starts it may have, when known (an engine's retry limit); null: unknown.
    max_attempts = models.PositiveIntegerField(_("attempts allowed"), null=True, blank=True)
    # When a queued job's next attempt is due (its engine retries it then); null: now.
    retry_at = models.DateTimeField(_("next attempt"), null=True, blank=True)
    # A scheduled start: the job stays `queued` until then (null: as soon as it may).
    run_after = models.DateTimeField(_("start after"), null=True, blank=True)
    # When it was handed to its runner; null while it waits (for its start time, its
    # retry's, or a concurrency slot): the dispatch loop hands it over then.
    dispatched_at = models.DateTimeField(_("dispatched"), null=True, blank=True)
    # Its place among the jobs of its kind waiting for a concurrency slot (1: next);
    # null when it waits for none.
    queue_position = models.PositiveIntegerField(_("place in line"), null=True, blank=True)
    # While it waits in that line: seconds from updated_at until it should start, from
    # the running jobs' ETAs and its kind's past runs (null: unknown).
    starts_in_s = models.FloatField(_("starts in (seconds)"), null=True, blank=True)
    # Which of its kind's `concurrency` slots the job holds while active (null: its
    # kind has no such limit, or it waits for one). Unique per kind among active
    # jobs (a constraint): the database itself keeps the limit across processes.
    slot = models.PositiveSmallIntegerField(_("concurrency slot"), null=True, blank=True)
    # Its kind's `unique` key from its params: one active job per kind and key (a
    # constraint); empty when its kind has none.
    unique_key = models.CharField(_("unique key"), max_length=200, blank=True)
    # The trace context of the request that started it (W3C traceparent headers),
    # for the job's span (tracing); empty without OpenTelemetry.
    trace_context = models.JSONField(_("trace context"), default=dict, blank=True)
    # Where it is: each top-level `track` loop's items done and the job's own data
    # (`progress.checkpoint`), written with its states; a next attempt (a retry, a
    # resume after a pause) goes on from there. Null: none recorded.
    checkpoint = models.JSONField(_("checkpoint"), null=True, blank=True)
    # The count (`current`) at the checkpoint this attempt went on from; null: it
    # started from the beginning.
    resumed_from = models.BigIntegerField(_("resumed from"), null=True, blank=True)
    # Its owner asked it to pause (at its next checkpoint), and since when it is paused.
    pause_requested = models.BooleanField(_("pause requested"), default=False)
    paused_at = models.DateTimeField(_("paused"), null=True, blank=True)
    # Who cancelled it ("owner", or "staff:<user pk>" for a staff member) and when.
    cancelled_by = models.CharField(_("cancelled by"), max_length=100, blank=True)
    cancelled_at = models.DateTimeField(_("cancelled"), null=True, blank=True)
    # The address its owner asked to be emailed at when it ends; empty: no email.
    notify_email = models.EmailField(_("email when it ends"), blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("job")
        verbose_name_plural = _("jobs")
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="liveprogress_owner_idx"),
            models.Index(fields=["status", "heartbeat_at"], name="liveprogress_status_idx"),
            models.Index(fields=["kind", "status"], name="liveprogress_kind_status_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "slot"],
                condition=models.Q(status__in=["queued", "running", "paused"], slot__isnull=False),
                name="liveprogress_one_job_per_slot",
            ),
            models.UniqueConstraint(
                fields=["kind", "unique_key"],
                condition=models.Q(status__in=["queued", "running", "paused"])
                & ~models.Q(unique_key=""),
                name="liveprogress_unique_active_job",
            ),
        ]
        permissions = [
            ("view_all_jobs", _("Can watch every job live (the staff view)")),
            ("cancel_any_job", _("Can cancel anyone's job")),
        ]

    #: Not stored: True on the active job a start of a unique kind returned instead
    #: of making a duplicate.
    existing = False

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def percent(self) -> float | None:
        """Done share in percent, or None while the total is unknown."""
        if self.fraction is not None:
            return round(min(max(self.fraction, 0.0), 1.0) * 100, 2)
        if self.total is None:
            return None
        if self.total <= 0:
            return 100.0
        return round(min(max(self.current / self.total, 0.0), 1.0) * 100, 2)


class PastRun(models.Model):
    """How long one successful run of a kind took, or one stage of it: what the ETA
    of the kind's next jobs is learned from (history.py keeps the newest few)."""

    kind = models.CharField(_("kind"), max_length=100)
    # The stage's name; empty: the whole run.
    stage = models.CharField(_("stage"), max_length=200, blank=True)
    seconds = models.FloatField(_("seconds"))
    # The total it counted to (the job's counter, or the stage's), null when it had
    # none: the estimate is then per run, not per unit.
    units = models.BigIntegerField(_("units"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), default=timezone.now)

    class Meta:
        verbose_name = _("past run")
        verbose_name_plural = _("past runs")
        indexes = [models.Index(fields=["kind", "stage"], name="liveprogress_pastrun_idx")]

    def __str__(self) -> str:
        return f"{self.kind}{' / ' + self.stage if self.stage else ''}: {self.seconds:.1f} s"


class LogLevel(models.TextChoices):
    DEBUG = "debug", _("Debug")
    INFO = "info", _("Info")
    WARNING = "warning", _("Warning")
    ERROR = "error", _("Error")


class JobLog(models.Model):
    """One line a job logged; at most LOG_LIMIT lines are kept per job, the oldest go."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="log_lines")
    # The job's own log sequence, 1, 2, 3...: a reconnecting client asks for what
    # comes after the last one it holds.
    seq = models.BigIntegerField(_("sequence"))
    level = models.CharField(_("level"), max_length=8, choices=LogLevel.choices)
    text = models.TextField(_("text"))
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        ordering = ["job", "seq"]
        verbose_name = _("log line")
        verbose_name_plural = _("log lines")
        constraints = [
            models.UniqueConstraint(fields=["job", "seq"], name="liveprogress_log_unique_seq")
        ]

    def __str__(self) -> str:
        return f"{self.job_id} #{self.seq} {self.level}: {self.text[:60]}"


class NoticeChannel(models.TextChoices):
    EMAIL = "email", _("Email")
    WEBHOOK = "webhook", _("Webhook")


class NoticeStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    SENDING = "sending", _("Sending")
    DELIVERED = "delivered", _("Delivered")
    FAILED = "failed", _("Failed")


class NoticeQuerySet(models.QuerySet["Notice"]):
    """A notice's transitions: claimed by one process at a time, then settled.

    A claim is a lease: a process that dies while sending leaves the notice
    `sending` until its lease runs out, and then any process claims it again.
    Settling is conditional on the claim still being the caller's (the same
    process, the same try), so a late answer never overwrites a newer try's.
    """

    def due(self) -> models.QuerySet[Notice]:
        """Notices to send now: pending and due, or claimed by a lease that ran out."""
        now = timezone.now()
        return self.filter(
            models.Q(status=NoticeStatus.PENDING, due_at__lte=now)
            | models.Q(status=NoticeStatus.SENDING, lease_until__lt=now)
        )

    async def claim(self, notice_id: int, worker: str, lease: float) -> Notice | None:
        """The notice, claimed by ``worker`` for a try that holds it ``lease`` seconds;
        None if it is not due any more (another process claimed it first)."""
        now = timezone.now()
        claimed = (
            await self.due()
            .filter(pk=notice_id)
            .aupdate(
                status=NoticeStatus.SENDING,
                claimed_by=worker,
                lease_until=now + timedelta(seconds=lease),
                tries=F("tries") + 1,
            )
        )
        if not claimed:
            return None
        return await self.select_related("job").aget(pk=notice_id)

    async def delivered(self, notice: Notice) -> bool:
        """The try of ``notice`` (as claimed) succeeded."""
        return await self._settle(
            notice, status=NoticeStatus.DELIVERED, delivered_at=timezone.now(), last_error=""
        )

    async def failed(self, notice: Notice, error: str, retry_in: float | None) -> bool:
        """The try of ``notice`` failed: due again in ``retry_in`` seconds, or, with
        None, given up."""
        if retry_in is None:
            return await self._settle(notice, status=NoticeStatus.FAILED, last_error=error)
        due_at = timezone.now() + timedelta(seconds=retry_in)
        return await self._settle(
            notice, status=NoticeStatus.PENDING, due_at=due_at, last_error=error
        )

    async def _settle(self, notice: Notice, **values: Any) -> bool:
        settled = await self.filter(
            pk=notice.pk,
            status=NoticeStatus.SENDING,
            claimed_by=notice.claimed_by,
            tries=notice.tries,
        ).aupdate(lease_until=None, **values)
        return bool(settled)


class Notice(models.Model):
    """One notice of a job's event beyond the page: an email to its owner, or a call
    of a webhook. Made once per job, event and target (a constraint), by the
    process that wrote the event; sent by whichever process claims it first."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="notices")
    channel = models.CharField(_("channel"), max_length=8, choices=NoticeChannel.choices)
    # "finished", "started" or "retried".
    event = models.CharField(_("event"), max_length=16)
    # The job's attempt the event is about (a job starts, and is retried, once per
    # attempt); 0 for an ending.
    attempt = models.PositiveIntegerField(_("attempt"), default=0)
    # The email address, or the webhook's URL.
    target = models.CharField(_("to"), max_length=500)
    # A webhook's body as the event left the job (the state then); empty for an email,
    # written from the ended job when it is sent.
    payload = models.JSONField(_("payload"), default=dict, blank=True)
    status = models.CharField(
        _("status"), max_length=12, choices=NoticeStatus.choices, default=NoticeStatus.PENDING
    )
    tries = models.PositiveIntegerField(_("tries"), default=0)
    due_at = models.DateTimeField(_("due"), default=timezone.now)
    # The process sending it, until when (past that, another may claim it again).
    claimed_by = models.CharField(_("claimed by"), max_length=200, blank=True)
    lease_until = models.DateTimeField(_("claimed until"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    delivered_at = models.DateTimeField(_("delivered"), null=True, blank=True)

    objects = NoticeQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("notice")
        verbose_name_plural = _("notices")
        indexes = [models.Index(fields=["status", "due_at"], name="liveprogress_notice_due_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "channel", "event", "attempt", "target"],
                name="liveprogress_one_notice",
            )
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.event} of {self.job_id} to {self.target} ({self.status})"


class ShareQuerySet(models.QuerySet["Share"]):
    """Share links: alive until they expire or their owner revokes them."""

    def alive(self) -> models.QuerySet[Share]:
        """Links that still let their holder watch: neither revoked nor expired."""
        return self.filter(revoked_at__isnull=True, expires_at__gt=timezone.now())

    def dead(self) -> models.QuerySet[Share]:
        """Links that no longer work: revoked or expired."""
        return self.filter(
            models.Q(revoked_at__isnull=False) | models.Q(expires_at__lte=timezone.now())
        )

    async def revoke(self, share_id: Any) -> None:
        """Revoke a link now (a link revoked already keeps when it was)."""
        await self.filter(pk=share_id, revoked_at__isnull=True).aupdate(revoked_at=timezone.now())


class Share(models.Model):
    """A read-only link to one job, made by its owner: whoever holds it watches the
    job live, without signing in, until it expires or is revoked (shares.py)."""

    # Names the link to its owner (to list and revoke it); never part of the link.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="shares")
    # SHA-256 of the link's token, hex: the token itself is shown once, to its owner,
    # and never stored, so the table does not hold working links.
    token_digest = models.CharField(_("token digest"), max_length=64, unique=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    expires_at = models.DateTimeField(_("expires"))
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)

    objects = ShareQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("share link")
        verbose_name_plural = _("share links")

    def __str__(self) -> str:
        return f"share {self.id} of {self.job_id}"
