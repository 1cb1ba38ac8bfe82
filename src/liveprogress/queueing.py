"""Jobs that wait before they run: a scheduled start, a retry's backoff, a
concurrency slot; and keeping a kind's jobs unique.

A new job is either handed to its runner at once (as every job was before these
existed) or saved waiting: `queued`, with no ``dispatched_at``. Every server
process's dispatch loop (``runtime.py``) hands waiting jobs over once they are due
and their kind has a free slot, oldest first, and keeps the places in line of those
that wait for a slot. The database keeps the rules across processes: a slot is a
number held by one active job of its kind (a partial unique constraint), a unique
kind's key by one active job; a hand-over is a conditional write, so two processes
never hand over one job, and a job never waits on a process that died (any
process's loop takes it).
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import formats, timezone, translation
from django.utils.translation import gettext

from . import history
from .exceptions import AlreadyRunning, BadRequest
from .models import ACTIVE_STATUSES, Job, Status
from .publish import publish
from .registry import JobKind, kinds

logger = logging.getLogger(__name__)

#: How far ahead a client (the API, the socket) may schedule a start; the site's own
#: code may schedule any time.
CLIENT_SCHEDULE_AHEAD = timedelta(days=366)

#: Waiting jobs handed over per round of a dispatch loop, and places in line kept per
#: kind (past it a job's place is unknown until the line moves up).
ROUND_JOBS = 100
PLACES_KEPT = 1000

#: A waiting job's start estimate is said again when the new one is off from the one
#: it said (counted down since) by more than this many seconds and this share of it.
START_DRIFT_S = 2.0
START_DRIFT_SHARE = 0.2

#: Times a start retries when a slot or a unique key it saw free was taken meanwhile.
_RACE_TRIES = 5

#: Sets what a job needs for its runner before it is handed over (the dispatcher's).
Prepare = Callable[[Job], None]


def start_time(value: datetime | timedelta | float | None) -> datetime | None:
    """A start time from the site's code: an aware datetime, a timedelta or seconds
    from now; None: now."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if timezone.is_naive(value):
            raise ValueError(
                "run_after must be an aware datetime (django.utils.timezone.now() + ...), "
                "a timedelta or seconds from now"
            )
        return value
    if isinstance(value, timedelta):
        return timezone.now() + value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timezone.now() + timedelta(seconds=value)
    raise TypeError("run_after must be an aware datetime, a timedelta or seconds from now")


def client_start_time(value: Any) -> datetime | None:
    """A client's ``run_after``: epoch seconds or an ISO 8601 time with its offset,
    at most :data:`CLIENT_SCHEDULE_AHEAD` away; ``BadRequest`` otherwise."""
    if value is None:
        return None
    moment: datetime | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            moment = datetime.fromtimestamp(value, tz=timezone.get_current_timezone())
        except (OverflowError, OSError, ValueError):
            moment = None
    elif isinstance(value, str) and len(value) <= 64:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        moment = parsed if parsed is not None and not timezone.is_naive(parsed) else None
    if moment is None:
        raise BadRequest(
            "run_after must be epoch seconds or an ISO 8601 time with its UTC offset",
            field="run_after",
        )
    if moment - timezone.now() > CLIENT_SCHEDULE_AHEAD:
        raise BadRequest(
            f"run_after may be at most {CLIENT_SCHEDULE_AHEAD.days} days ahead",
            field="run_after",
        )
    return moment


def is_due(job: Job, now: datetime) -> bool:
    return all(moment is None or moment <= now for moment in (job.run_after, job.retry_at))


def _due(now: datetime) -> Q:
    return (Q(run_after__isnull=True) | Q(run_after__lte=now)) & (
        Q(retry_at__isnull=True) | Q(retry_at__lte=now)
    )


def _waiting() -> Q:
    return Q(status=Status.QUEUED, dispatched_at__isnull=True, cancel_requested=False)


