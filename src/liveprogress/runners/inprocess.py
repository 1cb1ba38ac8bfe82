"""The in-process runner: jobs run inside the server process that started them.

Async kinds run as tasks on the server's event loop; sync kinds in a bounded
thread pool shared fairly between owners (``threads.py``), so a blocking job
never blocks the loop, and one owner's jobs never hold every thread. The runner also keeps its
jobs' heartbeats, and stops a job that someone else ended or asked to cancel.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable

from django.utils import timezone

from .. import conf
from ..execution import Execution, RetryPolicy, SyncCaller, own_retries
from ..finalwrites import FinalWrites
from ..models import ACTIVE_STATUSES, Job
from ..progress import JobContext
from ..registry import JobKind, get_kind
from ..threads import FairThreads
from ..writebehind import WriteBehind

logger = logging.getLogger(__name__)

#: The longest a stopping runner waits for its jobs' endings to be written.
STOP_WAIT_S = 10.0


class InProcessRunner:
    """Runs jobs in this process; ``context_for`` gives each its context (files,
    children)."""

    def __init__(
        self,
        worker: str,
        *,
        context_for: Callable[[Job], JobContext],
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self.worker = worker
        self._context_for = context_for
        # Told when a job's run here ends (it may free a slot others wait for).
        self._on_end = on_end
        self.executions: dict[str, Execution] = {}
        # Sync functions run in these threads, shared fairly between owners.
        self.threads = FairThreads(conf.get("SYNC_WORKERS"), conf.get("MAX_SYNC_PER_OWNER"))
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # One bulk write per PERSIST_INTERVAL for the progress of every job here.
        self.writer = WriteBehind()
        # The final states of its jobs that end together, in one transaction.
        self.finals = FinalWrites()

    def prepare(self, job: Job) -> None:
        """Claim a new job for this process before it is saved (or a waiting one
        before it is handed over)."""
        job.worker = self.worker
        job.heartbeat_at = timezone.now()
        if job.paused_at is None:
            job.attempts += 1
        # A resumed job goes on with the attempt it paused in.
        job.paused_at = None

    async def dispatch(self, job: Job) -> None:
        """Run a saved job that :meth:`prepare` claimed."""
        self.submit(job)

    def submit(
        self,
        job: Job,
        *,
        kind: JobKind | None = None,
        call_sync: SyncCaller | None = None,
        will_retry: RetryPolicy | None = None,
    ) -> Execution:
        """Start running ``job`` (already saved and claimed) in this process.

        By default its registered kind runs in this runner's threads. Another
        engine's task passes its ``kind`` (the task's call), the ``call_sync`` that
        runs it in the engine worker's own thread, and whether the engine retries an
        error (``will_retry``).
        """
        kind = kind or get_kind(job.kind)
        execution = Execution(
            job,
            kind,
            writer=self.writer,
            context=self._context_for(job),
            call_sync=call_sync or (lambda call: self.threads.run(_fairness_key(job), call)),
            will_retry=will_retry or own_retries(kind, job),
            finals=self.finals,
        )
        job_id = str(job.id)
        self.executions[job_id] = execution
        # A fresh context: the job must not inherit the request that started it
        # (its thread-sensitive executor ends with the request).
        task = asyncio.get_running_loop().create_task(
            execution.run(), context=contextvars.Context()
        )
        self._tasks[job_id] = task

        def forget(_: asyncio.Task[None]) -> None:
            # Only its own entries: a re-queued job may already run here again.
            if self._tasks.get(job_id) is task:
                del self._tasks[job_id]
                del self.executions[job_id]
            if self._on_end is not None:
                self._on_end()

        task.add_done_callback(forget)
        return execution

    async def wait(self, job_id: str) -> None:
        """Return once the job ``job_id`` running here has ended (at once if none)."""
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.shield(task)

    def newest(self, job: Job) -> Job:
        """``job``, or its state held live here when it runs here and is newer (the
        database lags the live state by up to the window)."""
        execution = self.executions.get(str(job.id))
        if execution is not None and job.is_active and execution.job.seq > job.seq:
            return execution.job
        return job

    async def children(self, job: Job) -> list[Job]:
        """The children ``job`` started, oldest first, live where they run here."""
        found = Job.objects.filter(parent_id=job.pk).order_by("created_at")
        return [self.newest(child) async for child in found]

    async def heartbeat(self) -> None:
        """Mark this process's jobs alive; act on cancels and ends decided elsewhere."""
        ids = list(self.executions)
        if not ids:
            return
        await Job.objects.heartbeat(ids)
        rows = Job.objects.filter(pk__in=ids).values_list(
            "id", "status", "cancel_requested", "pause_requested"
        )
        async for job_id, status, cancel_requested, pause_requested in rows:
            execution = self.executions.get(str(job_id))
            if execution is None:
                continue
            if status not in ACTIVE_STATUSES:
                await execution.stop_as_ended_elsewhere()
            elif cancel_requested and not execution.progress.cancelled:
                await execution.cancel()
            elif pause_requested and not execution.progress.pausing:
                await execution.pause()

    async def stop(self) -> None:
        """Stop this process's jobs (each ends `interrupted`) and what runs them,
        once their endings are written (at most ``STOP_WAIT_S``: a database that is
        away leaves the rest to a sweep)."""
        tasks = list(self._tasks.values())
        executions = list(self.executions.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # A cancel reaches a run, not its ending (shielded): wait for those under way.
        endings = [run.ending for run in executions if run.ending and not run.ending.done()]
        if endings:
            await asyncio.wait(endings, timeout=STOP_WAIT_S)
        self.writer.close()
        self.threads.shutdown()


def _fairness_key(job: Job) -> str:
    """Whose turn a sync job takes: its owner's, or for visitors who are not signed in
    (a session costs nothing to make) their client address's."""
    return f"address:{job.address}" if job.address else job.owner
