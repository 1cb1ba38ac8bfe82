"""What the engine adapters share: a task's job made when it is enqueued, and its
run in the engine's worker.

**Enqueue side** (:meth:`TaskJobs.astart`): the job is validated, checked
against the caps, saved `queued` and published like any start; then the
adapter's ``send`` puts the engine's message on its queue, carrying the job's id.
An engine that refuses the message leaves the job `failed`, saying why, and the
error reaches the caller as the engine raised it.

**Worker side** (:meth:`TaskJobs.run`): the worker claims the job, so a task
whose job was cancelled while queued never runs, and a job runs once even when
its engine delivers the message twice. The task's function then runs **in the
worker's own thread** (its engine's time limits, signals and retries act on it
as they always do), while the job's publisher, heartbeat and control run on
liveprogress's loop in this process (``bridge.own_loop``): the same execution
as a job of liveprogress's own, with every guarantee of the protocol. An error
the engine will retry gives the job back to the queue as the next attempt
(``attempt 2 of 3``); the worker killed mid-task stops the heartbeat, and a
server's sweep ends the job `interrupted` within ``STALE_AFTER`` plus a
heartbeat. A message delivered again after that (an engine that redelivers the
tasks of dead workers) reopens the job as a new attempt.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

from asgiref.sync import sync_to_async
from django.db import IntegrityError
from django.utils.functional import Promise
from django.utils.translation import gettext

from .. import bridge, conf
from ..exceptions import JobCancelled
from ..execution import Retrying, RetryPolicy
from ..handles import JobHandle
from ..launch import end_unclaimed, launch, new_job
from ..models import ACTIVE_STATUSES, Job, Status
from ..owner import astarter_of, is_client
from ..progress import Progress
from ..publish import publish
from ..recovery import sweep_stale
from ..registry import JobFunction, register_task
from ..runners import Dispatcher
from ..runtime import get_runtime, stop_runtime
from ..signals import send_retried

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Sends the engine's message for the job whose id it is given; returns what the
#: engine's send returned (its AsyncResult, Message, TaskResult...).
Send = Callable[[str], Any]

#: The biggest rendering of a task's arguments kept in its job's ``params`` (bytes
#: of JSON); larger arguments are kept as a note of their size.
PARAMS_MAX_BYTES = 4096

_progress: contextvars.ContextVar[Progress | None] = contextvars.ContextVar(
    "liveprogress_task_progress", default=None
)
# The tasks that hand a run's end to its worker thread: held until they are done.
_watchers: set[asyncio.Task[None]] = set()


def current_progress() -> Progress:
    """The :class:`~liveprogress.progress.Progress` of the task running in this
    thread; a ``RuntimeError`` outside of one."""
    progress = _progress.get()
    if progress is None:
        raise RuntimeError(
            "No liveprogress task runs here: current_progress() is for the body of a "
            "task run by its engine's worker"
        )
    return progress


@contextmanager
def reporting_to(progress: Progress) -> Iterator[Progress]:
    """Make ``progress`` this thread's :func:`current_progress` while the block runs."""
    token = _progress.set(progress)
    try:
        yield progress
    finally:
        _progress.reset(token)


def job_id_of(engine_id: Any) -> str | None:
    """The job id an engine's id for a task names, or None if it names none. Celery's
    task id, RQ's job id and Dramatiq's message id of a task sent through an adapter
    are the job's id itself."""
    try:
        return str(uuid.UUID(str(engine_id)))
    except ValueError:
        return None


def params_of(args: Any, kwargs: Any) -> dict[str, Any]:
    """A task's arguments as its job keeps them (shown in the admin): JSON, values
    JSON can't hold by their ``repr``, and only a note of their size when large."""
    text = json.dumps({"args": list(args or ()), "kwargs": dict(kwargs or {})}, default=repr)
    if len(text.encode()) > PARAMS_MAX_BYTES:
        return {"note": f"{len(text.encode())} bytes of arguments, not kept"}
    kept: dict[str, Any] = json.loads(text)
    return kept


