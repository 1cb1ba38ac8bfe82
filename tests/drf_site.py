"""A site built on Django REST framework (tests/test_drf.py): liveprogress's viewset
on the site's router, and a view of the site's own that starts a kind clients may
not start, with the public API. Beside the demo site's routes, so a visitor can
load a page (session and CSRF cookies) and open the socket."""

from __future__ import annotations

import asyncio
from typing import Annotated

from django.urls import include, path
from pydantic import Field
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from liveprogress import Progress, job
from liveprogress.drf import JobAPIView, JobViewSet
from proyecto.urls import urlpatterns as demo_urlpatterns


@job("drf_site.export", title="Export", public=False)
async def export(
    progress: Progress,
    rows: Annotated[int, Field(ge=1, le=1000)] = 3,
    interval: float = 0.01,
) -> dict[str, int]:
    progress.start(total=rows)
    for _ in range(rows):
        await asyncio.sleep(interval)
        progress.advance()
    return {"rows": rows}


class ExportView(JobAPIView):
    """The site's own endpoint: it decides what to export, and starts it for the caller."""

    def post(self, request: Request) -> Response:
        handle = export.start(request, **request.data)
        return Response(handle.state, status=201)


router = SimpleRouter()
router.register("rest/jobs", JobViewSet, basename="job")

urlpatterns = [
    path("rest/exports/", ExportView.as_view()),
    # Routed by hand, without a router: no route names to reverse.
    path("rest/by-hand/", JobViewSet.as_view({"get": "list", "post": "create"})),
    path("", include(router.urls)),
    *demo_urlpatterns,
]
