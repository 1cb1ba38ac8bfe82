"""The demo site plus what the engines benchmark needs (``bench/engines.py``):

- ``POST /bench/tasks/<name>/`` with ``{kwargs}``: send a task of
  ``bench/engine_tasks.py`` (liveprogress's for the visitor, as ``task.astart``
  does in a view); 201 and ``{"id": task id}``.
- ``/celery-progress/<task_id>/``: celery-progress's JSON view, routed as its
  README says, which its JavaScript polls.
"""

from __future__ import annotations

import json

from asgiref.sync import sync_to_async
from django.http import Http404, HttpRequest, JsonResponse
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt

from liveprogress.engines.celery import ProgressTask

from .engine_tasks import TASKS


@csrf_exempt
async def start_task(request: HttpRequest, name: str) -> JsonResponse:
    if name not in TASKS:
        raise Http404(f"No benchmark task {name!r}, must be one of: {', '.join(TASKS)}")
    task = TASKS[name]
    kwargs = json.loads(request.body or b"{}")
    if isinstance(task, ProgressTask):
        task_id = (await task.astart(request, **kwargs)).id
    else:
        # Celery's send talks to the broker, blocking: in a thread.
        task_id = (await sync_to_async(task.apply_async, thread_sensitive=False)(kwargs=kwargs)).id
    return JsonResponse({"id": str(task_id)}, status=201)


urlpatterns = [
    path("bench/tasks/<str:name>/", start_task),
    re_path(r"^celery-progress/", include("celery_progress.urls")),
    path("", include("proyecto.urls")),
]
