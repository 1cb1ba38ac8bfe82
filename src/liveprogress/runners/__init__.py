"""Runners decide where a new job runs.

- ``inprocess`` (the embedded default): inside the ASGI server process that
  started it (:class:`InProcessRunner`).
- ``tasks``: as a task of Django's Tasks framework, run by that backend's
  workers (:class:`TasksRunner`); each worker runs it with an in-process runner
  of its own.
"""

from __future__ import annotations

from typing import Any, Protocol

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest
from django.utils.module_loading import import_string

from .. import conf
from ..models import Job
from .inprocess import InProcessRunner


class Dispatcher(Protocol):
    def prepare(self, job: Job) -> None:
        """Set what a new job needs before it is first saved."""

    async def dispatch(self, job: Job) -> None:
        """Get a saved, queued job running."""


#: The runners that put jobs on a queue, by their ``RUNNER`` name, loaded by dotted
#: path as django-tasks loads its backends: the engine never imports one. (``tasks``
#: needs django.tasks, which Django 5.2 has only as the backport; and its worker side
#: runs a runtime, a layer above the runners.)
QUEUE_RUNNERS = {"tasks": "liveprogress.runners.tasks.TasksRunner"}


def dispatcher(local: InProcessRunner) -> Dispatcher:
    """The runner that ``RUNNER`` names; ``local`` serves ``inprocess``."""
    path = QUEUE_RUNNERS.get(conf.get("RUNNER"))
    if path is None:
        return local
    runner: Dispatcher = import_string(path)()
    return runner


#: Why a job started from a request served over WSGI can't run in-process.
WSGI_REASON = (
    "This request was served over WSGI, where in-process jobs can't run (they would "
    "end with the request). Serve the site with an ASGI server: add 'daphne' to "
    "INSTALLED_APPS before 'django.contrib.staticfiles' (runserver then speaks ASGI), "
    "or run uvicorn, hypercorn or granian; or set LIVEPROGRESS['RUNNER'] = 'tasks'. "
    "In tests, run jobs with liveprogress.testing.run_job."
)


def unrunnable_reason(origin: Any) -> str:
    """Why a job started from ``origin`` (a request, or the site's code) could not
    run, or an empty string when it can."""
    if (
        isinstance(origin, HttpRequest)
        and not isinstance(origin, ASGIRequest)
        and conf.get("RUNNER") == "inprocess"
    ):
        return WSGI_REASON
    return ""


__all__ = [
    "QUEUE_RUNNERS",
    "WSGI_REASON",
    "Dispatcher",
    "InProcessRunner",
    "dispatcher",
    "unrunnable_reason",
]