class _Sender:
    """The dispatcher of a task's job: the engine's own enqueue (in a thread: engines
    send over the network, blocking). ``value`` keeps what the send returned,
    ``error`` what the engine raised."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.value: Any = None
        self.error: BaseException | None = None

    def prepare(self, job: Job) -> None:
        """Nothing: the worker that takes the message claims the job."""

    async def dispatch(self, job: Job) -> None:
        try:
            self.value = await sync_to_async(self.send, thread_sensitive=False)(str(job.id))
        except BaseException as exc:
            self.error = exc
            raise


@dataclasses.dataclass(frozen=True)
class Sent:
    """A task sent with its job: the job's handle, and what the engine's send
    returned (its own handle on the task, for the engine's API)."""

    handle: JobHandle
    value: Any


@dataclasses.dataclass
class _Launch:
    """A launcher (``launch.Launcher``): the process's admission, the engine's send."""

    admission: asyncio.Lock
    dispatcher: Dispatcher

    def wake_dispatch(self) -> None:
        """Nothing: a task's job never waits for the dispatch loop (its engine
        queues it)."""


class _InWorkerThread:
    """Runs a job's function in the engine worker's thread waiting in :meth:`serve`,
    for the job's execution on liveprogress's loop (:meth:`call` is its
    ``SyncCaller``).

    The engine's retry policy is asked there too, as the error is raised: an
    engine's state of the running task (Celery's request) is the worker thread's.
    A worker thread that leaves before serving (a time limit, a signal while the
    claim waited) :meth:`abandon` s it: the call then fails, and the job ends
    instead of staying claimed by a process that heartbeats it for ever.
    """

    def __init__(self, will_retry: RetryPolicy | None) -> None:
        self._will_retry = will_retry
        self._calls: queue.SimpleQueue[
            tuple[Callable[[], Any], asyncio.Future[Any], asyncio.AbstractEventLoop] | None
        ] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._abandoned = False
        #: What the task's body returned, as the engine gets it (the job keeps
        #: :func:`storable_result` of it).
        self.result: Any = None
        self.error: BaseException | None = None
        self._retrying: Retrying | None = None

    async def call(self, call: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if self._abandoned:
                raise RuntimeError("The worker stopped the task before it began")
            self._calls.put((call, done, loop))
        return await done

    def retrying_after(self, error: BaseException) -> Retrying | None:
        """The execution's retry policy: the one asked in the worker thread."""
        return self._retrying if error is self.error else None

    def finish(self) -> None:
        """The execution has ended (its final state written): :meth:`serve` returns."""
        self._calls.put(None)

    def abandon(self) -> None:
        """No worker thread will serve: a call waiting, or to come, fails."""
        with self._lock:
            self._abandoned = True
            while True:
                try:
                    item = self._calls.get_nowait()
                except queue.Empty:
                    return
                if item is not None:
                    _call, done, loop = item
                    stopped = RuntimeError("The worker stopped the task before it began")
                    loop.call_soon_threadsafe(_settle, done, None, stopped)

    def serve(self) -> None:
        while (item := self._calls.get()) is not None:
            call, done, loop = item
            try:
                value = call()
            except BaseException as exc:
                self.error = exc
                self._retrying = _ask(self._will_retry, exc)
                loop.call_soon_threadsafe(_settle, done, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, done, value, None)


def _ask(will_retry: RetryPolicy | None, error: BaseException) -> Retrying | None:
    """The engine's retry after ``error``, asked in the worker's thread, where the
    engine keeps the running task's state; a policy that fails means no retry."""
    if will_retry is None or not isinstance(error, Exception):
        return None
    try:
        return will_retry(error)
    except Exception:
        logger.warning("retry policy failed; not retried", exc_info=True)
        return None


def storable_result(value: Any) -> Any:
    """What the job keeps of a task's return value: the value itself when it is JSON
    of at most ``MAX_RESULT_BYTES``; else its ``repr``, or a note of its size. An
    engine carries values a job can't hold (pickled, or large): the task still
    succeeded, and its engine still gets the value."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text, value = json.dumps(repr(value), ensure_ascii=False), repr(value)
    size = len(text.encode())
    if size > conf.get("MAX_RESULT_BYTES"):
        return {"note": f"a result of {size} bytes, not kept"}
    return value


def _settle(done: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(value)
    elif isinstance(error, Exception):
        done.set_exception(error)
    else:
        # The worker itself is stopping (SystemExit, a signal): the job was cut off.
        done.cancel()


class AttachedRun:
    """A task that met liveprogress only once running (celery-progress's recorder is
    made inside the body), reported as its job from there to :meth:`finish`.

    Its execution's function is :meth:`body`, which hands over the Progress and
    waits, in a thread of its own, for the task's end that :meth:`finish` tells
    from the worker's thread (which asks the engine's retry policy there).
    """

    def __init__(self, will_retry: RetryPolicy | None) -> None:
        self.progress: Progress | None = None
        self._will_retry = will_retry
        self._retrying: Retrying | None = None
        self._ready = threading.Event()
        self._outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._ended: Callable[[], None] = lambda: None

    def body(self, progress: Progress, **_params: Any) -> Any:
        self.progress = progress
        self._ready.set()
        return storable_result(self._outcome.result())

    def wait_started(self) -> Progress | None:
        """The job's Progress once its execution has started (None: it ended first,
        cancelled before it began)."""
        self._ready.wait()
        return self.progress

    def follow(self, ended: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """On the loop, once the execution runs: ``ended()`` returns when it has."""
        self._ended = lambda: bridge.call(ended)
        watcher = asyncio.get_running_loop().create_task(ended())
        # A cancel before the body began ends the run without it: stop waiting then.
        watcher.add_done_callback(lambda _: self._ready.set())
        _watchers.add(watcher)
        watcher.add_done_callback(_watchers.discard)

    def retrying_after(self, error: BaseException) -> Retrying | None:
        """The execution's retry policy: the one asked in the worker thread."""
        return self._retrying

    def finish(self, value: Any = None, error: BaseException | None = None) -> None:
        """The task ended with ``value``, or ``error``: end the job the same way, and
        return once its final state (or its retry) is written."""
        if error is None:
            self._outcome.set_result(value)
        else:
            self._retrying = _ask(self._will_retry, error)
            self._outcome.set_exception(error)
        self._ended()