# -- a new job ---------------------------------------------------------------------


async def insert(job: Job, kind: JobKind, prepare: Prepare) -> bool:
    """Save a new job: handed over (True) when it is due and its kind has a free slot,
    else waiting (False) with a message that says for what.

    ``AlreadyRunning`` (carrying the active job) when its kind is unique and a job
    with its key is active.
    """
    now = timezone.now()
    ready = is_due(job, now)
    if ready and kind.operations.concurrency is None and not job.unique_key:
        # The everyday start, as it always was: one insert, no transaction of its own.
        _hand_over_fields(job, prepare, None, now)
        await job.asave(force_insert=True)
        return True
    if not ready:
        _say_scheduled(job)
    return await sync_to_async(_insert, thread_sensitive=True)(job, kind, prepare, ready, now)


def _insert(job: Job, kind: JobKind, prepare: Prepare, ready: bool, now: datetime) -> bool:
    concurrency = kind.operations.concurrency
    for _ in range(_RACE_TRIES):
        slots: list[int | None] = []
        if ready:
            slots = list(_free_slots(kind.name, concurrency)) if concurrency else [None]
        for slot in slots:
            undo = _hand_over_fields(job, prepare, slot, now)
            if _saved(job):
                return True
            undo()
        if ready and concurrency:
            job.queue_position = None  # set by the dispatch loop, which keeps the line
            _say_waiting_for_slot(job, None)
        if _saved(job):
            return False
    raise IntegrityError(f"job {job.pk}: a slot or unique key kept changing under the start")


def _saved(job: Job) -> bool:
    """Insert ``job``; False if a slot it took was taken meanwhile. A unique key held
    by an active job raises ``AlreadyRunning``."""
    try:
        with transaction.atomic():
            job.save(force_insert=True)
        return True
    except IntegrityError:
        duplicate = active_duplicate(job)
        if duplicate is not None:
            raise AlreadyRunning(duplicate) from None
        return False


def active_duplicate(job: Job) -> Job | None:
    """The active job of ``job``'s unique kind with its key, if any (checked before a
    start, where a duplicate needs no caps, and after a refused insert)."""
    if not job.unique_key:
        return None
    return (
        Job.objects.filter(kind=job.kind, unique_key=job.unique_key, status__in=ACTIVE_STATUSES)
        .exclude(pk=job.pk)
        .first()
    )


def _free_slots(kind: str, concurrency: int) -> list[int]:
    taken = set(
        Job.objects.filter(kind=kind, status__in=ACTIVE_STATUSES, slot__isnull=False).values_list(
            "slot", flat=True
        )
    )
    return [slot for slot in range(concurrency) if slot not in taken]


def _hand_over_fields(
    job: Job, prepare: Prepare, slot: int | None, now: datetime
) -> Callable[[], None]:
    """Set what a hand-over writes (the runner's claim, the slot); returns what undoes
    it, for a slot that turns out taken."""
    before = (job.worker, job.heartbeat_at, job.attempts, job.message, job.paused_at)
    prepare(job)
    job.dispatched_at, job.slot, job.queue_position = now, slot, None
    job.starts_in_s = None

    def undo() -> None:
        job.worker, job.heartbeat_at, job.attempts, job.message, job.paused_at = before
        job.dispatched_at = job.slot = None

    return undo


# -- the dispatch loop's round -------------------------------------------------------


async def dispatch_due(prepare: Prepare) -> list[Job]:
    """Hand over the waiting jobs that are due, oldest first, each kind's while it has
    a free slot; returns them handed over (saved: for the caller to publish and
    dispatch). Only this process's kinds, and never another engine's task (its
    engine delivers it)."""
    own = [name for name, kind in kinds().items() if not kind.engine]
    now = timezone.now()
    due = Job.objects.filter(_waiting(), _due(now), kind__in=own).order_by("created_at")
    candidates = [job async for job in due[:ROUND_JOBS]]
    if not candidates:
        return []
    return await sync_to_async(_hand_over_all, thread_sensitive=True)(candidates, prepare, now)


