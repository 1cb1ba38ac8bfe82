"""What past runs of each kind took: recorded as a job succeeds, and learned from
for the ETA of the kind's next jobs before their own pace can say it (queued, and
in their first seconds) and for when a job waiting in line should start.

Each kind keeps its newest :data:`RUNS_KEPT` successful runs, and each of its
stages its newest as many, as :class:`~liveprogress.models.PastRun` rows. The
estimate is robust, not a mean: one run ten times longer than the rest (a cold
cache, a locked table) barely moves it.

- A run that counted to no total: the **median** of the durations.
- A run that counted to a total: a line ``seconds = fixed + per_unit * units``
  fitted by **Theil-Sen** (the median of the slopes between pairs of runs, then
  the median of what is left): a 10-row import and a 10,000-row one of the same
  kind each get their own estimate, setup time included. Runs that all counted
  the same total make no line: the median seconds per unit, times the total.

A process reads a kind's runs from the database at most every
:data:`CACHE_SECONDS` (and at once after it recorded one itself).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from statistics import median
from typing import Any

from asgiref.sync import sync_to_async
from django.core.signals import setting_changed
from django.db import transaction
from django.dispatch import receiver

from .models import PastRun

#: Runs kept per kind, and per kind and stage: enough for a median that one or two
#: odd runs don't move, few enough to follow a kind whose runs get slower.
RUNS_KEPT = 20

#: How long a process uses a kind's runs as it read them before reading them again.
CACHE_SECONDS = 30.0

#: The stage name of a whole run.
WHOLE_RUN = ""


@dataclass(frozen=True)
class Sample:
    """One past run (or stage): how long it took and the total it counted to."""

    seconds: float
    units: int | None = None


def expected_seconds(samples: Sequence[Sample], units: int | None = None) -> float | None:
    """How long a run of ``units`` (None: unknown) should take, from ``samples``
    (robust: see the module's docstring); None with no samples."""
    if not samples:
        return None
    counted = [(sample.units, sample.seconds) for sample in samples if sample.units]
    if units is None or not counted:
        return median(sample.seconds for sample in samples)
    if len({count for count, _ in counted}) < 2:
        return median(seconds / count for count, seconds in counted) * units
    slopes = [
        (seconds_b - seconds_a) / (count_b - count_a)
        for index, (count_a, seconds_a) in enumerate(counted)
        for count_b, seconds_b in counted[index + 1 :]
        if count_b != count_a
    ]
    per_unit = max(median(slopes), 0.0)
    fixed = median(seconds - per_unit * count for count, seconds in counted)
    return max(fixed + per_unit * units, 0.0)


@dataclass(frozen=True)
class KindHistory:
    """A kind's past runs, newest first: the whole runs and each stage's."""

    runs: dict[str, tuple[Sample, ...]] = field(default_factory=dict)
    #: The stages the newest run had (a stage the kind no longer has drops out).
    last_stages: frozenset[str] = frozenset()

    def knows(self, stage: str = WHOLE_RUN) -> bool:
        return bool(self.runs.get(stage))

    def expected(self, stage: str = WHOLE_RUN, units: int | None = None) -> float | None:
        """Seconds a run (or ``stage``) of ``units`` should take; None: no past run."""
        return expected_seconds(self.runs.get(stage, ()), units)


_cache: dict[str, tuple[float, KindHistory]] = {}


async def of_kind(kind: str) -> KindHistory:
    """The past runs of ``kind`` (read at most every :data:`CACHE_SECONDS`)."""
    cached = _cache.get(kind)
    if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    rows = PastRun.objects.filter(kind=kind).order_by("-finished_at", "-pk")
    runs: dict[str, list[Sample]] = {}
    newest: datetime | None = None
    last_stages: set[str] = set()
    fields = ("stage", "seconds", "units", "finished_at")
    async for stage, seconds, units, finished_at in rows.values_list(*fields):
        newest = newest or finished_at
        if stage != WHOLE_RUN and finished_at == newest:
            last_stages.add(stage)
        kept = runs.setdefault(stage, [])
        if len(kept) < RUNS_KEPT:
            kept.append(Sample(seconds, units))
    history = KindHistory(
        {stage: tuple(samples) for stage, samples in runs.items()}, frozenset(last_stages)
    )
    _cache[kind] = (time.monotonic(), history)
    return history


@dataclass(frozen=True)
class Run:
    """A successful run to record: the whole run and each stage that ran."""

    kind: str
    finished_at: datetime
    seconds: float
    units: int | None
    stages: tuple[tuple[str, float, int | None], ...] = ()


async def record(run: Run) -> None:
    """Keep ``run`` among its kind's past runs (the oldest past :data:`RUNS_KEPT` go)."""
    await sync_to_async(_record, thread_sensitive=True)(run)
    _cache.pop(run.kind, None)


def _record(run: Run) -> None:
    parts = [(WHOLE_RUN, run.seconds, run.units), *run.stages]
    with transaction.atomic():
        PastRun.objects.bulk_create(
            PastRun(
                kind=run.kind,
                stage=stage,
                seconds=seconds,
                units=units,
                finished_at=run.finished_at,
            )
            for stage, seconds, units in parts
        )
        _prune(run.kind, (stage for stage, _, _ in parts))


def _prune(kind: str, stages: Iterable[str]) -> None:
    for stage in stages:
        older = (
            PastRun.objects.filter(kind=kind, stage=stage)
            .order_by("-finished_at", "-pk")
            .values_list("pk", flat=True)[RUNS_KEPT:]
        )
        stale = list(older)
        if stale:
            PastRun.objects.filter(pk__in=stale).delete()


@receiver(setting_changed)
def _forget(*, setting: str, **kwargs: Any) -> None:
    # Tests change LIVEPROGRESS per test, with a fresh database: runs read from the
    # last one are not this one's.
    if setting == "LIVEPROGRESS":
        _cache.clear()