async def _in_a_thread_of_its_own(call: Callable[[], Any]) -> Any:
    # An attached run's function only waits for the task's end, as long as the task
    # runs: a thread of its own, not one of the loop's few shared ones.
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def wait() -> None:
        try:
            value = call()
        except BaseException as exc:
            loop.call_soon_threadsafe(_settle, done, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, done, value, None)

    threading.Thread(target=wait, name="liveprogress-attached", daemon=True).start()
    return await done


#: What a worker's claim found: run the job, leave it (ended, or another worker's),
#: or no job at all (the message came without one: run the task unreported).
Claim = Literal["run", "ended", "missing"]


class TaskJobs:
    """One task of an engine, as liveprogress knows it: its job kind (``engine:name``)
    and the two sides of its jobs. Each adapter holds one per task."""

    def __init__(
        self,
        engine: str,
        name: str,
        function: JobFunction,
        *,
        title: str | Promise | None = None,
        revoke: Callable[[str], None] | None = None,
    ) -> None:
        self.kind = register_task(engine, name, function, title=title, revoke=revoke)

    # -- enqueue side ------------------------------------------------------------------

    async def asend(
        self,
        owner: Any,
        send: Send,
        *,
        params: dict[str, Any],
        job_id: str | None = None,
        max_attempts: int | None = None,
    ) -> Sent:
        """Make the task's job for ``owner`` (a request, a user or an owner key), then
        ``send`` the engine's message with its id; the job's handle and what ``send``
        returned. ``job_id``: the id the engine gave the task already (a canvas's),
        else a new one.

        The caps apply to a person's start (``LimitReached``, and nothing is sent),
        not to a send of the site's own code (see below). What the engine raises
        while sending is raised here, the job left `failed`.
        """
        starter = await astarter_of(owner)
        job = new_job(
            starter.owner,
            self.kind,
            params,
            language=starter.language,
            address=starter.address,
        )
        if job_id is not None:
            job.id = uuid.UUID(job_id)
        job.max_attempts = max_attempts
        sender = _Sender(send)
        runtime = await get_runtime()
        # The caps are for what clients start (a request's user or session); a task
        # the site's code sends for itself (`delay`, a system owner) is its engine's
        # to admit: a backlog of them must not refuse the next one.
        capped = is_client(starter.owner)
        await launch(_Launch(runtime.admission, sender), job, capped=capped)
        if sender.error is not None:
            raise sender.error
        return Sent(JobHandle.of(job), sender.value)

    def send(
        self,
        owner: Any,
        send: Send,
        *,
        params: dict[str, Any],
        job_id: str | None = None,
        max_attempts: int | None = None,
    ) -> Sent:
        """:meth:`asend` for sync code."""
        return bridge.call(
            lambda: self.asend(owner, send, params=params, job_id=job_id, max_attempts=max_attempts)
        )

    # -- worker side -------------------------------------------------------------------

    def run(
        self,
        job_id: str | None,
        call: Callable[[Progress], T],
        *,
        will_retry: RetryPolicy | None = None,
        own_runtime: bool = False,
    ) -> T | None:
        """Run the task's body ``call`` as job ``job_id``, in this (the worker's)
        thread; its value, or None when the job was cancelled or had ended.

        Without a ``job_id`` (the task called directly, or sent by code that knows
        nothing of liveprogress), ``call`` gets a Progress that reports nowhere. An
        error of ``call`` is raised again here, for the engine to handle, after the
        job's end (or its retry, ``will_retry``) is written and published.
        ``own_runtime``: the worker process runs only this task (RQ's forked
        horse); liveprogress's runtime in it stops with the task.
        """
        if job_id is None:
            return _unreported(call)
        thread = _InWorkerThread(will_retry)
        served = False
        try:
            claim = bridge.call(lambda: self._begin(job_id, call, thread))
            if claim == "missing":
                logger.warning("task run without its job kind=%s job=%s", self.kind.name, job_id)
                return _unreported(call)
            if claim == "ended":
                return None
            thread.serve()
            served = True
        finally:
            if not served:
                thread.abandon()
            if own_runtime:
                bridge.call(stop_runtime)
        if thread.error is not None:
            if isinstance(thread.error, JobCancelled):
                return None
            raise thread.error
        value: T = thread.result
        return value

    async def _begin(
        self,
        job_id: str,
        call: Callable[[Progress], Any],
        thread: _InWorkerThread,
    ) -> Claim:
        """Claim the job and start its execution on this loop, its function called in
        ``thread``; what the claim found."""
        runtime = await get_runtime(adopts=False)
        claim = await _claim(job_id, runtime.worker)
        if claim != "run":
            return claim
        job = await Job.objects.aget(pk=job_id)

        def body(progress: Progress, **_params: Any) -> Any:
            # The task's own arguments reach it from its engine (``call`` holds them);
            # the job's params are only their rendering.
            with reporting_to(progress):
                thread.result = call(progress)
            return storable_result(thread.result)

        kind = dataclasses.replace(self.kind, function=body)
        runtime.runner.submit(
            job, kind=kind, call_sync=thread.call, will_retry=thread.retrying_after
        )

        async def release_thread() -> None:
            try:
                await runtime.runner.wait(job_id)
            finally:
                thread.finish()

        watcher = asyncio.get_running_loop().create_task(release_thread())
        _watchers.add(watcher)
        watcher.add_done_callback(_watchers.discard)
        return "run"

    def attach(
        self, job_id: str, owner: Any, *, will_retry: RetryPolicy | None = None
    ) -> AttachedRun | None:
        """Report the task running in this thread as job ``job_id`` from now on,
        making the job (for ``owner``) if its send made none; None if the job has
        ended or runs elsewhere. The caller tells the task's end to
        :meth:`AttachedRun.finish`."""
        run = AttachedRun(will_retry)
        claim = bridge.call(lambda: self._attach(job_id, owner, run))
        if claim != "run":
            return None
        return run if run.wait_started() is not None else None

    async def _attach(self, job_id: str, owner: Any, run: AttachedRun) -> Claim:
        runtime = await get_runtime(adopts=False)
        if not await Job.objects.filter(pk=job_id).aexists():
            starter = await astarter_of(owner)
            job = new_job(starter.owner, self.kind, {}, language=starter.language)
            job.id = uuid.UUID(job_id)
            try:
                await job.asave(force_insert=True)
            except IntegrityError:
                pass  # made meanwhile (the same task delivered twice): claimed below
            else:
                await publish(job)
        claim = await _claim(job_id, runtime.worker)
        if claim != "run":
            return claim
        job = await Job.objects.aget(pk=job_id)
        kind = dataclasses.replace(self.kind, function=run.body)
        runtime.runner.submit(
            job, kind=kind, call_sync=_in_a_thread_of_its_own, will_retry=run.retrying_after
        )
        run.follow(lambda: runtime.runner.wait(job_id))
        return "run"