def _hand_over_all(candidates: list[Job], prepare: Prepare, now: datetime) -> list[Job]:
    handed: list[Job] = []
    full: set[str] = set()
    registered = kinds()
    for job in candidates:
        kind = registered.get(job.kind)
        if kind is None or job.kind in full:
            continue
        concurrency = kind.operations.concurrency
        slots: list[int | None] = (
            list(_free_slots(job.kind, concurrency)) if concurrency else [None]
        )
        for slot in slots:
            undo = _hand_over_fields(job, prepare, slot, now)
            try:
                with transaction.atomic():
                    took = Job.objects.filter(_waiting(), pk=job.pk).update(
                        worker=job.worker,
                        heartbeat_at=job.heartbeat_at,
                        attempts=job.attempts,
                        paused_at=job.paused_at,
                        dispatched_at=now,
                        slot=slot,
                        queue_position=None,
                        starts_in_s=None,
                        message="",
                        updated_at=now,
                        seq=F("seq") + 1,
                    )
            except IntegrityError:
                undo()
                continue  # the slot was taken meanwhile: the next one
            if took:
                job.refresh_from_db()
                handed.append(job)
            else:
                undo()  # cancelled, or handed over by another process
            break
        else:
            full.add(job.kind)
    return handed


async def keep_places() -> None:
    """Keep each waiting job's place in line (of the kinds with slots) and when it
    should start, and say them; a job publishes its new state when its place
    changes, or what it says of its start (see :func:`_start_to_say`)."""
    now = timezone.now()
    for name, kind in kinds().items():
        concurrency = kind.operations.concurrency
        if concurrency is None or kind.engine:
            continue
        line = (
            Job.objects.filter(_waiting(), _due(now), kind=name, slot__isnull=True)
            .order_by("created_at")
            .values_list("pk", "queue_position", "starts_in_s", "updated_at")
        )
        waiting = [row async for row in line[:PLACES_KEPT]]
        if not waiting:
            continue
        starts = await _start_estimates(name, concurrency, len(waiting), now)
        for place, (row, estimate) in enumerate(zip(waiting, starts, strict=True), start=1):
            pk, held_place, held_start, held_at = row
            said, news = _start_to_say(estimate, held_start, (now - held_at).total_seconds())
            if held_place != place or news:
                await _move_up(pk, place, said, now)


def _start_to_say(
    estimate: float | None, held: float | None, since: float
) -> tuple[float | None, bool]:
    """The start estimate a waiting job says now, and whether that is news (a new
    state). ``held`` is what it said ``since`` seconds ago: while the new
    ``estimate`` is within the drift of it counted down, it goes on counting down
    (a job ahead whose ETA wobbles makes no new state), and is news only when its
    rounded phrase changes; past the drift, the new estimate is news."""
    if estimate is None or held is None:
        return estimate, estimate != held
    counted_down = max(held - since, 0.0)
    if abs(estimate - counted_down) > max(START_DRIFT_S, START_DRIFT_SHARE * estimate):
        return round(estimate, 1), True
    return round(counted_down, 1), _rough_start(counted_down) != _rough_start(held)


async def _start_estimates(
    kind: str, concurrency: int, waiting: int, now: datetime
) -> list[float | None]:
    """Seconds until each of the first ``waiting`` jobs in line should start (None:
    unknown): each takes the slot that frees first, and holds it for as long as a
    run of the kind takes. A slot frees when its job's ETA says (its remaining time
    by past runs, when it has no ETA); a free one, now."""
    expected = (await history.of_kind(kind)).expected()
    holders = Job.objects.filter(kind=kind, status__in=ACTIVE_STATUSES, slot__isnull=False)
    held = holders.values_list("status", "eta_s", "updated_at", "started_at")[:concurrency]
    frees = [_frees_in(*row, expected, now) async for row in held]
    frees += [0.0] * (concurrency - len(frees))  # free slots: the next round takes them
    heapq.heapify(frees)
    starts: list[float | None] = []
    for _ in range(waiting):
        start = heapq.heappop(frees)
        starts.append(None if math.isinf(start) else round(start, 1))
        heapq.heappush(frees, math.inf if expected is None else start + expected)
    return starts


