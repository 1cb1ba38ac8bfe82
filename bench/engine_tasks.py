"""The Celery tasks of the engines benchmark (``bench/engines.py``), run by a prefork worker.

- ``*_calls``: a tight loop of ``calls`` progress calls, timed inside the task
  (wall clock, and the CPU of the worker process: every thread of it, so
  liveprogress's publisher too): liveprogress's ``self.progress.advance()``,
  celery-progress's ``ProgressRecorder(self).set_progress()``, and the bare loop
  (the ceiling).
- ``*_steps``: a step every 100-200 ms (seeded), reported as it is done. The task
  returns each step's wall-clock time: a poller skips steps, and the driver times
  those too (until the client first knew of a later one).
"""

from __future__ import annotations

import random
import time
from typing import Any

from celery_progress.backend import ProgressRecorder

from liveprogress.engines.celery import ProgressTask
from proyecto.celery import app

#: Seconds between two steps: uniform in this range, so steps don't fall in step with
#: a poller's interval.
STEP_INTERVAL = (0.1, 0.2)


def _timed(calls: int, started: float, cpu: float) -> dict[str, Any]:
    """A calls loop's figures: its wall-clock seconds and its process's CPU seconds."""
    return {
        "calls": calls,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
    }


@app.task(bind=True, base=ProgressTask, name="bench.liveprogress_calls")
def liveprogress_calls(self: ProgressTask, calls: int) -> dict[str, Any]:
    self.progress.start(total=calls)
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        self.progress.advance()
    return _timed(calls, started, cpu)


@app.task(bind=True, name="bench.celery_progress_calls", ignore_result=False)
def celery_progress_calls(self: Any, calls: int) -> dict[str, Any]:
    recorder = ProgressRecorder(self)
    started, cpu = time.perf_counter(), time.process_time()
    for done in range(1, calls + 1):
        recorder.set_progress(done, calls)
    return _timed(calls, started, cpu)


@app.task(name="bench.bare_calls", ignore_result=False)
def bare_calls(calls: int) -> dict[str, Any]:
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        pass
    return _timed(calls, started, cpu)


def _steps(report: Any, steps: int, seed: int) -> dict[str, Any]:
    pause = random.Random(seed)
    sent = []
    for step in range(1, steps + 1):
        time.sleep(pause.uniform(*STEP_INTERVAL))
        sent.append(time.time())
        report(step)
    return {"sent": sent}


@app.task(bind=True, base=ProgressTask, name="bench.liveprogress_steps")
def liveprogress_steps(self: ProgressTask, steps: int, seed: int) -> dict[str, Any]:
    self.progress.start(total=steps)
    return _steps(lambda step: self.progress.advance(message=f"step {step}"), steps, seed)


@app.task(bind=True, name="bench.celery_progress_steps", ignore_result=False)
def celery_progress_steps(self: Any, steps: int, seed: int) -> dict[str, Any]:
    recorder = ProgressRecorder(self)
    return _steps(
        lambda step: recorder.set_progress(step, steps, description=f"step {step}"), steps, seed
    )


#: The tasks ``POST /bench/tasks/<name>/`` starts, by name.
TASKS = {
    "liveprogress_calls": liveprogress_calls,
    "celery_progress_calls": celery_progress_calls,
    "bare_calls": bare_calls,
    "liveprogress_steps": liveprogress_steps,
    "celery_progress_steps": celery_progress_steps,
}
