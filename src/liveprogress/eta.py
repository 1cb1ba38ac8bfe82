"""A job's ETA, and where it comes from.

Before a job's own pace can say anything (queued, and in its first seconds) its
ETA comes from its kind's past runs (``history``); as its recent-rate window fills
it hands over to the rate (``rate``), through a blend weighted by how much of
:data:`ETA_WINDOW_S` the window has seen (``blend``): the rate's first samples
(a job's first item after its setup, say) barely move the ETA, and a job shorter
than the window keeps leaning on its past runs, which know it better.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from .history import WHOLE_RUN, KindHistory
from .progress import ProgressSnapshot, Timings

# The ETA comes from the progress rate over this many recent seconds, not since the
# start, so it follows a job that speeds up or slows down.
ETA_WINDOW_S = 10.0

#: Past runs' estimates a run keeps worked out (one per stage and total it had).
EXPECTED_KEPT = 64

#: Where an ETA comes from (the wire's ``eta_source``); empty: there is none.
HISTORY, RATE, BLEND = "history", "rate", "blend"


def share_done(snapshot: ProgressSnapshot) -> float | None:
    """The share of the job done (0-1), None while its total is unknown."""
    if snapshot.fraction is not None:
        return snapshot.fraction
    if snapshot.total is not None:
        return min(snapshot.current / snapshot.total, 1.0) if snapshot.total else 1.0
    return None


class RateWindow:
    """The pace of one job over the last ``ETA_WINDOW_S`` seconds."""

    def __init__(self) -> None:
        # (monotonic time, share done, innermost count) over the window; reset when
        # the counter changes meaning (a new stage, a new total).
        self._samples: deque[tuple[float, float, int]] = deque()
        self._sampled: tuple[Any, ...] = ()
        # When the window's first sample since it was last cleared came, and its newest.
        self._began = self._newest = 0.0

    @property
    def seen_s(self) -> float:
        """Seconds the window has been sampling the job's current counter (since its
        stage or total last changed): at ``ETA_WINDOW_S`` it is full."""
        return self._newest - self._began

    def estimate(self, snapshot: ProgressSnapshot) -> tuple[float | None, float | None]:
        """Add ``snapshot`` as a sample; seconds left and units per second, from the
        window's first and last samples (None where they can't tell)."""
        share = share_done(snapshot)
        running = [stage["name"] for stage in snapshot.stages if stage["status"] == "running"]
        meaning = (tuple(running), snapshot.total)
        now = time.monotonic()
        samples = self._samples
        if meaning != self._sampled:
            # Counts from another stage or total don't make a rate with these.
            samples.clear()
            self._sampled = meaning
            self._began = now
        self._newest = now
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


@dataclass(frozen=True)
class Estimate:
    """A job's ETA (seconds left), its rate (units a second) and the ETA's source."""

    eta_s: float | None
    rate: float | None
    source: str


def before_start(history: KindHistory) -> Estimate:
    """The ETA of a job that has not started: how long a run of its kind takes."""
    expected = history.expected()
    return Estimate(
        None if expected is None else round(expected, 1),
        None,
        HISTORY if expected is not None else "",
    )


class JobEta:
    """The ETA of one run of a job, from its kind's past runs and its own pace."""

    def __init__(self, history: KindHistory | None = None) -> None:
        self._history = history or KindHistory()
        self._window = RateWindow()
        # Past runs' estimates by (stage, units), worked out once: a job publishes
        # many states, with few totals.
        self._expected: dict[tuple[str, int | None], float | None] = {}

    @property
    def history(self) -> KindHistory:
        return self._history

    def estimate(
        self, snapshot: ProgressSnapshot, timings: Timings, running_s: float | None
    ) -> Estimate:
        """The ETA after ``snapshot`` (a sample of the rate window), the run having
        lasted ``running_s`` (None: it has not started)."""
        if running_s is None:
            return before_start(self._history)
        by_rate, rate = self._window.estimate(snapshot)
        by_history = self._from_history(timings, running_s, share_done(snapshot) or 0.0)
        if by_history is None:
            return Estimate(by_rate, rate, RATE if by_rate is not None else "")
        weight = min(self._window.seen_s / ETA_WINDOW_S, 1.0)
        if by_rate is None or weight <= 0:
            return Estimate(round(by_history, 1), rate, HISTORY)
        if weight >= 1:
            return Estimate(by_rate, rate, RATE)
        blended = weight * by_rate + (1 - weight) * by_history
        return Estimate(round(blended, 1), rate, BLEND)

    def _expect(self, stage: str = WHOLE_RUN, units: int | None = None) -> float | None:
        key = (stage, units)
        if key not in self._expected:
            if len(self._expected) >= EXPECTED_KEPT:  # a total that keeps changing
                self._expected.clear()
            self._expected[key] = self._history.expected(stage, units)
        return self._expected[key]

    def _from_history(self, timings: Timings, running_s: float, share: float) -> float | None:
        """Seconds left by past runs: by stage when every stage still to run (those
        this run has named, and those the newest past run had) has past runs, else
        by whole runs: a run less the time this one has run, or less the ``share``
        it has done if that leaves less (a run that went on from where an earlier
        attempt stopped); None when they know nothing, or the run is past what they
        expect."""
        history = self._history
        named = {stage.name: stage for stage in timings.stages}
        to_run = [name for name in named if named[name].status != "done"]
        to_run += [name for name in history.last_stages if name not in named]
        if (timings.stages or history.last_stages) and all(map(history.knows, to_run)):
            left = 0.0
            for name in to_run:
                stage = named.get(name)
                if stage is None or stage.status == "pending":
                    left += self._expect(name) or 0.0
                else:
                    left += max((self._expect(name, stage.units) or 0.0) - stage.seconds, 0.0)
            return left or None
        expected = self._expect(units=timings.units)
        if expected is None:
            return None
        left = min(expected - running_s, expected * (1.0 - share))
        return left if left > 0 else None