def _frees_in(
    status: str,
    eta_s: float | None,
    updated_at: datetime,
    started_at: datetime | None,
    expected: float | None,
    now: datetime,
) -> float:
    """Seconds until an active job's slot frees (infinite: unknown)."""
    if status == Status.RUNNING and eta_s is not None:
        return max(eta_s - (now - updated_at).total_seconds(), 0.0)
    if expected is None:
        return math.inf
    if status == Status.RUNNING and started_at is not None:
        return max(expected - (now - started_at).total_seconds(), 0.0)
    return expected  # handed over, not started yet


async def _move_up(job_id: Any, place: int, starts_in: float | None, now: datetime) -> None:
    job = await Job.objects.filter(_waiting(), pk=job_id).afirst()
    if job is None:
        return
    _say_waiting_for_slot(job, place, starts_in)
    moved = await Job.objects.filter(_waiting(), pk=job_id).aupdate(
        queue_position=place,
        starts_in_s=starts_in,
        message=job.message,
        updated_at=now,
        seq=F("seq") + 1,
    )
    if moved:
        await publish(await Job.objects.aget(pk=job_id))


# -- what a waiting job says ---------------------------------------------------------


def _say_scheduled(job: Job) -> None:
    with translation.override(job.language or settings.LANGUAGE_CODE):
        if job.run_after is not None and job.run_after > timezone.now():
            moment = formats.date_format(timezone.localtime(job.run_after), "DATETIME_FORMAT")
            job.message = gettext("Scheduled to start at %(time)s") % {"time": moment}


def _say_waiting_for_slot(job: Job, place: int | None, starts_in: float | None = None) -> None:
    job.queue_position, job.starts_in_s = place, starts_in
    with translation.override(job.language or settings.LANGUAGE_CODE):
        if place is None:
            job.message = gettext("Waiting for a free slot")
        elif starts_in is None:
            job.message = gettext("Waiting for a free slot: number %(place)s in line") % {
                "place": place
            }
        elif starts_in < FEW_SECONDS:
            job.message = gettext(
                "Waiting for a free slot: number %(place)s in line, starts in a few seconds"
            ) % {"place": place}
        else:
            job.message = gettext(
                "Waiting for a free slot: number %(place)s in line, starts in about %(time)s"
            ) % {"place": place, "time": _rough_time(starts_in)}


#: Under this many seconds a start is "in a few seconds"; past it, one under
#: ``below`` seconds is said to the nearest ``step``.
FEW_SECONDS = 10.0
_START_STEPS = ((60, 10), (600, 60), (3600, 300), (math.inf, 3600))


def _rough_start(seconds: float) -> int:
    """A start time as it is said, in seconds: under a minute by 10 s, under ten
    minutes by the minute, under an hour by 5 min, then by the hour (0: in a few
    seconds). The page's script (liveprogress-widgets.js) rounds the same way."""
    if seconds < FEW_SECONDS:
        return 0
    step = next(step for below, step in _START_STEPS if seconds < below)
    return int(seconds / step + 0.5) * step


def _rough_time(seconds: float) -> str:
    rounded = _rough_start(seconds)
    if rounded < 60:
        return gettext("%(seconds)s s") % {"seconds": rounded}
    if rounded < 3600:
        return gettext("%(minutes)s min") % {"minutes": rounded // 60}
    return gettext("%(hours)s h") % {"hours": rounded // 3600}
