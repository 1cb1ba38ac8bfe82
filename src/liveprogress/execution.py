"""Running one job: call its function, publish and persist its progress, end it.

The same execution serves every runner: in-process it runs on the server's
event loop, and a worker process would run it on its own.

A running job's progress is published first and written behind it (by the
process's :class:`~liveprogress.writebehind.WriteBehind`). Status changes, final
states, and a state that would leave the database more than
``UNPERSISTED_SEQ_WINDOW`` states behind are written by the execution itself
before they are published; final states of jobs that end together share one
transaction (:class:`~liveprogress.finalwrites.FinalWrites`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import aclose_old_connections
from django.conf import settings
from django.utils import timezone, translation
from django.utils.translation import gettext

from . import conf, history, tracing
from .cascade import end_children
from .eager import start_now
from .eta import JobEta, before_start
from .exceptions import JobCancelled, JobPaused
from .finalwrites import FinalWrites
from .logstore import store_lines
from .models import UNPERSISTED_SEQ_WINDOW, Job, Status
from .progress import MESSAGE_MAX, JobContext, Progress, ProgressSnapshot, cut, stages_share
from .publish import ending, publish, publish_log
from .registry import JobKind
from .signals import send_finished, send_retried, send_started
from .writebehind import BEHIND_FIELDS, UnwrittenRow, WriteBehind

logger = logging.getLogger(__name__)

# Waits between tries to write a final state while the database is away (~1 min).
_FINAL_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)

# What a write before publishing (a status change, the window) changes.
_PROGRESS_FIELDS = ["status", "started_at", "resumed_from", *BEHIND_FIELDS]
_FINAL_FIELDS = [*_PROGRESS_FIELDS, "result", "error", "finished_at"]


#: How a sync job function is called: given the call, awaits its value.
SyncCaller = Callable[[Callable[[], Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Retrying:
    """A job's engine will run it again after the error it just raised."""

    #: Seconds until the next attempt starts (None: as soon as a worker takes it).
    delay: float | None
    #: The number of that attempt (2 for the first retry), and the most there may be
    #: (None: unknown).
    attempt: int
    max_attempts: int | None
    #: What failed, when the error raised only says a retry is due (Celery's
    #: ``Retry`` wraps the error it retries); empty: the error raised says it.
    cause: str = ""


#: Whether the job's engine will retry it after an error (its retry, or None).
RetryPolicy = Callable[[BaseException], Retrying | None]


def own_retries(kind: JobKind, job: Job) -> RetryPolicy | None:
    """The retry policy of a kind of liveprogress's own with ``max_attempts`` (another
    engine's task is retried as its engine says, through the policy it passes)."""
    operations = kind.operations
    if kind.engine or operations.max_attempts <= 1:
        return None

    def policy(error: BaseException) -> Retrying | None:
        if not isinstance(error, operations.retry_on) or job.attempts >= operations.max_attempts:
            return None
        return Retrying(
            delay=operations.retry_delay(job.attempts),
            attempt=job.attempts + 1,
            max_attempts=operations.max_attempts,
        )

    return policy


def time_limit_error(seconds: float) -> str:
    """The error of a job stopped by its time limit."""
    return f"Stopped: it ran longer than its time limit of {seconds:g} s"


