"""Prometheus metrics: the series liveprogress keeps, the hooks its hot paths call,
and what a scrape reads (docs/metrics.md).

Two kinds of series. How many jobs there are of each kind and status (queued and
running among them) is read from the database at scrape time, so it is right
whatever process ran what. What happens inside one process (a frame sent, a job
ended, a write-behind batch) goes through prometheus_client, whose multiprocess
mode (``PROMETHEUS_MULTIPROC_DIR``) adds up every process's files.

Off (``METRICS`` is False, or prometheus_client is not installed), every hook is
the test of a None. On, a socket's frames only add to plain numbers of its
process; they reach prometheus_client at most once per ``FLUSH_S``, because each
value written to a multiprocess file costs about a microsecond, as much again as
the rest of a frame's bookkeeping.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db.models import Count

from . import conf
from .models import Job, Status
from .registry import kinds
from .signals import job_finished, job_retried

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.core import Metric

#: How long a process keeps its frames' numbers before writing them to prometheus_client.
FLUSH_S = 1.0
#: A state's time from its publish to its send on a socket: most are sent within a
#: loop turn, a lagging process holds them up to 2 s (pacing.MAX_INTERVAL_S).
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: A job's run, from seconds to hours.
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
#: Running jobs written by one write-behind batch.
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
#: The transports a frame goes out on.
TRANSPORTS = ("websocket", "sse")


@functools.cache
def installed() -> bool:
    """Whether prometheus_client can be imported (the ``metrics`` extra)."""
    return importlib.util.find_spec("prometheus_client") is not None


def enabled() -> bool:
    """Whether this site counts: ``METRICS`` on and prometheus_client installed."""
    return conf.get("METRICS") and installed()


def multiprocess_dir() -> str:
    """prometheus_client's multiprocess directory, as it reads it ("" in
    single-process mode)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


@dataclass(frozen=True)
class Series:
    """This process's prometheus_client series (its registry serves them in
    single-process mode; in multiprocess mode they write to the shared directory)."""

    registry: CollectorRegistry
    connections: Gauge
    frames: Counter
    skipped: Counter
    lag: Histogram
    durations: Histogram
    retries: Counter
    batches: Histogram


@functools.cache
def series() -> Series:
    """The series, made once per process (prometheus_client refuses a name twice)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    registry = CollectorRegistry(auto_describe=True)
    return Series(
        registry=registry,
        connections=Gauge(
            "liveprogress_connections",
            "WebSockets and event streams open, by transport",
            ["transport"],
            registry=registry,
            # Summed over the processes alive: a dead one's sockets are gone.
            multiprocess_mode="livesum",
        ),
        frames=Counter(
            "liveprogress_frames_sent",
            "Frames handed to the server for a client, by transport (a batch is one)",
            ["transport"],
            registry=registry,
        ),
        skipped=Counter(
            "liveprogress_states_skipped",
            "Job states a slow client never got, replaced by a newer one before it was sent",
            ["transport"],
            registry=registry,
        ),
        lag=Histogram(
            "liveprogress_send_lag_seconds",
            "Seconds from a state's publish to its send on a socket or stream",
            registry=registry,
            buckets=LAG_BUCKETS,
        ),
        durations=Histogram(
            "liveprogress_job_duration_seconds",
            "Seconds from a job's start to its end, by kind and how it ended (jobs that started)",
            ["kind", "status"],
            registry=registry,
            buckets=DURATION_BUCKETS,
        ),
        retries=Counter(
            "liveprogress_job_retries",
            "Runs of jobs that failed and went back to the queue for another attempt, by kind",
            ["kind"],
            registry=registry,
        ),
        batches=Histogram(
            "liveprogress_writebehind_batch_jobs",
            "Running jobs whose progress one write-behind batch wrote",
            registry=registry,
            buckets=BATCH_BUCKETS,
        ),
    )


class Meter:
    """One transport's per-frame series in this process, held in plain numbers
    between flushes (every hook runs on the event loop, as the sockets do)."""

    def __init__(self, transport: str) -> None:
        found = series()
        # Label children bound once: a label lookup per frame costs more than the frame's count.
        self._connections = found.connections.labels(transport)
        self._frames_series = found.frames.labels(transport)
        self._skipped_series = found.skipped.labels(transport)
        self._lag_series = found.lag
        self._frames = 0
        self._skipped = 0
        self._lag_counts = [0] * (len(LAG_BUCKETS) + 1)
        self._lag_sum = 0.0
        self._flush_due = False

    def opened(self) -> None:
        self._connections.inc()

    def closed(self) -> None:
        self._connections.dec()

    def sent(self, frames: int) -> None:
        self._frames += frames
        self._due()

    def skipped(self) -> None:
        self._skipped += 1
        self._due()

    def lag(self, seconds: float) -> None:
        # Prometheus buckets count values up to and including their bound.
        self._lag_counts[bisect_left(LAG_BUCKETS, seconds)] += 1
        self._lag_sum += seconds

    def _due(self) -> None:
        if self._flush_due:
            return
        self._flush_due = True
        try:
            asyncio.get_running_loop().call_later(FLUSH_S, self.flush)
        except RuntimeError:
            self.flush()  # no loop to wait on

    def flush(self) -> None:
        """Write what was counted since the last flush to prometheus_client."""
        self._flush_due = False
        if self._frames:
            self._frames_series.inc(self._frames)
            self._frames = 0
        if self._skipped:
            self._skipped_series.inc(self._skipped)
            self._skipped = 0
        if any(self._lag_counts):
            # Histogram has no public way to add many observations at once, and one
            # observe() per frame is the cost this batching avoids: its bucket and sum
            # values are written directly (tests/test_metrics.py checks the result).
            buckets = self._lag_series._buckets
            for index, count in enumerate(self._lag_counts):
                if count:
                    buckets[index].inc(count)
            self._lag_series._sum.inc(self._lag_sum)
            self._lag_counts = [0] * len(self._lag_counts)
            self._lag_sum = 0.0


_meters: dict[str, Meter] = {}


def meter(transport: str) -> Meter | None:
    """The meter of a new socket or stream's ``transport`` (None: metrics are off)."""
    if not enabled():
        return None
    found = _meters.get(transport)
    if found is None:
        found = _meters[transport] = Meter(transport)
    return found


