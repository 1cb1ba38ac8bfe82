"""A site's own views that start jobs through the public API (tests/test_public_api.py)."""

from __future__ import annotations

from django.http import Http404, HttpRequest, JsonResponse
from django.urls import include, path

from liveprogress import JobNotFound, aget_job, get_job
from proyecto.demo.jobs import timer


async def start_async(request: HttpRequest) -> JsonResponse:
    handle = await timer.astart(request, steps=1, interval=0)
    return JsonResponse({"id": handle.id, "owner": handle.owner, "state": handle.state})


def start_sync(request: HttpRequest) -> JsonResponse:
    handle = timer.start(request, steps=1, interval=0)
    again = get_job(request, handle.id).refresh()
    body = {"id": handle.id, "owner": handle.owner, "state": handle.state, "again": again.state}
    return JsonResponse(body)


async def show_async(request: HttpRequest, job_id: str) -> JsonResponse:
    try:
        handle = await aget_job(request, job_id)
    except JobNotFound:
        raise Http404("No such job") from None
    return JsonResponse(handle.state)


urlpatterns = [
    path("start-async/", start_async),
    path("start-sync/", start_sync),
    path("show/<str:job_id>/", show_async),
    path("", include("liveprogress.urls")),
]
