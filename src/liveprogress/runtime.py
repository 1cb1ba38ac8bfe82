"""The per-process runtime: runner, hub and the loops that keep jobs truthful.

It starts on first use inside a running event loop (the server's), because
Daphne has no start-up hook: the first request or socket starts it, and its
start-up recovery runs before that request is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any

from channels.db import aclose_old_connections
from channels.layers import get_channel_layer
from django.utils import timezone

from . import bridge, conf
from .access import Gate
from .context import RuntimeContext
from .hub import Hub
from .launch import dispatch
from .models import ACTIVE_STATUSES, Job
from .notices import Courier
from .progress import JobContext
from .publish import (
    CANCEL_MESSAGE,
    LOGOUT_MESSAGE,
    PAUSE_MESSAGE,
    SHARE_REVOKED_MESSAGE,
    in_process,
    publish,
)
from .queueing import dispatch_due, keep_places
from .recovery import recover_dead_processes, sweep_stale, worker_id
from .runners import Dispatcher, InProcessRunner, dispatcher

logger = logging.getLogger(__name__)


class Runtime:
    """One event loop's engine: the runner, the dispatcher, the hub, the loops."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, adopts: bool = True) -> None:
        self.loop = loop
        # Whether this process starts again the retryable jobs of processes that died
        # (servers, the tasks runner's workers); another engine's worker only runs
        # the tasks its engine gives it.
        self.adopts = adopts
        self.worker = worker_id(secrets.token_hex(4))
        # Runs jobs in this process: those started here (inprocess) or claimed here (a
        # worker of the tasks runner).
        self.runner = InProcessRunner(
            self.worker, context_for=self._context_for, on_end=self.wake_dispatch
        )
        # Gets a new job running, per RUNNER: this process's runner, or a task queue.
        self.dispatcher = dispatcher(self.runner)
        self.hub = Hub()
        # Ends this process's sockets and streams whose session no longer stands.
        self.gate = Gate()
        # Sends the notices due (emails, webhook calls), from any process's jobs.
        self.courier = Courier(self.worker, loop)
        # Serialises cap checks and job creation in this process.
        self.admission = asyncio.Lock()
        self._loops: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[object]] = set()
        # Set to ask the dispatch loop for a round now rather than at its interval.
        self._dispatch_wanted = asyncio.Event()
        self.ready: asyncio.Task[None] = loop.create_task(
            self._start(), context=contextvars.Context()
        )

    async def _start(self) -> None:
        recovered = await recover_dead_processes(
            self.worker, self._adopting(), self.runner, alive=live_workers()
        )
        if recovered:
            logger.warning("start-up recovery interrupted=%d", recovered)
        await self.hub.start(on_control=self._control)
        self._every(conf.get("HEARTBEAT_INTERVAL"), self._heartbeat)
        self._every(conf.get("RECONCILE_INTERVAL"), self.hub.reconcile)
        self._every(conf.get("SESSION_CHECK_INTERVAL"), self.gate.check)
        self._every(conf.get("NOTICE_INTERVAL"), self.courier.deliver_due)
        if self._dispatches():
            # A first round before the first request is served: jobs re-queued above,
            # and those whose time came while no server ran, start now.
            await self.dispatch_round()
            self._loops.append(
                self.loop.create_task(self._dispatch_loop(), context=contextvars.Context())
            )

    def _dispatches(self) -> bool:
        """Whether this process hands waiting jobs over: a server, or a worker of the
        tasks runner; never another engine's worker, nor a command or a script on
        liveprogress's own loop (it would run them, then exit)."""
        return self.adopts and self.loop is not bridge.current_own_loop()

    def wake_dispatch(self) -> None:
        """Ask for a dispatch round now (a job waits, or a slot was freed)."""
        self._dispatch_wanted.set()

    async def _dispatch_loop(self) -> None:
        interval = conf.get("DISPATCH_INTERVAL")
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 a wait_for whose wait ends
            # as it is cancelled swallows the cancel, and a stopped runtime's loop
            # would go on handing jobs over to its stopped runner.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._dispatch_wanted.wait()
            self._dispatch_wanted.clear()
            try:
                await self.dispatch_round()
            except Exception:
                logger.warning("dispatch round failed", exc_info=True)
                await aclose_old_connections()
                await asyncio.sleep(interval)

    async def dispatch_round(self) -> None:
        """Hand over the waiting jobs that are due and have a slot; keep the line."""
        for job in await dispatch_due(self.dispatcher.prepare):
            await publish(job)
            await dispatch(self.dispatcher, job)
        await keep_places()

    def _adopting(self) -> Dispatcher | None:
        """The dispatcher that starts dead processes' retryable jobs again, if this
        process adopts them (without one, a sweep leaves them to a process that does)."""
        return self.dispatcher if self.adopts else None

    def _context_for(self, job: Job) -> JobContext:
        """A job's files and children, started through this runtime."""
        return RuntimeContext(job, self, self.runner, self.loop)

    def _control(self, message: dict[str, Any]) -> None:
        """A control broadcast: act on it if the job runs here (and it names us); a
        logout ends the session's connections here, a revoked share link its streams."""
        if message["type"] == LOGOUT_MESSAGE:
            self.gate.logged_out(message["session"])
            return
        if message["type"] == SHARE_REVOKED_MESSAGE:
            self.gate.share_revoked(message["share"])
            return
        execution = self.runner.executions.get(message["job"])
        if execution is None or message.get("worker") not in ("", None, self.worker):
            return
        if message["type"] == CANCEL_MESSAGE:
            if execution.progress.cancelled:
                return
            work: Coroutine[Any, Any, object] = execution.cancel()
        elif message["type"] == PAUSE_MESSAGE:
            work = execution.pause()
        else:
            work = execution.stop_as_ended_elsewhere()
        task = self.loop.create_task(work, context=contextvars.Context())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _heartbeat(self) -> None:
        await self.runner.heartbeat()
        if await sweep_stale(self._adopting(), self.runner):
            self.wake_dispatch()
        await warn_if_layer_misses_other_processes()

    def _every(self, seconds: float, work: Callable[[], Awaitable[None]]) -> None:
        async def repeat() -> None:
            while True:
                await asyncio.sleep(seconds)
                try:
                    await work()
                except Exception:
                    # A database or layer hiccup must not end the loop for good; a
                    # broken database connection is dropped so the next try reconnects.
                    logger.warning("periodic %s failed", work.__qualname__, exc_info=True)
                    await aclose_old_connections()

        self._loops.append(self.loop.create_task(repeat(), context=contextvars.Context()))

    async def stop(self) -> None:
        """Stop the loops and the jobs of this process (tests, clean shutdown)."""
        for task in self._loops:
            task.cancel()
        # Ended before the runner stops: none hands a job over to a stopped runner.
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self.runner.stop()
        await self.courier.stop()
        await self.hub.stop()


