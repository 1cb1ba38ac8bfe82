"""The original example's timed process on the task queues people already run.

Each engine's module defines the same process as a task of that engine, through
liveprogress's adapter for it (``liveprogress.engines.*``); :func:`engines`
says which are set up on this site (their settings, see ``proyecto/settings.py``),
so the demo offers only those. Importing an engine's module needs its package.
"""

from __future__ import annotations

import time
from importlib import import_module
from typing import Any

from django.conf import settings
from django.utils.translation import gettext as _

from liveprogress import Progress

#: Each engine by its name in the demo, which is also its adapter's engine name (the
#: first part of its jobs' kind): its label, and the module of its timer task.
ENGINES = {
    "celery": ("Celery", "proyecto.demo.engines.celery_tasks"),
    "rq": ("RQ", "proyecto.demo.engines.rq_tasks"),
    "dramatiq": ("Dramatiq", "proyecto.demo.engines.dramatiq_tasks"),
    "tasks": ("Django's Tasks", "proyecto.demo.engines.django_tasks"),
}


def engines() -> list[str]:
    """The engines this site is set up for, in ENGINES' order."""
    return [name for name in ENGINES if name in getattr(settings, "DEMO_ENGINES", ())]


def timer_task(engine: str) -> Any:
    """The timed process's task on ``engine`` (set up on this site)."""
    return import_module(ENGINES[engine][1]).timer


#: The timed process's task name on every engine.
TIMER_NAME = "demo.timer"


def timer_kind(engine: str) -> str:
    """The kind of the timed process's jobs on ``engine``: liveprogress names another
    engine's task ``<engine>:<task name>``."""
    return f"{engine}:{TIMER_NAME}"


def count_steps(progress: Progress, steps: int, interval: float) -> dict[str, int]:
    """The timed process, for a worker's thread: ``steps`` steps of ``interval``
    seconds, saying the percent at each (as ``demo.timer`` does)."""
    progress.start(total=steps, message=_("Progress: %(percent)d%%") % {"percent": 0})
    for step in range(1, steps + 1):
        time.sleep(interval)
        progress.advance(message=_("Progress: %(percent)d%%") % {"percent": step * 100 // steps})
    progress.message(_("Process completed!"))
    return {"steps": steps}
