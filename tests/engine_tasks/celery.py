"""Celery tasks of the engine tests (tests/test_engines.py)."""

from __future__ import annotations

import time

from liveprogress.engines.celery import ProgressTask
from liveprogress.engines.celery_progress import ProgressRecorder
from proyecto.celery import app


@app.task(bind=True, base=ProgressTask, name="tests.flaky", max_retries=2)
def flaky(self: ProgressTask, failures: int) -> dict[str, int]:
    """Fail its first ``failures`` attempts (Celery retries it 0.3 s later), then succeed."""
    self.progress.start(total=2, message="trying")
    self.progress.advance()
    if self.request.retries < failures:
        raise self.retry(
            exc=ValueError(f"attempt {self.request.retries + 1} failed"), countdown=0.3
        )
    self.progress.advance(message="done")
    return {"attempt": self.request.retries + 1}


@app.task(bind=True, base=ProgressTask, name="tests.mute")
def mute(self: ProgressTask, seconds: float) -> str:
    """Sleep without a progress call (a cancel can't stop it cooperatively)."""
    time.sleep(seconds)
    return "slept"


@app.task(bind=True)
def legacy(self, steps: int, interval: float) -> dict[str, int]:
    """A celery-progress task as its users write it, with only the import switched."""
    recorder = ProgressRecorder(self)
    for step in range(steps):
        time.sleep(interval)
        recorder.set_progress(step + 1, steps, description=f"step {step + 1}")
    return {"steps": steps}
