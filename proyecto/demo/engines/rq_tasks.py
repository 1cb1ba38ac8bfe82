"""The timed process as an RQ job (liveprogress.engines.rq), on django-rq's default queue."""

from __future__ import annotations

from liveprogress import Progress
from liveprogress.engines.rq import progress_job

from . import TIMER_NAME, count_steps


@progress_job("default", name=TIMER_NAME)
def timer(progress: Progress, steps: int = 10, interval: float = 1.0) -> dict[str, int]:
    return count_steps(progress, steps, interval)
