"""The timed process as a task of Django's Tasks framework (liveprogress.engines.django_tasks),
run by django-tasks-db's ``manage.py db_worker``."""

from __future__ import annotations

from liveprogress import Progress
from liveprogress.engines.django_tasks import progress_task

from . import count_steps


@progress_task(name="demo.timer")
def timer(progress: Progress, steps: int = 10, interval: float = 1.0) -> dict[str, int]:
    return count_steps(progress, steps, interval)
