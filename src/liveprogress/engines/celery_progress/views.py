"""celery-progress's status view, answered from the task's liveprogress job.

The JSON is celery-progress's own (``state``, ``complete``, ``success``,
``progress`` with ``current``, ``total``, ``percent``, ``description``,
``result``), so celery-progress's script and a site's own polling keep working.
Unlike celery-progress, only the job's owner learns anything: any other caller,
like a task id nobody sent, gets the answer celery-progress gives an unknown
task (pending). A job no send gave an owner (``UNCLAIMED_OWNER``) goes to the
first visitor who asks about it, who holds its id because the page that
enqueued it was given it.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache

from ... import actions
from ...exceptions import JobNotFound
from ...models import Job, Status
from ...owner import request_owner
from ...publish import publish
from ...state import job_state
from ..base import job_id_of
from . import UNCLAIMED_OWNER

#: celery-progress's ``progress`` of a task that has ended, and of one not begun.
_DONE = {"pending": False, "current": 100, "total": 100, "percent": 100}


def _unknown(*, pending: bool) -> dict[str, Any]:
    return {"pending": pending, "current": 0, "total": 100, "percent": 0}


@never_cache
async def get_progress(request: HttpRequest, task_id: str) -> HttpResponse:
    """The task's progress as celery-progress answers it, to the job's owner."""
    return HttpResponse(json.dumps(await _info(request, task_id)), content_type="application/json")


async def _info(request: HttpRequest, task_id: str) -> dict[str, Any]:
    pending = {
        "state": "PENDING",
        "complete": False,
        "success": None,
        "progress": _unknown(pending=True),
    }
    job_id = job_id_of(task_id)
    if job_id is None:
        return pending
    owner = await request_owner(request, create=False)
    held_by = await Job.objects.filter(pk=job_id).values_list("owner", flat=True).afirst()
    if held_by == UNCLAIMED_OWNER:
        owner = await request_owner(request)
        assert owner is not None  # noqa: S101 (create=True always gives one)
        if await Job.objects.adopt(job_id, UNCLAIMED_OWNER, owner):
            await publish(await Job.objects.aget(pk=job_id))
    if owner is None:
        return pending
    try:
        job = await actions.get_job(owner, job_id)
    except JobNotFound:
        return pending
    return celery_progress_info(job)


def celery_progress_info(job: Job) -> dict[str, Any]:
    """``job`` as celery-progress's ``Progress.get_info()`` tells a task."""
    state = job_state(job)
    if job.status == Status.QUEUED and job.retry_at is not None:
        seconds = max(round((job.retry_at - job.updated_at).total_seconds()), 0)
        result = {"next_retry_seconds": seconds, "message": f"{job.error[:50]}..."}
        return {
            "state": "RETRY",
            "complete": True,
            "success": False,
            "progress": _DONE,
            "result": result,
        }
    if job.status == Status.QUEUED:
        return {
            "state": "PENDING",
            "complete": False,
            "success": None,
            "progress": _unknown(pending=True),
        }
    if job.status == Status.RUNNING:
        progress = {
            "pending": False,
            "current": job.current,
            "total": job.total or 0,
            "percent": state["percent"] or 0,
            "description": job.message,
        }
        return {"state": "PROGRESS", "complete": False, "success": None, "progress": progress}
    if job.status == Status.SUCCEEDED:
        return {
            "state": "SUCCESS",
            "complete": True,
            "success": True,
            "progress": _DONE,
            "result": job.result,
        }
    if job.status == Status.CANCELLED:
        return {
            "state": "REVOKED",
            "complete": True,
            "success": False,
            "progress": _DONE,
            "result": "Task cancelled",
        }
    return {
        "state": "FAILURE",
        "complete": True,
        "success": False,
        "progress": _DONE,
        "result": job.error,
    }