def flush() -> None:
    """Write every meter's pending numbers now (before a scrape, at a test's end)."""
    for found in _meters.values():
        found.flush()


def observe_batch(jobs: int) -> None:
    """A write-behind batch wrote ``jobs`` running jobs."""
    if enabled():
        series().batches.observe(jobs)


async def _on_finished(sender: Any, *, job: Job, status: str, **details: Any) -> None:
    # Sent once per job's end, by the process whose write ended it: summed over the
    # processes, each end counts once. A job that never started has no run to time.
    if enabled() and job.started_at is not None and job.finished_at is not None:
        seconds = max((job.finished_at - job.started_at).total_seconds(), 0.0)
        series().durations.labels(job.kind, str(status)).observe(seconds)


async def _on_retried(sender: Any, *, job: Job, **details: Any) -> None:
    if enabled():
        series().retries.labels(job.kind).inc()


if installed():
    # Without prometheus_client nothing listens: the signals cost nothing to send.
    job_finished.connect(_on_finished, sender=Job, dispatch_uid="liveprogress.metrics.finished")
    job_retried.connect(_on_retried, sender=Job, dispatch_uid="liveprogress.metrics.retried")


class JobCounts:
    """The jobs in the database by kind and status, read at each scrape: right
    whichever processes ran them. Every registered kind has its active statuses
    (0 when none), so a query for queued jobs finds a series."""

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        counts: dict[tuple[str, str], int] = {
            (name, str(status)): 0 for name in kinds() for status in (Status.QUEUED, Status.RUNNING)
        }
        rows = Job.objects.order_by().values_list("kind", "status").annotate(n=Count("id"))
        for kind, status, n in rows:
            counts[(kind, status)] = n
        family = GaugeMetricFamily(
            "liveprogress_jobs",
            "Jobs kept in the database (until RESULT_TTL after their end), by kind and status",
            labels=["kind", "status"],
        )
        for (kind, status), n in sorted(counts.items()):
            family.add_metric([kind, status], n)
        yield family


class _OwnSeries:
    """This process's series, for a scrape in single-process mode."""

    def collect(self) -> Iterable[Metric]:
        return series().registry.collect()


def exposition(accept: str) -> tuple[bytes, str]:
    """The scrape's body and content type (OpenMetrics when ``accept`` asks for it):
    every process's series in multiprocess mode, this process's otherwise, and the
    job counts from the database. Sync: it reads files and the database."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    if multiprocess_dir():
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
    else:
        registry.register(_OwnSeries())
    registry.register(JobCounts())
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
