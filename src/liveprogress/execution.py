"""Running one job: call its function, publish and persist its progress, end it.

The same execution serves every runner: in-process it runs on the server's
event loop, and a worker process would run it on its own.

A running job's progress is published first and written behind it: the
process's :class:`WriteBehind` writes every job with unwritten progress in one
bulk ``UPDATE`` per ``PERSIST_INTERVAL``. Status changes, final states, and a
state that would leave the database more than ``UNPERSISTED_SEQ_WINDOW`` states
behind are written by the execution itself before they are published.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import aclose_old_connections
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone, translation

from . import conf, files
from .exceptions import JobCancelled
from .models import ACTIVE_STATUSES, UNPERSISTED_SEQ_WINDOW, Job, JobLog, Status
from .progress import JobContext, LogLine, Progress, ProgressSnapshot, stages_share
from .publish import publish, publish_log
from .registry import JobKind
from .state import job_state

logger = logging.getLogger(__name__)

# The ETA comes from the progress rate over this many recent seconds, not since the
# start, so it follows a job that speeds up or slows down.
ETA_WINDOW_S = 10.0

# Waits between tries to write a final state while the database is away (~1 min).
_FINAL_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)

# What a running state written behind may change: never its status (written first).
_BEHIND_FIELDS = [
    "current",
    "total",
    "fraction",
    "stages",
    "rate",
    "files",
    "message",
    "eta_s",
    "seq",
    "updated_at",
]
# What a write before publishing (a status change, the window) changes.
_PROGRESS_FIELDS = ["status", "started_at", *_BEHIND_FIELDS]
_FINAL_FIELDS = [*_PROGRESS_FIELDS, "result", "error", "finished_at"]


class WriteBehind:
    """Writes the progress of this process's running jobs behind their publishing:
    every job with unwritten progress in one bulk ``UPDATE`` (one transaction, one
    executor call) per ``PERSIST_INTERVAL``, instead of one ``UPDATE`` per job."""

    def __init__(self) -> None:
        # Executions with progress to write, in the order they asked (a dict as a set).
        self._dirty: dict[Execution, None] = {}
        self._task: asyncio.Task[None] | None = None

    def mark(self, execution: Execution) -> None:
        """Write ``execution``'s progress within ``PERSIST_INTERVAL``."""
        self._dirty[execution] = None
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), context=contextvars.Context()
            )

    async def _run(self) -> None:
        interval = conf.get("PERSIST_INTERVAL")
        while self._dirty:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception:
                # The database is away: the jobs stay dirty; each one still writes
                # itself before it would go past the window.
                logger.warning("writing progress failed jobs=%d", len(self._dirty), exc_info=True)
                await aclose_old_connections()

    async def flush(self) -> None:
        """Write every marked job's progress now, in one executor call."""
        dirty, self._dirty = self._dirty, {}
        # Rows are taken here, on the loop, so each is one published state, whole.
        batch = [(execution, execution._unwritten_row()) for execution in dirty]
        rows = [(execution, row) for execution, row in batch if row is not None]
        if not rows:
            return
        try:
            ended = await sync_to_async(_write_rows, thread_sensitive=True)(
                [row for _, row in rows]
            )
        except BaseException:
            for execution, _ in rows:
                self._dirty.setdefault(execution)
            raise
        for execution, row in rows:
            execution._written(row.values["seq"], ended=row.pk in ended)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


@dataclass(frozen=True)
class _Row:
    """A running job's progress to write behind, as it was published."""

    pk: Any
    values: dict[str, Any]
    cancel_requested: bool


def _write_rows(rows: list[_Row]) -> set[Any]:
    """Write running jobs' progress in one transaction; returns the ids of those
    that ended meanwhile (left as they are).

    One prepared ``UPDATE`` per job, sent as one ``executemany``: each keeps the
    conditions of a job's own write (only while active; ``cancel_requested`` only
    ever set). ``QuerySet.bulk_update`` would be one statement, but its
    ``CASE WHEN`` per field and row took 1.5 s for 1,000 jobs on SQLite.
    """
    meta, quote = Job._meta, connection.ops.quote_name
    fields = [meta.get_field(name) for name in _BEHIND_FIELDS]
    table, pk, status, cancel = (
        quote(name)
        for name in (
            meta.db_table,
            meta.pk.column,
            meta.get_field("status").column,
            meta.get_field("cancel_requested").column,
        )
    )
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    active = ", ".join(["%s"] * len(ACTIVE_STATUSES))
    # Only the model's own names go into the text, quoted; every value is a parameter.
    sql = f"UPDATE {table} SET {assignments}, {cancel} = ({cancel} OR %s) WHERE "  # noqa: S608
    sql += f"{pk} = %s AND {status} IN ({active})"
    params = [
        [
            *(field.get_db_prep_value(row.values[field.name], connection) for field in fields),
            row.cancel_requested,
            meta.pk.get_db_prep_value(row.pk, connection),
            *ACTIVE_STATUSES,
        ]
        for row in rows
    ]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)
            if cursor.rowcount == len(rows):
                return set()
        ids = [row.pk for row in rows]
        return set(
            Job.objects.filter(pk__in=ids)
            .exclude(status__in=ACTIVE_STATUSES)
            .values_list("pk", flat=True)
        )


