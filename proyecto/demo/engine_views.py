"""Starting the demo's timed process on another engine: ``POST /api/engines/<engine>/``.

The process is that engine's task (``proyecto/demo/engines/``), not a kind
clients may start through liveprogress's API, so this view starts it for the
visitor, who then watches it like any of their jobs. Engines this site is not
set up for answer 404.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse

from liveprogress.api import api_view
from liveprogress.exceptions import BadRequest, NotFound
from liveprogress.state import decode_object

from .engines import engines, timer_task
from .jobs import timer

#: The request body's limit (it holds two numbers).
BODY_MAX_BYTES = 1024


@api_view("POST")
async def start_on_engine(request: HttpRequest, engine: str) -> HttpResponse:
    """Start the timed process on ``engine`` for the visitor, with ``{"steps",
    "interval"}`` (checked as ``demo.timer`` checks them); 201 and the job's state."""
    if engine not in engines():
        raise NotFound(f"This site runs no {engine[:40]!r} engine", field="engine")
    if request.content_type != "application/json" or len(request.body) > BODY_MAX_BYTES:
        raise BadRequest("Send a small application/json body")
    params = timer.kind.validate(decode_object(request.body or b"{}", "body"))
    handle = await timer_task(engine).astart(request, **params)
    response = JsonResponse(handle.state, status=201)
    response["Location"] = reverse("liveprogress:job", args=[handle.id])
    return response
