"""The demo site plus ``POST /test-tasks/<engine>/<name>/``: start the test task
``tests.engine_tasks.<engine>.<name>`` for the visitor, with ``{"args", "kwargs"}``."""

from __future__ import annotations

import json
from importlib import import_module

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

from liveprogress import aowner_of


@csrf_exempt
async def start_task(request: HttpRequest, engine: str, name: str) -> JsonResponse:
    body = json.loads(request.body or b"{}")
    task = getattr(import_module(f"tests.engine_tasks.{engine}"), name)
    handle = await task.astart(request, *body.get("args", []), **body.get("kwargs", {}))
    return JsonResponse(handle.state, status=201)


@csrf_exempt
async def send_legacy(request: HttpRequest) -> JsonResponse:
    """Send the celery-progress task the way its users do (``delay``), no owner named;
    or, with ``"owned": true``, naming the visitor as its owner in a header."""
    from tests.engine_tasks.celery import legacy

    body = json.loads(request.body or b"{}")
    args = (body["steps"], body["interval"])
    if body.get("owned"):
        # Owned from the send: the header the celery-progress switch reads.
        headers = {"liveprogress_owner": await aowner_of(request)}
        result = await sync_to_async(legacy.apply_async)(args, headers=headers)
    else:
        result = await sync_to_async(legacy.delay)(*args)
    return JsonResponse({"task_id": result.task_id}, status=201)


urlpatterns = [
    path("test-tasks/<str:engine>/<str:name>/", start_task),
    path("test-legacy/", send_legacy),
    path("celery-progress/", include("liveprogress.engines.celery_progress.urls")),
    path("", include("proyecto.urls")),
]