def _unreported(call: Callable[[Progress], T]) -> T:
    """Run a task's body with a Progress that reports nowhere (no job)."""
    with reporting_to(Progress()) as progress:
        return call(progress)


async def _claim(job_id: str, worker: str) -> Claim:
    """Claim the job for ``worker``, waiting out a previous attempt still ending.

    An engine may deliver the next attempt before the last one has let the job go
    (a retry sent before its error was raised), or deliver a task again whose
    worker died (the job is `interrupted`, or still `running` until a sweep ends
    it): the claim waits, at most ``STALE_AFTER`` plus two heartbeats, then sweeps.
    """
    deadline = time.monotonic() + conf.get("STALE_AFTER") + 2 * conf.get("HEARTBEAT_INTERVAL")
    pause, swept = 0.05, False
    while True:
        if await Job.objects.claim(job_id, worker):
            return "run"
        row = await Job.objects.filter(pk=job_id).afirst()
        if row is None:
            return "missing"
        if row.status == Status.INTERRUPTED and not row.cancel_requested:
            if await Job.objects.reopen(job_id, gettext("Delivered again; starting again")):
                reopened = await Job.objects.aget(pk=job_id)
                await publish(reopened)
                await send_retried(
                    reopened, attempt=reopened.attempts + 1, delay=None, error=row.error
                )
            continue
        if row.status == Status.QUEUED and not row.worker and row.cancel_requested:
            # Cancelled while given back for a retry: it ends here, never runs again.
            await end_unclaimed(row, Status.CANCELLED, "")
            continue
        if row.status not in ACTIVE_STATUSES:
            logger.info("task not run: its job has ended job=%s status=%s", job_id, row.status)
            return "ended"
        if time.monotonic() > deadline:
            if swept:
                logger.warning("task not run: its job runs elsewhere job=%s", job_id)
                return "ended"
            swept = True
            await sweep_stale()
            continue
        await asyncio.sleep(pause)
        pause = min(pause * 2, conf.get("HEARTBEAT_INTERVAL"))
