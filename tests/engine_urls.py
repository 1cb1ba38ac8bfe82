"""The demo site plus ``POST /test-tasks/<engine>/<name>/``: start the test task
``tests.engine_tasks.<engine>.<name>`` for the visitor, with ``{"args", "kwargs"}``."""

from __future__ import annotations

import json
from importlib import import_module

from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
async def start_task(request: HttpRequest, engine: str, name: str) -> JsonResponse:
    body = json.loads(request.body or b"{}")
    task = getattr(import_module(f"tests.engine_tasks.{engine}"), name)
    handle = await task.astart(request, *body.get("args", []), **body.get("kwargs", {}))
    return JsonResponse(handle.state, status=201)


urlpatterns = [
    path("test-tasks/<str:engine>/<str:name>/", start_task),
    path("", include("proyecto.urls")),
]