#: Set once the warning below was logged: it is logged once per process.
_warned_other_process = False


async def warn_if_layer_misses_other_processes() -> None:
    """Warn, once, if another live process runs jobs while the channel layer is
    in-memory: it can't carry their states here, nor cancels there (the runtime
    view of the liveprogress.E002 check, for any runner and any server)."""
    global _warned_other_process
    if _warned_other_process or not in_process(get_channel_layer()):
        return
    cutoff = timezone.now() - timedelta(seconds=conf.get("STALE_AFTER"))
    # This process's runtimes share the in-memory layer: only other pids count.
    here = f"{socket.gethostname()}:{os.getpid()}:"
    worker = await (
        Job.objects.filter(status__in=ACTIVE_STATUSES, heartbeat_at__gte=cutoff)
        .exclude(worker="")
        .exclude(worker__startswith=here)
        .values_list("worker", flat=True)
        .afirst()
    )
    if worker is None:
        return
    _warned_other_process = True
    pid = worker.split(":")[1] if worker.count(":") >= 2 else worker
    logger.warning(
        "liveprogress: jobs run in another process (pid %s) but the channel layer is "
        "in-memory: their states reach this process only through the database every "
        "RECONCILE_INTERVAL (%s s) and cancels take as long; configure channels_redis",
        pid,
        conf.get("RECONCILE_INTERVAL"),
    )


# One runtime per event loop: the server's, and in a process without one,
# liveprogress's own (bridge.py). Runtimes of loops that closed are forgotten.
_runtimes: dict[asyncio.AbstractEventLoop, Runtime] = {}


async def get_runtime(*, adopts: bool = True) -> Runtime:
    """The runtime of the running loop, started on it if it is not yet (``adopts``:
    see :class:`Runtime`; only for the one started now)."""
    loop = asyncio.get_running_loop()
    for closed in [other for other in _runtimes if other.is_closed()]:
        del _runtimes[closed]
    runtime = _runtimes.get(loop)
    if runtime is None or _failed(runtime.ready):
        runtime = _runtimes[loop] = Runtime(loop, adopts=adopts)
    await asyncio.shield(runtime.ready)
    return runtime


def current_runtime() -> Runtime | None:
    """The running loop's runtime if it has been started (none is started here)."""
    return _runtimes.get(asyncio.get_running_loop())


def live_workers() -> set[str]:
    """The worker ids of this process's runtimes whose loops still run."""
    return {runtime.worker for loop, runtime in _runtimes.items() if not loop.is_closed()}


def _failed(task: asyncio.Task[None]) -> bool:
    # A start-up that failed (the database was away) is tried again on next use.
    return task.done() and (task.cancelled() or task.exception() is not None)


async def stop_runtime() -> None:
    """Stop and forget the running loop's runtime, if any."""
    runtime = _runtimes.pop(asyncio.get_running_loop(), None)
    if runtime is not None:
        await runtime.stop()


async def run_in_worker(job_id: str) -> None:
    """A task queue's worker runs the job ``job_id`` to its end, in a runtime of its
    own: if it claims the job (not one ended while queued, or claimed by another
    worker); the runtime stops afterwards."""
    runtime = await get_runtime()
    try:
        if not await Job.objects.claim(job_id, runtime.worker):
            logger.info("job not run: ended or claimed elsewhere job=%s", job_id)
            return
        job = await Job.objects.aget(pk=job_id)
        runtime.runner.submit(job)
        await runtime.runner.wait(job_id)
    finally:
        await stop_runtime()
