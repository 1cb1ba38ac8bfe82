"""Tasks of Django's Tasks framework for the engine tests (tests/test_engines.py, run by
``db_worker``) and the adapter's own (tests/test_engines_django_tasks.py, run in-process)."""

from __future__ import annotations

from typing import Any

from liveprogress import Progress
from liveprogress.engines.django_tasks import progress_task


@progress_task(name="tests.count")
def count(progress: Progress, steps: int, *, fail: bool = False) -> dict[str, int]:
    """``steps`` progress calls; fails after them with ``fail``."""
    progress.start(total=steps, message="counting")
    for _step in range(steps):
        progress.advance()
    if fail:
        raise ValueError("told to fail")
    return {"steps": steps}


@progress_task(name="tests.attempt", takes_context=True, title="What the context says")
def attempt(progress: Progress, context: Any) -> dict[str, Any]:
    """What the framework's context says of this run."""
    progress.message("looking at the context")
    return {"attempt": context.attempt, "result_id": str(context.task_result.id)}