#: How a sync job function is called: given the call, awaits its value.
SyncCaller = Callable[[Callable[[], Any]], Awaitable[Any]]


class Execution:
    """One run of one job; :meth:`run` returns once the job has ended and said so.

    ``context`` is what the job may do beyond its progress (files, children);
    ``call_sync`` how a sync function is called (by default in ``executor``'s
    threads; liveprogress.testing calls it in the test's own thread).
    """

    def __init__(
        self,
        job: Job,
        kind: JobKind,
        *,
        writer: WriteBehind,
        executor: Executor | None = None,
        on_publish: Callable[[Job], None] | None = None,
        context: JobContext | None = None,
        call_sync: SyncCaller | None = None,
    ) -> None:
        self.job = job
        self.kind = kind
        self.progress = Progress(
            self._changed,
            log_seq=job.log_seq,
            log_limit=conf.get("LOG_LIMIT"),
            context=context or self,
        )
        self._call_sync_with = call_sync or self._in_executor
        self.on_publish = on_publish
        #: Called with each batch of log lines once stored (the CLI prints them).
        self.on_log: Callable[[list[dict[str, Any]]], None] | None = None
        self._writer = writer
        self._executor = executor
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._dirty = asyncio.Event()
        self._wake_pending = False
        self._publish_lock = asyncio.Lock()
        # What the database holds of this job, as far as this execution wrote it.
        self._persisted_seq = job.seq
        self._persisted_status = job.status
        # (monotonic time, share done, innermost count) over the ETA window; reset
        # when the counter changes meaning (a new stage, a new total).
        self._samples: deque[tuple[float, float, int]] = deque()
        self._sampled: tuple[Any, ...] = ()
        self._thread_started = False
        self._function_done = False
        self._started_at: Any = None
        self._finished = False
        self.ended_elsewhere = False

    # -- running -----------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        publisher = self._loop.create_task(self._publish_loop())
        status, result, error = Status.FAILED, None, ""
        shutdown = False
        try:
            if self.kind.is_async:
                self._mark_started()
                value = await self._call_async()
            else:
                value = await self._call_sync_with(self._call_sync)
            status, result = Status.SUCCEEDED, _json_ready(value)
        except (JobCancelled, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and self._task is not None:
                self._task.uncancel()
            if self.progress.cancelled:
                status = Status.CANCELLED
            else:
                # Cancelled by the server's shutdown, not by anyone's request.
                status, error, shutdown = Status.INTERRUPTED, "The server stopped", True
        except Exception as exc:
            logger.warning("job failed job=%s kind=%s", self.job.id, self.kind.name, exc_info=True)
            error = str(exc) or type(exc).__name__
        finally:
            # From here on, nothing cancels this task: its ending must be written.
            self._function_done = True
            publisher.cancel()
        # Shielded: a shutdown that cancels the runner still lets the ending be written.
        await asyncio.shield(self._finish(status, result, error))
        if shutdown:
            raise asyncio.CancelledError

    async def _call_async(self) -> Any:
        with translation.override(self.job.language or settings.LANGUAGE_CODE):
            return await self.kind.function(self.progress, **self.job.params)

    def _call_sync(self) -> Any:
        # The check and the mark are one step under the lock that cancel() takes,
        # so a cancel either stops the job before it starts or is seen by it.
        with self.progress._lock:
            self.progress._check_cancelled()
            self._thread_started = True
        self._mark_started()
        with translation.override(self.job.language or settings.LANGUAGE_CODE):
            return self.kind.function(self.progress, **self.job.params)

    async def _in_executor(self, call: Callable[[], Any]) -> Any:
        def in_thread() -> Any:
            try:
                return call()
            finally:
                # The thread's connection outlives the job otherwise.
                close_old_connections()

        return await asyncio.get_running_loop().run_in_executor(self._executor, in_thread)

    def _mark_started(self) -> None:
        self._started_at = timezone.now()
        self._changed()

    async def cancel(self) -> Job:
        """Ask the job to stop; returns its state with the request published."""
        if self._finished or self.ended_elsewhere:
            # Its ending is written (or someone else's is): a cancel changes nothing,
            # and must not mark the final state it answers with.
            return self.job
        self._stop_function()
        self.job.cancel_requested = True
        await self._publish()
        return self.job

    async def end_elsewhere(self) -> None:
        """Someone else ended this job (a sweep, a cancel while queued): stop running
        and publishing it; returns once no publish of it is under way."""
        self._ended_elsewhere()
        async with self._publish_lock:
            pass

    def _ended_elsewhere(self) -> None:
        self.ended_elsewhere = True
        self._stop_function()

    def _stop_function(self) -> None:
        """Make the job's function stop: once, and only while it runs."""
        with self.progress._lock:
            already = self.progress.cancelled
            self.progress.request_cancel()
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
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._dirty.set()
        else:
            self._loop.call_soon_threadsafe(self._dirty.set)

    async def _publish_loop(self) -> None:
        interval = conf.get("PUBLISH_INTERVAL")
        while True:
            await self._dirty.wait()
            try:
                # Shielded: when the function ends, this loop is cancelled, but a
                # publish under way finishes first (it may hold log lines it took
                # from the Progress); the ending waits for it on the lock.
                await asyncio.shield(self._publish())
                await asyncio.sleep(interval)
            except Exception:
                # The database is away: the job goes on, its state waits (it may not
                # be published further than the window past what is written).
                logger.warning("persisting failed job=%s; retrying", self.job.id, exc_info=True)
                await aclose_old_connections()
                await asyncio.sleep(max(interval, 1.0))
                self._changed()

    async def _publish(self) -> None:
        async with self._publish_lock:
            if self._finished or self.ended_elsewhere:
                return
            self._dirty.clear()
            self._wake_pending = False
            job = self.job
            await self._publish_logs()
            self._apply(self.progress.snapshot())
            job.seq += 1
            # Written before it is published: a status change, and a state that
            # would leave the database more than the window behind. The rest is
            # published at once and written behind.
            if (
                job.status != self._persisted_status
                or job.seq - self._persisted_seq >= UNPERSISTED_SEQ_WINDOW
            ):
                try:
                    written = await self._persist(_PROGRESS_FIELDS)
                except BaseException:
                    job.seq -= 1  # not published: the next state takes its seq
                    raise
                if not written:
                    return
            else:
                self._writer.mark(self)
            await self._send()

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
        job.updated_at = now
        job.eta_s, job.rate = self._eta(snapshot)

    def _eta(self, snapshot: ProgressSnapshot) -> tuple[float | None, float | None]:
        """Seconds left and units per second, from the window's first and last samples."""
        if snapshot.fraction is not None:
            share: float | None = snapshot.fraction
        elif snapshot.total is not None:
            share = min(snapshot.current / snapshot.total, 1.0) if snapshot.total else 1.0
        else:
            share = None
        running = [stage["name"] for stage in snapshot.stages if stage["status"] == "running"]
        meaning = (tuple(running), snapshot.total)
        now = time.monotonic()
        samples = self._samples
        if meaning != self._sampled:
            # Counts from another stage or total don't make a rate with these.
            samples.clear()
            self._sampled = meaning
        samples.append((now, share or 0.0, snapshot.current))
        while len(samples) > 2 and now - samples[0][0] > ETA_WINDOW_S:
            samples.popleft()
        if len(samples) < 2:
            return None, None
        (t0, s0, c0), (t1, s1, c1) = samples[0], samples[-1]
        if t1 - t0 <= 0:
            return None, None
        rate = round((c1 - c0) / (t1 - t0), 3) if c1 >= c0 else None
        if share is None or s1 <= s0:
            return None, rate
        return round(max(1.0 - s1, 0.0) / ((s1 - s0) / (t1 - t0)), 1), rate

    # -- log lines -----------------------------------------------------------------

    async def _publish_logs(self) -> None:
        """Write the lines logged since the last publish, then send them: a watcher
        that reconnects finds in the database every line it was sent."""
        lines, dropped_through = self.progress.take_logs()
        if not lines:
            return
        job = self.job
        log_seq, log_dropped = await sync_to_async(_write_log, thread_sensitive=True)(
            job.pk, lines, dropped_through, conf.get("LOG_LIMIT")
        )
        job.log_seq, job.log_dropped = log_seq, log_dropped
        await publish_log(job, lines, dropped_through)
        if self.on_log is not None:
            self.on_log([line.as_wire() for line in lines])

    # -- files and children (the job's context, see progress.JobContext) -------------

    def store_file(self, name: str, content: bytes, content_type: str) -> dict[str, Any]:
        return files.store(self.job, name, content, content_type)

    async def spawn(self, kind: str, params: Any) -> str:
        from .actions import start_job

        child = await start_job(
            self.job.owner, kind, params, language=self.job.language, parent=self.job
        )
        return str(child.id)

    async def children_states(self) -> list[dict[str, Any]]:
        from .actions import list_children

        return [job_state(child) for child in await list_children(self.job)]

    async def _persist(self, fields: list[str]) -> bool:
        """Write the job if it is still active; False (and stop) if it ended elsewhere."""
        job = self.job
        values = {field: getattr(job, field) for field in fields}
        if job.cancel_requested:
            # Only ever set: a request made through another process stays in place.
            values["cancel_requested"] = True
        write = Job.objects.end if fields is _FINAL_FIELDS else Job.objects.write_running
        updated = await write(job.pk, values)
        self._persisted_seq = max(self._persisted_seq, values["seq"])
        self._persisted_status = values["status"]
        if not updated:
            logger.info("job ended elsewhere job=%s", job.id)
            self._ended_elsewhere()
        return updated

    def _unwritten_row(self) -> _Row | None:
        """The running state to write behind, or None if there is nothing to write."""
        job = self.job
        if self._finished or self.ended_elsewhere or job.seq <= self._persisted_seq:
            return None
        values = {field: getattr(job, field) for field in _BEHIND_FIELDS}
        return _Row(job.pk, values, job.cancel_requested)

    def _written(self, seq: int, *, ended: bool) -> None:
        """A write behind of state ``seq`` is done; ``ended``: the row had ended."""
        self._persisted_seq = max(self._persisted_seq, seq)
        if ended and not self._finished:
            logger.info("job ended elsewhere job=%s", self.job.id)
            self._ended_elsewhere()

    async def _send(self) -> None:
        await publish(self.job)
        if self.on_publish is not None:
            self.on_publish(self.job)

    async def _finish(self, status: Status, result: Any, error: str) -> None:
        """Persist the final state, then publish it: terminal states are never lost."""
        async with self._publish_lock:
            if self.ended_elsewhere:
                self._finished = True
                return
            job = self.job
            try:
                await self._publish_logs()
            except Exception:
                logger.warning("last log lines lost job=%s", job.id, exc_info=True)
            self._apply(self.progress.snapshot())
            now = timezone.now()
            job.status, job.result, job.error = status, result, error
            if job.stages:
                job.stages, job.fraction = _ended_stages(job.stages, status)
            job.finished_at, job.updated_at, job.eta_s, job.rate = now, now, None, None
            job.seq += 1
            self._finished = True
            for delay in (*_FINAL_RETRY_DELAYS, None):
                try:
                    persisted = await self._persist(_FINAL_FIELDS)
                    break
                except Exception:
                    if delay is None:
                        # Its heartbeat stops with it: a sweep ends it `interrupted`.
                        logger.error("final state lost job=%s status=%s", job.id, status)
                        return
                    logger.warning(
                        "final write failed job=%s; retrying in %s s", job.id, delay, exc_info=True
                    )
                    await aclose_old_connections()
                    await asyncio.sleep(delay)
            if persisted:
                await self._send()


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
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"The job's result can't be stored as JSON: {exc}") from None
    return value


def _write_log(
    job_id: Any, lines: list[LogLine], dropped_through: int, limit: int
) -> tuple[int, int]:
    """Store log lines, keep the newest ``limit``; returns (log_seq, log_dropped)."""
    with transaction.atomic():
        JobLog.objects.bulk_create(
            [
                JobLog(
                    job_id=job_id,
                    seq=line.seq,
                    level=line.level,
                    text=line.text,
                    created_at=datetime.fromtimestamp(line.at, tz=UTC),
                )
                for line in lines
            ]
        )
        log_seq = lines[-1].seq
        dropped = max(log_seq - limit, dropped_through)
        row = Job.objects.filter(pk=job_id).values_list("log_dropped", flat=True).first() or 0
        dropped = max(dropped, row)
        if dropped > row:
            JobLog.objects.filter(job_id=job_id, seq__lte=dropped).delete()
        Job.objects.filter(pk=job_id).update(log_seq=log_seq, log_dropped=dropped)
    return log_seq, dropped
