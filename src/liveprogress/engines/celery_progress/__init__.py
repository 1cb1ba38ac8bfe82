"""The switch from celery-progress: change one import.

    # from celery_progress.backend import ProgressRecorder
    from liveprogress.engines.celery_progress import ProgressRecorder

    @shared_task(bind=True)
    def my_task(self, seconds):
        progress_recorder = ProgressRecorder(self)
        for i in range(seconds):
            time.sleep(1)
            progress_recorder.set_progress(i + 1, seconds, description="...")

The task then appears live as a liveprogress job (its id is the task id), on the
socket, SSE, ``/jobs/`` and the admin, and a cancel stops it at its next
``set_progress``. Celery's own state keeps being written as celery-progress
wrote it (when the app has a result backend), so pages polling celery-progress's
view go on working. For those pages, ``include("liveprogress.engines.celery_progress.urls")``
in place of ``include("celery_progress.urls")`` answers the same JSON from the
job, to its owner only. Who owns the job is in docs/engines.md ("Switching from
celery-progress").
"""

from __future__ import annotations

import logging
import threading
from decimal import Decimal
from typing import Any

from celery import Task
from celery.backends.base import DisabledBackend
from celery.signals import task_postrun

from ...progress import Progress
from ..base import AttachedRun, current_progress, job_id_of
from ..celery import ProgressTask, jobs_of, retry_of

__all__ = ["PROGRESS_STATE", "UNCLAIMED_OWNER", "ProgressRecorder"]

logger = logging.getLogger(__name__)

#: The Celery state celery-progress writes while a task runs.
PROGRESS_STATE = "PROGRESS"
#: The owner of a job whose send named none, until a visitor claims it by asking
#: about it (the task id is only in the page its enqueuer was given).
UNCLAIMED_OWNER = "celery-progress:unclaimed"

# The runs attached in this process, by task id, until their task ends.
_attached: dict[str, AttachedRun] = {}
_attached_lock = threading.Lock()


class ProgressRecorder:
    """celery-progress's ``ProgressRecorder``, reporting to the task's liveprogress job."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.current: float = 0
        self.total: float = 0
        self.description = ""
        self._progress: Progress | None = None
        self._looked_up = False

    def set_progress(
        self, current: float, total: float, description: str = ""
    ) -> tuple[str, dict[str, Any]]:
        """Say ``current`` of ``total`` done, with ``description``; celery-progress's
        state and meta, as it returns them."""
        self.current, self.total = current, total
        if description:
            self.description = description
        progress = self._reporting()
        if progress is not None:
            # celery-progress shows 0 % of a total of 0; liveprogress would say done.
            progress.set(
                int(current), total=int(total) if total > 0 else None, message=description or None
            )
        percent = float(round(Decimal(current) / Decimal(total) * 100, 2)) if total > 0 else 0
        meta = {
            "pending": False,
            "current": current,
            "total": total,
            "percent": percent,
            "description": description,
        }
        if not isinstance(self.task.backend, DisabledBackend):
            self.task.update_state(state=PROGRESS_STATE, meta=meta)
        return PROGRESS_STATE, meta

    def increment_progress(
        self, by: float = 1, description: str = ""
    ) -> tuple[str, dict[str, Any]]:
        return self.set_progress(self.current + by, self.total, description)

    def _reporting(self) -> Progress | None:
        """The job's Progress: the task's own (a ``ProgressTask``), else its run
        attached now; None when the task runs outside a worker or its job ended."""
        if self._looked_up:
            return self._progress
        self._looked_up = True
        if isinstance(self.task, ProgressTask):
            self._progress = current_progress()
            return self._progress
        request = self.task.request
        job_id = None if request.called_directly else job_id_of(request.id)
        if job_id is None:
            return None
        owner = getattr(request, "liveprogress_owner", None) or UNCLAIMED_OWNER
        try:
            run = jobs_of(self.task).attach(
                job_id, owner, will_retry=lambda error: retry_of(self.task, error)
            )
        except Exception:
            # celery-progress never failed a task over its progress: nor does this.
            logger.warning("progress of task %s not reported", request.id, exc_info=True)
            return None
        if run is not None:
            with _attached_lock:
                _attached[str(request.id)] = run
            self._progress = run.progress
        return self._progress


def _end_attached(
    sender: Any = None, task_id: str = "", retval: Any = None, state: str = "", **_: Any
) -> None:
    """A task with an attached run ended: its job ends the same way (its value, its
    error, its retry), written before the worker goes on."""
    with _attached_lock:
        run = _attached.pop(str(task_id), None)
    if run is None:
        return
    if state == "SUCCESS":
        run.finish(value=retval)
    elif isinstance(retval, BaseException):
        run.finish(error=retval)
    else:
        run.finish(error=RuntimeError(f"The task ended {state}: {retval!r}"[:2000]))


task_postrun.connect(_end_attached, weak=False)
