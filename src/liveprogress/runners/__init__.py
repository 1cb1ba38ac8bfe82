"""Runners decide where a new job runs.

- ``inprocess`` (the embedded default): inside the ASGI server process that
  started it (:class:`InProcessRunner`).
- ``tasks``: as a task of Django's Tasks framework, run by that backend's
  workers (:class:`TasksRunner`); each worker runs it with an in-process runner
  of its own.
"""

from __future__ import annotations

from typing import Protocol

from .. import conf
from ..models import Job
from .inprocess import InProcessRunner


class Dispatcher(Protocol):
    def prepare(self, job: Job) -> None:
        """Set what a new job needs before it is first saved."""

    async def dispatch(self, job: Job) -> None:
        """Get a saved, queued job running."""


def dispatcher(local: InProcessRunner) -> Dispatcher:
    """The runner that ``RUNNER`` names; ``local`` serves ``inprocess``."""
    if conf.get("RUNNER") == "tasks":
        from .tasks import TasksRunner

        return TasksRunner()
    return local


__all__ = ["Dispatcher", "InProcessRunner", "dispatcher"]
