"""A running job's ETA and rate, from its progress over a recent window."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from .progress import ProgressSnapshot

# The ETA comes from the progress rate over this many recent seconds, not since the
# start, so it follows a job that speeds up or slows down.
ETA_WINDOW_S = 10.0


class RateWindow:
    """The pace of one job over the last ``ETA_WINDOW_S`` seconds."""

    def __init__(self) -> None:
        # (monotonic time, share done, innermost count) over the window; reset when
        # the counter changes meaning (a new stage, a new total).
        self._samples: deque[tuple[float, float, int]] = deque()
        self._sampled: tuple[Any, ...] = ()

    def estimate(self, snapshot: ProgressSnapshot) -> tuple[float | None, float | None]:
        """Add ``snapshot`` as a sample; seconds left and units per second, from the
        window's first and last samples (None where they can't tell)."""
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
