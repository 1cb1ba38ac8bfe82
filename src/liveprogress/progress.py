"""Progress: what a job's code calls to report how far it is.

Calls only change memory under a lock and wake the publisher; they never touch
the database or the channel layer, so a job may call ``advance()`` a million
times. They are safe from any thread. Once a cancel is requested every counting
call raises :class:`JobCancelled`, which is how sync code stops cooperatively.

Beyond one counter (``start``/``advance``/``set``):

- **Stages** with weights: ``progress.plan({"Validate": 1, "Import": 8})`` names
  them up front (optional), ``progress.stage("Import")`` enters one (also as
  ``with progress.stage("Import"):``, which marks it done on leaving). The
  counter then counts within the stage, and the job's percent is the weighted
  sum over the stages.
- **Loops**: ``for row in progress.track(rows):`` counts each item as it is
  done; a ``track`` inside another counts as a share of the outer item.
- **Log lines**: ``progress.log("Row 7: no email", level="warning")``, kept (the
  newest ``LOG_LIMIT``) and streamed with their own sequence.
- **Files**: ``progress.attach("cleaned.csv", data)`` (``await progress.aattach``
  in async code) stores a result file the owner can download.
- **Children**: ``await progress.spawn(kind, params)`` starts a child job, and
  ``await progress.wait_children()`` reports their combined progress until all
  have ended. Cancelling the job cancels its children.
- **Checkpoints**: each top-level ``track`` loop records how many items it has
  done, and ``progress.checkpoint(data)`` the job's own JSON; both go with the
  job's states to the database. A next attempt of the job (a retry, a resume
  after a pause) goes on from there: its loops skip what was done, and
  ``progress.checkpoint_data`` holds the data. A pause takes effect at a
  checkpoint (an item's end, a ``checkpoint`` call), by :class:`JobPaused`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from . import tracing
from .exceptions import JobCancelled, JobPaused, JobTimedOut

T = TypeVar("T")

LOG_LEVELS = ("debug", "info", "warning", "error")
#: Longest log line kept, in characters (longer ones are cut, marked with an ellipsis).
LOG_LINE_MAX = 2000
# Every part of a job's state is bounded, so no state (nor the owner's list of them)
# grows past what a server will carry in one frame.
#: Longest message kept, in characters (cut like a log line).
MESSAGE_MAX = 2000
#: The most bytes of JSON a job's own checkpoint data may take (it goes in the row,
#: written with every state).
CHECKPOINT_DATA_MAX = 16 * 1024
#: Longest stage name, in characters, and the most stages a job may have.
STAGE_NAME_MAX = 200
STAGES_MAX = 100


def cut(text: str, limit: int) -> str:
    """``text``, or its start marked with an ellipsis when longer than ``limit``."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class JobContext(Protocol):
    """What a running job's Progress needs from its execution (files, children)."""

    def store_file(
        self, name: str, content: bytes, content_type: str, attached: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Store a file of the job (``attached``: the files it holds now); its entry.
        Called from the job's thread (a sync job)."""

    async def astore_file(
        self, name: str, content: bytes, content_type: str, attached: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """:meth:`store_file` for an async job, on its loop."""

    async def spawn(self, kind: str, params: Mapping[str, Any] | None) -> str: ...

    async def children_states(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class LogLine:
    seq: int
    level: str
    text: str
    #: Epoch seconds.
    at: float

    def as_wire(self) -> dict[str, Any]:
        return {"seq": self.seq, "level": self.level, "text": self.text, "at": self.at}


@dataclass(frozen=True)
class ProgressSnapshot:
    current: int
    total: int | None
    message: str
    #: The share done (0-1) when stages or nested loops say it; None: current/total.
    fraction: float | None = None
    stages: tuple[dict[str, Any], ...] = ()
    files: tuple[dict[str, Any], ...] = ()
    #: ``{"loops": [items done per top-level track], "data": ..., "current": n}``,
    #: None until the job records one.
    checkpoint: dict[str, Any] | None = None


@dataclass(frozen=True)
class StageTiming:
    """How long a stage has run (so far, while it runs) and the total it counts to."""

    name: str
    status: str
    seconds: float
    units: int | None


@dataclass(frozen=True)
class Timings:
    """What a run's ETA from past runs, and the record of a run, need: the total of
    the job's own counter (None with stages: each stage has its own) and its
    stages' times."""

    units: int | None
    stages: tuple[StageTiming, ...] = ()


@dataclass
class _Level:
    """One counter: the job's (or its stage's), or a nested loop's."""

    current: int = 0
    total: int | None = None


@dataclass
class _Stage:
    name: str
    weight: float
    status: str = "pending"  # pending | running | done
    # Monotonic times it was entered and left, and the total its counter had then.
    started: float | None = None
    ended: float | None = None
    units: int | None = None

    def as_wire(self, fraction: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "weight": self.weight,
            "status": self.status,
            "fraction": fraction,
        }


@dataclass
class _Logs:
    """Lines logged and not yet taken by the publisher (the newest ``limit``)."""

    limit: int
    seq: int = 0
    pending: deque[LogLine] = field(default_factory=deque)
    #: The seq of the newest line dropped before it was taken (0: none).
    dropped_through: int = 0


class Progress:
    """Handed to every job function as its first argument."""

    def __init__(
        self,
        on_change: Callable[[], None] = lambda: None,
        *,
        log_seq: int = 0,
        log_limit: int = 1000,
        context: JobContext | None = None,
        resume: Mapping[str, Any] | None = None,
        job_id: str = "",
    ) -> None:
        #: The job's id: the same in every attempt, a key for work that must be
        #: done once (a row imported, a payment made). Empty outside a job.
        self.job_id = job_id
        self._lock = threading.Lock()
        self._on_change = on_change
        self._context = context
        # The stack of counters: the job's (or the current stage's) first, then
        # one per nested track().
        self._levels = [_Level()]
        self._tracking = 0
        self._message = ""
        self._stages: list[_Stage] = []
        self._stage: int | None = None
        self._files: list[dict[str, Any]] = []
        # While wait_children() runs: the children's combined share done.
        self._child_fraction: float | None = None
        self._logs = _Logs(limit=max(log_limit, 1), seq=log_seq)
        self._cancel = threading.Event()
        # Set with the cancel when what stops the job is its time limit.
        self._timed_out = False
        self._spawned = False
        # Checkpoints: items done by each top-level track loop, in the order the job
        # opens them (kept from the checkpoint resumed from until the job reopens
        # them), how many it has opened in this run, and its own data.
        self._resumed = resume is not None
        self._loops_done: list[int] = [int(n) for n in (resume or {}).get("loops", [])]
        self._loops_opened = 0
        self._checkpoint_data: Any = (resume or {}).get("data")
        self._checkpointed = resume is not None
        self._pause = threading.Event()

    # -- one counter ---------------------------------------------------------------

    def start(self, total: int | None = None, message: str | None = None) -> None:
        """Begin counting from zero towards ``total`` (None: unknown, an indeterminate bar)."""
        self._update(current=0, total=_count(total, "total"), message=message, set_total=True)

    def advance(self, n: int = 1, message: str | None = None) -> None:
        """Count ``n`` more units done, and set the message with them if given (one
        change: no watcher sees the count without its message)."""
        n = _whole(n, "n")
        with self._lock:
            self._check_cancelled()
            self._levels[-1].current += n
            self._set_message(message)
        self._on_change()

    def set(self, current: int, total: int | None = None, message: str | None = None) -> None:
        """Set the units done, the total and the message, those given, as one change."""
        self._update(
            current=_whole(current, "current"),
            total=_count(total, "total"),
            message=message,
            set_total=total is not None,
        )

    def message(self, text: str) -> None:
        """Set the line shown beside the bar."""
        self._update(current=None, total=None, message=text, set_total=False)

    # -- stages ----------------------------------------------------------------------

    def plan(self, stages: Mapping[str, float] | Sequence[tuple[str, float]]) -> None:
        """Name the stages up front with their weights, so watchers see them all
        (and the percent counts the ones still to come)."""
        pairs = list(stages.items()) if isinstance(stages, Mapping) else list(stages)
        with self._lock:
            self._check_cancelled()
            for name, weight in pairs:
                self._find_or_add(str(name), _weight(weight))
        self._on_change()

    def stage(self, name: str, weight: float | None = None) -> _StageScope:
        """Enter the stage ``name`` (the one before it is done); its counter starts at
        zero. ``weight`` (default 1, or what ``plan`` said) is its share of the job."""
        with self._lock:
            self._check_cancelled()
            now = time.monotonic()
            if self._stage is not None:
                self._leave_stage(self._stages[self._stage], now)
            index = self._find_or_add(str(name), None if weight is None else _weight(weight))
            entered = self._stages[index]
            entered.status, entered.started, entered.ended = "running", now, None
            self._stage = index
            self._levels = [_Level()]
        tracing.stage_started(self, self._stages[index].name)
        self._on_change()
        return _StageScope(self, lambda: self._end_stage(index))

    def _find_or_add(self, name: str, weight: float | None) -> int:
        name = cut(name, STAGE_NAME_MAX)
        for index, known in enumerate(self._stages):
            if known.name == name:
                if weight is not None:
                    known.weight = weight
                return index
        if len(self._stages) >= STAGES_MAX:
            raise ValueError(f"A job may have at most {STAGES_MAX} stages")
        self._stages.append(_Stage(name, 1.0 if weight is None else weight))
        return len(self._stages) - 1

    def _end_stage(self, index: int) -> None:
        with self._lock:
            if self._stage == index:
                self._leave_stage(self._stages[index], time.monotonic())
                self._stage = None
        self._on_change()

    def _leave_stage(self, stage: _Stage, now: float) -> None:
        """Mark the running stage done, with its time and total. Called under the lock."""
        stage.status, stage.ended, stage.units = "done", now, self._levels[0].total

    # -- loops -----------------------------------------------------------------------

    def track(self, iterable: Iterable[T], total: int | None = None) -> Iterator[T]:
        """Yield each item, counting it done when the loop asks for the next one.

        ``total`` defaults to ``len(iterable)`` when it has one. Inside another
        ``track``, it counts as a share of the outer loop's current item.
        """
        if total is None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        total = _count(total, "total")
        items = iter(iterable)
        with self._lock:
            self._check_cancelled()
            nested = self._tracking > 0
            loop: int | None = None
            skip = 0
            if nested:
                self._levels.append(_Level(0, total))
            else:
                # A top-level loop is a checkpoint: on a next attempt it skips the
                # items this one finished.
                loop = self._loops_opened
                self._loops_opened += 1
                if loop < len(self._loops_done):
                    skip = self._loops_done[loop]
                else:
                    self._loops_done.append(0)
                self._levels[-1] = _Level(0, total)
            self._tracking += 1
        if skip:
            skipped = sum(1 for _ in itertools.islice(items, skip))
            with self._lock:
                self._levels[-1].current = skipped
        self._on_change()
        try:
            for item in items:
                yield item
                self.advance()
                if loop is not None:
                    with self._lock:
                        self._loops_done[loop] += 1
                        self._checkpointed = True
                self._pause_if_asked()
        finally:
            with self._lock:
                self._tracking -= 1
                if nested and len(self._levels) > 1:
                    self._levels.pop()
            self._on_change()

    # -- log lines -------------------------------------------------------------------

    def log(self, text: str, level: str = "info") -> None:
        """Add a line to the job's log (kept, streamed live, replayed on reconnect)."""
        if level not in LOG_LEVELS:
            raise ValueError(f"Log level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
        text = str(text)
        text = cut(text, LOG_LINE_MAX)
        with self._lock:
            logs = self._logs
            logs.seq += 1
            logs.pending.append(LogLine(logs.seq, level, text, time.time()))
            while len(logs.pending) > logs.limit:
                logs.dropped_through = logs.pending.popleft().seq
        self._on_change()

    def take_logs(self) -> tuple[list[LogLine], int]:
        """The lines logged since the last call, and the seq through which lines were
        dropped unseen (0: none). For the publisher."""
        with self._lock:
            logs = self._logs
            lines, dropped = list(logs.pending), logs.dropped_through
            logs.pending.clear()
            logs.dropped_through = 0
        return lines, dropped

    # -- files -----------------------------------------------------------------------

    def attach(
        self, name: str, content: bytes | str, content_type: str = "application/octet-stream"
    ) -> None:
        """Store a result file (sync code; a same-named one is replaced)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            # It would wait on the loop it runs on (the owner's quota is read there).
            raise RuntimeError("attach is for sync code: in an async job, await aattach(...)")
        context, data, attached = self._attaching(content)
        self._attached(context.store_file(name, data, content_type, attached))

    async def aattach(
        self, name: str, content: bytes | str, content_type: str = "application/octet-stream"
    ) -> None:
        """:meth:`attach` for async code (the storage is written in a thread)."""
        context, data, attached = self._attaching(content)
        self._attached(await context.astore_file(name, data, content_type, attached))

    def _attaching(self, content: bytes | str) -> tuple[JobContext, bytes, list[dict[str, Any]]]:
        if self._context is None:
            raise RuntimeError("This Progress belongs to no job: nowhere to attach files")
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        with self._lock:
            return self._context, data, list(self._files)

    def _attached(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._files = [known for known in self._files if known["name"] != entry["name"]]
            self._files.append(entry)
        self._on_change()

    # -- children --------------------------------------------------------------------

    async def spawn(self, kind: str, params: Mapping[str, Any] | None = None) -> str:
        """Start a child job (same owner); returns its id."""
        if self._context is None:
            raise RuntimeError("This Progress belongs to no job: it can't start children")
        self.raise_if_cancelled()
        # Set before: a spawn that fails midway may have left its child behind.
        self._spawned = True
        return await self._context.spawn(kind, params)

    @property
    def spawned(self) -> bool:
        """Whether the job has started (or tried to start) a child job."""
        return self._spawned

    async def wait_children(self, poll: float = 0.25) -> list[dict[str, Any]]:
        """Report the children's combined progress until all have ended; returns
        their final states (id, kind, status, result, error), oldest first."""
        if self._context is None:
            return []
        while True:
            self.raise_if_cancelled()
            children = await self._context.children_states()
            if not children:
                return []
            ended = [child for child in children if child["finished_at"] is not None]
            share = sum((child["percent"] or 0.0) / 100 for child in children) / len(children)
            with self._lock:
                level = self._levels[-1]
                level.current, level.total = len(ended), len(children)
                self._child_fraction = share
            self._on_change()
            if len(ended) == len(children):
                with self._lock:
                    self._child_fraction = None
                return [
                    {key: child[key] for key in ("id", "kind", "status", "result", "error")}
                    for child in children
                ]
            await asyncio.sleep(poll)

    # -- checkpoints and pause -------------------------------------------------------

    def checkpoint(self, data: Any = None) -> None:
        """Record the job's own state (JSON, at most ``CHECKPOINT_DATA_MAX`` bytes),
        kept with its next state; a next attempt finds it in :attr:`checkpoint_data`.
        Also where a requested pause takes effect (:class:`JobPaused`)."""
        try:
            size = len(json.dumps(data).encode())
        except (TypeError, ValueError) as exc:
            raise TypeError(f"A checkpoint's data must be JSON: {exc}") from None
        if size > CHECKPOINT_DATA_MAX:
            raise ValueError(
                f"A checkpoint's data is {size} bytes of JSON, more than the "
                f"{CHECKPOINT_DATA_MAX} it may take: keep a position, not the work"
            )
        with self._lock:
            self._check_cancelled()
            self._checkpoint_data = data
            self._checkpointed = True
        self._on_change()
        self._pause_if_asked()

    @property
    def checkpoint_data(self) -> Any:
        """The data of the job's latest checkpoint: on a resumed attempt, at first,
        what the last attempt recorded (None: none)."""
        return self._checkpoint_data

    @property
    def resumed(self) -> bool:
        """True when this attempt goes on from a checkpoint of an earlier one."""
        return self._resumed

    def request_pause(self) -> None:
        """Ask the job to pause at its next checkpoint (its execution does)."""
        self._pause.set()

    @property
    def pausing(self) -> bool:
        """True once a pause has been asked: the job stops at its next checkpoint.
        Clean-up that a pause must not do (deleting the job's input) checks it."""
        return self._pause.is_set()

    def _pause_if_asked(self) -> None:
        if self._pause.is_set():
            raise JobPaused("paused")

    # -- cancel ----------------------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        """True once a cancel has been requested (or the time limit passed): sync code
        should stop soon."""
        return self._cancel.is_set()

    @property
    def timed_out(self) -> bool:
        """True once the job's time limit has passed (``@job(timeout=...)``)."""
        return self._timed_out

    def time_out(self) -> None:
        """The time limit passed: the job's next progress call raises
        :class:`JobTimedOut` (its execution does this)."""
        with self._lock:
            if not self._cancel.is_set():
                self._timed_out = True
            self._cancel.set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if a cancel has been requested."""
        with self._lock:
            self._check_cancelled()

    def request_cancel(self) -> bool:
        """Ask the job to stop (its execution does); True if it had been asked already."""
        with self._lock:
            already = self._cancel.is_set()
            self._cancel.set()
        return already

    def start_unless_cancelled(self, mark_started: Callable[[], None]) -> None:
        """Call ``mark_started`` unless a cancel was requested (then raise
        :class:`JobCancelled`), as one step under the lock :meth:`request_cancel`
        takes: a cancel comes either first, and the job never starts, or after, and
        finds it started. For the execution, before a sync function runs."""
        with self._lock:
            self._check_cancelled()
            mark_started()

    def _check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise JobTimedOut("time limit") if self._timed_out else JobCancelled("cancelled")

    # -- for the publisher -----------------------------------------------------------

    def snapshot(self) -> ProgressSnapshot:
        with self._lock:
            level = self._levels[-1]
            inner = self._levels_fraction()
            stages: tuple[dict[str, Any], ...] = ()
            fraction: float | None
            if self._stages:
                parts = []
                for index, stage in enumerate(self._stages):
                    share = {"done": 1.0, "pending": 0.0}.get(stage.status)
                    if share is None:
                        share = inner if inner is not None and index == self._stage else 0.0
                    parts.append(stage.as_wire(round(share, 4)))
                stages = tuple(parts)
                fraction = stages_share(parts)
            elif len(self._levels) > 1 or self._child_fraction is not None:
                fraction = inner
            else:
                fraction = None
            checkpoint = None
            if self._checkpointed:
                checkpoint = {
                    "loops": list(self._loops_done),
                    "data": self._checkpoint_data,
                    # The job's (or its stage's) count, not a nested loop's.
                    "current": self._levels[0].current,
                }
            return ProgressSnapshot(
                level.current,
                level.total,
                self._message,
                None if fraction is None else round(fraction, 6),
                stages,
                tuple(self._files),
                checkpoint,
            )

    def timings(self) -> Timings:
        """The job's total and its stages' times as they are now (a running stage's
        time so far, its counter's total so far)."""
        now = time.monotonic()
        with self._lock:
            running_units = self._levels[0].total
            stages = tuple(
                StageTiming(
                    stage.name,
                    stage.status,
                    0.0 if stage.started is None else (stage.ended or now) - stage.started,
                    running_units if stage.status == "running" else stage.units,
                )
                for stage in self._stages
            )
            return Timings(None if stages else running_units, stages)

    def _levels_fraction(self) -> float | None:
        """The share done of the stage (or job): nested counters, innermost first."""
        if self._child_fraction is not None:
            return self._child_fraction
        share: float | None = None
        for level in reversed(self._levels):
            if level.total is None:
                share = None
            elif level.total <= 0:
                share = 1.0
            else:
                share = min((level.current + (share or 0.0)) / level.total, 1.0)
        return share

    def _update(
        self, *, current: int | None, total: int | None, message: str | None, set_total: bool
    ) -> None:
        with self._lock:
            self._check_cancelled()
            level = self._levels[-1]
            if current is not None:
                level.current = current
            if set_total:
                level.total = total
            self._set_message(message)
        self._on_change()

    def _set_message(self, message: object) -> None:
        """The message, as text within MESSAGE_MAX (every way of setting it comes
        here); None leaves it as it is. Called under the lock."""
        if message is not None:
            self._message = cut(str(message), MESSAGE_MAX)


def stages_share(stages: Sequence[Mapping[str, Any]]) -> float:
    """The share done of wire stages: their fractions weighted (0 with no weight)."""
    weights = sum(float(stage["weight"]) for stage in stages)
    if weights <= 0:
        return 0.0
    return sum(float(stage["weight"]) * float(stage["fraction"]) for stage in stages) / weights


class _StageScope:
    """What ``stage()`` returns: ``with`` marks the stage done when its block succeeds."""

    def __init__(self, progress: Progress, end: Callable[[], None]) -> None:
        self._progress = progress
        self._end = end

    def __enter__(self) -> Progress:
        return self._progress

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self._end()


def _whole(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Progress {name} must be a whole number >= 0, not {value!r}")
    return value


def _count(value: int | None, name: str) -> int | None:
    """A total: a whole number, or None for unknown."""
    return None if value is None else _whole(value, name)


def _weight(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"A stage's weight must be a number >= 0, not {value!r}")
    return float(value)
