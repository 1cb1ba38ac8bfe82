"""The timed process as a Celery task (liveprogress.engines.celery)."""

from __future__ import annotations

from liveprogress.engines.celery import ProgressTask
from proyecto.celery import app

from . import TIMER_NAME, count_steps


@app.task(bind=True, base=ProgressTask, name=TIMER_NAME)
def timer(self: ProgressTask, steps: int = 10, interval: float = 1.0) -> dict[str, int]:
    return count_steps(self.progress, steps, interval)