class Execution:
    """One run of one job; :meth:`run` returns once the job has ended and said so.

    ``context`` is what the job may do beyond its progress (files, children);
    ``call_sync`` how a sync function is called (the runner's fair threads;
    liveprogress.testing calls it in the test's own thread; another engine's task,
    in its worker's thread). ``will_retry`` says whether an error is retried by the
    job's engine: the job then goes back to `queued` for that attempt instead of
    ending `failed`. ``finals`` writes final states, shared by the process's
    executions so that those ending together are written together.
    """

    def __init__(
        self,
        job: Job,
        kind: JobKind,
        *,
        writer: WriteBehind,
        call_sync: SyncCaller,
        on_publish: Callable[[Job], None] | None = None,
        context: JobContext | None = None,
        will_retry: RetryPolicy | None = None,
        finals: FinalWrites | None = None,
    ) -> None:
        self.job = job
        self._will_retry = will_retry
        self.kind = kind
        self.progress = Progress(
            self._changed,
            log_seq=job.log_seq,
            log_limit=conf.get("LOG_LIMIT"),
            context=context,
            # An earlier attempt's checkpoint: this one goes on from there.
            resume=job.checkpoint,
            job_id=str(job.pk),
        )
        job.resumed_from = None if job.checkpoint is None else job.checkpoint.get("current", 0)
        self._call_sync_with = call_sync
        self.on_publish = on_publish
        #: Called with each batch of log lines once stored (the CLI prints them).
        self.on_log: Callable[[list[dict[str, Any]]], None] | None = None
        self._writer = writer
        self._finals = finals or FinalWrites()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._dirty = asyncio.Event()
        self._wake_pending = False
        self._publish_lock = asyncio.Lock()
        # What the database holds of this job, as far as this execution wrote it.
        self._persisted_seq = job.seq
        self._persisted_status = job.status
        self._eta = JobEta()
        self._thread_started = False
        self._function_done = False
        self._started_at: Any = None
        self._started_monotonic: float | None = None
        # Fires when the attempt has run for its kind's time limit.
        self._time_limit: asyncio.TimerHandle | None = None
        #: The run's ending once it began (its final write, a retry's or a pause's
        #: give-back, and what follows them): shielded from cancels, so a process
        #: that stops waits for it (the runner's stop).
        self.ending: asyncio.Task[None] | None = None
        self._finished = False
        #: True once someone else ended the job (a sweep, a cancel while queued):
        #: nothing of it is published or written from here on.
        self.ended_elsewhere = False

    # -- running -----------------------------------------------------------------

    async def run(self) -> None:
        with tracing.job_span(self.job, self.progress):
            await self._run()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        publisher = self._loop.create_task(self._publish_loop())
        status, result, error = Status.FAILED, None, ""
        shutdown = paused = False
        retrying: Retrying | None = None
        try:
            # In the try: a cancel (or a shutdown) while it reads ends the job as usual.
            await self._learn_history()
            if self.kind.is_async:
                self._mark_started()
                value = await self._call_async()
            else:
                value = await self._call_sync_with(self._call_sync)
            status = Status.SUCCEEDED
        except (JobCancelled, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and self._task is not None:
                self._task.uncancel()
            if self.progress.timed_out:
                status, error = Status.FAILED, self._time_limit_error()
            elif self.progress.cancelled:
                status = Status.CANCELLED
            elif isinstance(exc, JobPaused):
                paused = True
            else:
                # Cancelled by the server's shutdown, not by anyone's request.
                status, error, shutdown = Status.INTERRUPTED, "The server stopped", True
        except Exception as exc:
            tracing.record_error(self.progress, exc)
            retrying = self._retrying_after(exc)
            if self.progress.timed_out:
                status, error = Status.FAILED, self._time_limit_error()
            elif self.progress.cancelled:
                # The cancel reached the job, which ended on it, whatever the error
                # says (an engine may wrap the cancel in one of its own).
                status = Status.CANCELLED
            elif retrying is None:
                logger.warning(
                    "job failed job=%s kind=%s", self.job.id, self.kind.name, exc_info=True
                )
            if status != Status.FAILED or not error:
                error = cut(str(exc) or type(exc).__name__, MESSAGE_MAX)
        finally:
            # From here on, nothing cancels this task: its ending must be written.
            self._function_done = True
            publisher.cancel()
            if self._time_limit is not None:
                self._time_limit.cancel()
        if status == Status.SUCCEEDED and self.progress.timed_out:
            # A sync function that made no progress call after its time limit passed
            # returned late: it ran too long all the same.
            status, error = Status.FAILED, self._time_limit_error()
        if status == Status.SUCCEEDED:
            # Outside the try above: a result that can't be kept fails the job, and is
            # no error for its engine to retry.
            try:
                result = _json_ready(value)
            except (TypeError, ValueError) as exc:
                status, error = Status.FAILED, cut(str(exc), MESSAGE_MAX)
        # Shielded: a shutdown that cancels the runner still lets the ending be written.
        # Started now, not on the loop's next turn: a busy loop's turn is what a
        # final state waited for.
        if retrying is not None:
            ending: Coroutine[Any, Any, None] = self._release(retrying, retrying.cause or error)
        elif paused:
            ending = self._pause_here()
        else:
            ending = self._finish(status, result, error)
        self.ending = start_now(ending)
        await asyncio.shield(self.ending)
        if shutdown:
            raise asyncio.CancelledError

    async def _learn_history(self) -> None:
        """Read the kind's past runs, for the ETA before the job's pace says it; a
        database that fails here leaves the job without it, never stops it."""
        try:
            self._eta = JobEta(await history.of_kind(self.kind.name))
        except Exception:
            logger.warning("past runs not read kind=%s", self.kind.name, exc_info=True)

    def _retrying_after(self, error: Exception) -> Retrying | None:
        """The engine's retry after ``error``, if it will retry; never for a job
        someone cancelled (its error may be the cancel itself, which an engine that
        retries every error would retry), nor when the policy itself fails."""
        if self._will_retry is None or self.progress.cancelled or self.job.cancel_requested:
            return None
        try:
            return self._will_retry(error)
        except Exception:
            logger.warning("retry policy failed job=%s; not retried", self.job.id, exc_info=True)
            return None

    async def _call_async(self) -> Any:
        with translation.override(self.job.language or settings.LANGUAGE_CODE):
            return await self.kind.function(self.progress, **self.job.params)

    def _call_sync(self) -> Any:
        # The check and the mark are one step under the lock that cancel() takes,
        # so a cancel either stops the job before it starts or is seen by it.
        self.progress.start_unless_cancelled(self._mark_thread_started)
        self._mark_started()
        with translation.override(self.job.language or settings.LANGUAGE_CODE):
            return self.kind.function(self.progress, **self.job.params)

    def _mark_thread_started(self) -> None:
        self._thread_started = True

    def _mark_started(self) -> None:
        """The function starts (in its thread, or on the loop): from now its time
        limit counts."""
        self._started_at = timezone.now()
        self._started_monotonic = time.monotonic()
        self._changed()
        limit = self.kind.operations.timeout
        if limit is not None and self._loop is not None:
            self._call_on_loop(lambda: self._arm_time_limit(limit))

    def _call_on_loop(self, call: Callable[[], None]) -> None:
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            call()
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(call)

    def _arm_time_limit(self, seconds: float) -> None:
        if not self._function_done and self._loop is not None:
            self._time_limit = self._loop.call_later(seconds, self._time_out)

    def _time_out(self) -> None:
        """The time limit passed: an async function is cancelled now; a sync one
        raises at its next progress call (a thread can't be stopped from outside)."""
        if self._function_done:
            return
        logger.warning("job timed out job=%s kind=%s", self.job.id, self.kind.name)
        self.progress.time_out()
        if self.kind.is_async and self._task is not None:
            self._task.cancel()

    def _time_limit_error(self) -> str:
        return time_limit_error(self.kind.operations.timeout or 0)

    async def cancel(self) -> Job:
        """Ask the job to stop; returns its state with the request published."""
        if self._finished or self.ended_elsewhere:
            # Its ending is written (or someone else's is): a cancel changes nothing,
            # and must not mark the final state it answers with.
            return self.job
        self._stop_function()
        self.job.cancel_requested = True
        await self.publish_now()
        return self.job

    async def pause(self) -> Job:
        """Ask the job to pause at its next checkpoint; returns its state with the
        request published."""
        if self._finished or self.ended_elsewhere or self.progress.pausing:
            return self.job
        self.progress.request_pause()
        self.job.pause_requested = True
        await self.publish_now()
        return self.job

    async def stop_as_ended_elsewhere(self) -> None:
        """Someone else ended this job (a sweep, a cancel while queued): stop running
        and publishing it; returns once no publish of it is under way."""
        self._note_ended_elsewhere()
        async with self._publish_lock:
            pass

    def _note_ended_elsewhere(self) -> None:
        self.ended_elsewhere = True
        self._stop_function()

    def _stop_function(self) -> None:
        """Make the job's function stop: once, and only while it runs."""
        already = self.progress.request_cancel()
        # Read after the request: a sync function either marked its start before it
        # (so it sees the cancel at its next progress call) or never will.
        thread_started = self._thread_started
        if already or self._function_done or self._task is None:
            return
        # A sync function that runs can only stop itself (its Progress raises); one
        # still waiting for a thread, and an async one, stop here and now.
        if self.kind.is_async or not thread_started:
            self._task.cancel()

    # -- publishing --------------------------------------------------------------

    def _changed(self) -> None:
        """Wake the publisher; called from any thread, cheap when it is already awake."""
        if self._wake_pending or self._loop is None:
            return
        self._wake_pending = True
        self._call_on_loop(self._dirty.set)

    async def _publish_loop(self) -> None:
        interval = conf.get("PUBLISH_INTERVAL")
        loop = asyncio.get_running_loop()
        # At most one state per interval: a change within it waits out the rest; a
        # job that changes less often goes out as it changes, with no timer between
        # (a wake-up per state less, most of a quiet server's loop).
        next_at = 0.0
        while True:
            await self._dirty.wait()
            try:
                wait = next_at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                next_at = loop.time() + interval
                publishing = start_now(self.publish_now())
                if publishing.done():
                    publishing.result()  # its error, if any, as below
                else:
                    # Shielded: when the function ends, this loop is cancelled, but
                    # a publish under way finishes first (it may hold log lines it
                    # took from the Progress); the ending waits for it on the lock.
                    await asyncio.shield(publishing)
            except Exception:
                # The database is away: the job goes on, its state waits (it may not
                # be published further than the window past what is written).
                logger.warning("persisting failed job=%s; retrying", self.job.id, exc_info=True)
                await aclose_old_connections()
                await asyncio.sleep(max(interval, 1.0))
                self._changed()

    async def publish_now(self) -> None:
        """Publish the job's progress as it is now (what the publish loop does when
        woken); nothing once the job has ended."""
        async with self._publish_lock:
            if self._finished or self.ended_elsewhere:
                return
            self._dirty.clear()
            self._wake_pending = False
            job = self.job
            await self._publish_logs()
            self._apply(self.progress.snapshot())
            job.seq += 1
            starting = job.status == Status.RUNNING and self._persisted_status != Status.RUNNING
            # Written before it is published: a status change, and a state that
            # would leave the database more than the window behind. The rest is
            # published at once and written behind.
            if (
                job.status != self._persisted_status
                or job.seq - self._persisted_seq >= UNPERSISTED_SEQ_WINDOW
            ):
                try:
                    written = await self._persist(_PROGRESS_FIELDS, final=False)
                except BaseException:
                    job.seq -= 1  # not published: the next state takes its seq
                    raise
                if not written:
                    return
            else:
                self._writer.mark(self)
            await self._send()
            if starting:
                await send_started(job)

    def _apply(self, snapshot: ProgressSnapshot) -> None:
        """Copy the progress into the job."""
        job = self.job
        now = timezone.now()
        if self._started_at is not None and job.status == Status.QUEUED:
            job.status, job.started_at = Status.RUNNING, self._started_at
        job.current, job.total, job.message = snapshot.current, snapshot.total, snapshot.message
        job.fraction = snapshot.fraction
        job.stages = list(snapshot.stages)
        job.files = list(snapshot.files)
        if snapshot.checkpoint is not None:
            job.checkpoint = snapshot.checkpoint
        job.updated_at = now
        started = self._started_monotonic
        running_s = None if started is None else time.monotonic() - started
        estimate = self._eta.estimate(snapshot, self.progress.timings(), running_s)
        job.eta_s, job.rate, job.eta_source = estimate.eta_s, estimate.rate, estimate.source

    # -- log lines -----------------------------------------------------------------

    async def _publish_logs(self) -> None:
        """Write the lines logged since the last publish, then send them: a watcher
        that reconnects finds in the database every line it was sent."""
        lines, dropped_through = self.progress.take_logs()
        if not lines:
            return
        job = self.job
        log_seq, log_dropped = await sync_to_async(store_lines, thread_sensitive=True)(
            job.pk, lines, dropped_through, conf.get("LOG_LIMIT")
        )
        job.log_seq, job.log_dropped = log_seq, log_dropped
        await publish_log(job, lines, dropped_through)
        if self.on_log is not None:
            self.on_log([line.as_wire() for line in lines])

    # -- writing -------------------------------------------------------------------

    @property
    def persisted_seq(self) -> int:
        """The newest of the job's states this execution knows the database holds."""
        return self._persisted_seq

    async def _persist(self, fields: list[str], *, final: bool) -> bool:
        """Write the job if it is still active; False (and stop) if it ended elsewhere."""
        job = self.job
        values = {field: getattr(job, field) for field in fields}
        if job.cancel_requested:
            # Only ever set: a request made through another process stays in place.
            values["cancel_requested"] = True
        write = self._finals.end if final else Job.objects.write_running
        updated = await write(job.pk, values)
        self._persisted_seq = max(self._persisted_seq, values["seq"])
        self._persisted_status = values["status"]
        if not updated:
            logger.info("job ended elsewhere job=%s", job.id)
            self._note_ended_elsewhere()
        return updated

    def unwritten_row(self) -> UnwrittenRow | None:
        """For the write-behind: the published running state it should write, or
        None if there is nothing to write."""
        job = self.job
        if self._finished or self.ended_elsewhere or job.seq <= self._persisted_seq:
            return None
        values = {field: getattr(job, field) for field in BEHIND_FIELDS}
        return UnwrittenRow(job.pk, values, job.cancel_requested)

    def written(self, seq: int, *, ended: bool) -> None:
        """For the write-behind: state ``seq`` is written; ``ended``: the row had
        ended, so the job stops here (someone else ended it)."""
        self._persisted_seq = max(self._persisted_seq, seq)
        if ended and not self._finished:
            logger.info("job ended elsewhere job=%s", self.job.id)
            self._note_ended_elsewhere()

    async def _send(self) -> None:
        await publish(self.job)
        if self.on_publish is not None:
            self.on_publish(self.job)

    async def _take_last_progress(self) -> None:
        """Into the job, as its run ends (or is released for a retry): the lines it
        logged last, stored and sent, and its progress as it left it."""
        try:
            await self._publish_logs()
        except Exception:
            logger.warning("last log lines lost job=%s", self.job.id, exc_info=True)
        self._apply(self.progress.snapshot())

    async def _finish(self, status: Status, result: Any, error: str) -> None:
        """Persist the final state, then publish it: terminal states are never lost."""
        async with self._publish_lock:
            if self.ended_elsewhere:
                self._finished = True
                return
            await self._take_last_progress()
            await self._write_end(status, result, error)

    async def _write_end(self, status: Status, result: Any, error: str) -> None:
        """The ending of :meth:`_finish`, under the publish lock with the last progress
        taken: written (retried while the database is away), then published, then
        the children it left stopped (if it may have any: no query otherwise)."""
        job = self.job
        now = timezone.now()
        job.status, job.result, job.error = status, result, error
        if job.stages:
            job.stages, job.fraction = _ended_stages(job.stages, status)
        job.finished_at, job.updated_at, job.eta_s, job.rate = now, now, None, None
        job.eta_source = ""
        job.seq += 1
        self._finished = True
        with ending():
            persisted = await self._write_final()
            if persisted:
                await self._send()
        if not persisted:
            return
        await send_finished(job)
        if status == Status.SUCCEEDED:
            await self._record_run()
        if not self._may_have_children():
            return
        try:
            await end_children(job)
        except Exception:
            # Their own heartbeats go on; a cancel of the parent cascades again.
            logger.warning("children not stopped job=%s", job.id, exc_info=True)

    async def _record_run(self) -> None:
        """Keep how long this successful run (and each of its stages) took, for the
        ETA of the kind's next jobs; a failed write loses only that. A run that went
        on from a checkpoint did part of the work: it teaches nothing."""
        job = self.job
        if job.started_at is None or job.finished_at is None or self.progress.resumed:
            return
        timings = self.progress.timings()
        run = history.Run(
            kind=self.kind.name,
            finished_at=job.finished_at,
            seconds=(job.finished_at - job.started_at).total_seconds(),
            units=timings.units,
            stages=tuple(
                (stage.name, stage.seconds, stage.units)
                for stage in timings.stages
                if stage.status != "pending"
            ),
        )
        try:
            await history.record(run)
        except Exception:
            logger.warning("run not recorded job=%s", job.id, exc_info=True)

    async def _write_final(self) -> bool:
        """Write the final state, retried while the database is away; False if it
        ended elsewhere meanwhile, or could not be written (then its heartbeat stops
        with it, and a sweep ends it `interrupted`)."""
        job = self.job
        for delay in (*_FINAL_RETRY_DELAYS, None):
            try:
                return await self._persist(_FINAL_FIELDS, final=True)
            except Exception:
                if delay is None:
                    logger.error("final state lost job=%s status=%s", job.id, job.status)
                    break
                logger.warning(
                    "final write failed job=%s; retrying in %s s", job.id, delay, exc_info=True
                )
                await aclose_old_connections()
                await asyncio.sleep(delay)
        return False

    def _may_have_children(self) -> bool:
        """Whether the job may have children to end: it tried to start one, or an
        earlier attempt of it may have (and left them running when it was retried or
        its process died)."""
        return self.progress.spawned or self.job.attempts > 1

    async def _release(self, retrying: Retrying, error: str) -> None:
        """Give the job back to the queue for its next attempt, saying when and why,
        its last error kept: an engine delivers its task again, and a kind of our own
        is handed over again by a dispatch loop once due."""
        job = self.job
        due = None
        if retrying.delay is not None:
            due = timezone.now() + timedelta(seconds=retrying.delay)
        with translation.override(job.language or settings.LANGUAGE_CODE):
            message = _retry_message(retrying)
        # The log says why: a next attempt may log again what this one logged (its
        # work before the checkpoint), and a reader must see where one attempt ended.
        self.progress.log(f"{message}: {error}", level="warning")
        waiting = before_start(self._eta.history)
        changes: dict[str, Any] = {
            "error": error,
            "eta_s": waiting.eta_s,
            "eta_source": waiting.source,
            "retry_at": due,
            "started_at": None,
        }
        if retrying.max_attempts is not None:
            changes["max_attempts"] = retrying.max_attempts
        if await self._give_back(Status.QUEUED, message, changes):
            logger.info("job retried job=%s attempt=%s", job.id, retrying.attempt)
            await send_retried(job, attempt=retrying.attempt, delay=retrying.delay, error=error)

    async def _pause_here(self) -> None:
        """The job stopped at a checkpoint on its owner's request: `paused`, its
        checkpoint written; resumed, it is queued again and any process goes on from
        there."""
        job = self.job
        with translation.override(job.language or settings.LANGUAGE_CODE):
            message = gettext("Paused")
        changes = {"paused_at": timezone.now(), "pause_requested": False, "eta_s": None}
        if await self._give_back(Status.PAUSED, message, changes):
            logger.info("job paused job=%s at=%s", job.id, job.current)

    async def _give_back(self, status: Status, message: str, changes: dict[str, Any]) -> bool:
        """Give the job's worker (and its slot) back, `status` (queued for a retry, or
        paused), with ``message`` and the fields in ``changes``: written, then
        published; the next attempt claims it anew. A job whose cancel was asked
        meanwhile (its flag set through another process) is not given back: it ends
        `cancelled` (False), and the next attempt finds it ended."""
        async with self._publish_lock:
            if self.ended_elsewhere:
                self._finished = True
                return False
            await self._take_last_progress()
            job = self.job
            before = {
                field: getattr(job, field) for field in ("status", "seq", "message", *changes)
            }
            worker = job.worker
            job.status, job.message = status, cut(message, MESSAGE_MAX)
            job.rate, job.updated_at = None, timezone.now()
            for field, value in changes.items():
                setattr(job, field, value)
            if not self.kind.engine:
                # A kind of our own waits for a dispatch loop to hand it over again
                # (an engine delivers its own task); its slot is free meanwhile.
                job.dispatched_at, job.slot = None, None
            job.seq += 1
            fields = dict.fromkeys([*BEHIND_FIELDS, *changes, "dispatched_at", "slot"])
            values = {field: getattr(job, field) for field in fields}
            if await Job.objects.release(job.pk, worker, values, status=status):
                self._finished = True
                job.worker, job.heartbeat_at = "", None
                await self._send()
                return True
            # Not given back: cancelled meanwhile (or ended elsewhere: the write below
            # then changes nothing, and says so).
            for field, value in before.items():
                setattr(job, field, value)
            job.cancel_requested = True
            await self._write_end(Status.CANCELLED, None, "")
            return False


def _retry_message(retrying: Retrying) -> str:
    if retrying.max_attempts is None:
        attempt = gettext("attempt %(attempt)s") % {"attempt": retrying.attempt}
    else:
        attempt = gettext("attempt %(attempt)s of %(most)s") % {
            "attempt": retrying.attempt,
            "most": retrying.max_attempts,
        }
    if retrying.delay is None or retrying.delay < 1:
        return gettext("Failed; retrying now (%(attempt)s)") % {"attempt": attempt}
    return gettext("Failed; retrying in %(seconds)s s (%(attempt)s)") % {
        "seconds": round(retrying.delay),
        "attempt": attempt,
    }


def _ended_stages(
    stages: list[dict[str, Any]], status: Status
) -> tuple[list[dict[str, Any]], float]:
    """The stages as the job ended: the one that was running is done (success) or
    says how the job ended there (failed, cancelled, interrupted); and the share
    done they add up to."""
    ending = "done" if status == Status.SUCCEEDED else str(status)
    ended = [
        {**stage, "status": ending, "fraction": 1.0 if ending == "done" else stage["fraction"]}
        if stage["status"] == "running"
        else stage
        for stage in stages
    ]
    return ended, round(stages_share(ended), 6)


def _json_ready(value: Any) -> Any:
    """The function's return value as the job's result: JSON, and small enough to go
    in every state the job sends from now on (``MAX_RESULT_BYTES``)."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"The job's result can't be stored as JSON: {exc}") from None
    size, limit = len(text.encode()), conf.get("MAX_RESULT_BYTES")
    if size > limit:
        raise ValueError(
            f"The job's result is {size} bytes of JSON, more than the {limit} it may take "
            "(MAX_RESULT_BYTES): attach large output as a file (progress.attach)"
        )
    return value
