"""A ready ASGI application for a site that uses liveprogress: ``asgi.py`` in three lines.

    import os
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from liveprogress.asgi import get_asgi_application
    application = get_asgi_application()

It routes HTTP to Django (with the static files where runserver would serve
them), the ASGI lifespan to liveprogress's start-up and clean stop, and
WebSockets to liveprogress's socket behind an origin check as strict as
Django's CSRF check (``liveprogress.origin``) and the session and auth middleware.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.core.asgi import get_asgi_application as get_django_asgi_application

logger = logging.getLogger(__name__)

#: Close code for a socket opened at a path no route serves.
CLOSE_NO_ROUTE = 4404


def get_asgi_application(
    *, serve_static: bool | None = None, websocket_urlpatterns: Sequence[Any] = ()
) -> Any:
    """The site's ASGI application: Django, the static files, liveprogress's socket.

    ``serve_static``: serve the static files from the app (their finders, no
    ``collectstatic``); by default only when ``DEBUG`` is on and
    ``django.contrib.staticfiles`` is installed, as ``runserver`` does. In
    production serve them from the web server or WhiteNoise.
    ``websocket_urlpatterns``: the site's own socket routes, beside liveprogress's.
    """
    # Django first: the imports below need the app registry ready.
    django_application = get_django_asgi_application()

    from channels.auth import AuthMiddlewareStack
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.apps import apps
    from django.conf import settings
    from django.urls import re_path

    from .lifespan import lifespan
    from .origin import SameOriginValidator
    from .routing import websocket_urlpatterns as liveprogress_routes

    if serve_static is None:
        serve_static = settings.DEBUG and apps.is_installed("django.contrib.staticfiles")
    http: Any = BodyLimit(django_application)
    if serve_static:
        http = _static_files_handler(http)
    # Channels routes ASGI applications with Django's re_path, which django-stubs
    # types for HTTP views only.
    catch_all = re_path(r"", no_route)  # type: ignore[arg-type]
    routes = [*liveprogress_routes, *websocket_urlpatterns, catch_all]
    return ProtocolTypeRouter(
        {
            "http": http,
            # Uvicorn, Hypercorn, Granian: start-up recovery before the first
            # request, a clean stop; Daphne ignores it (the first request starts it).
            "lifespan": lifespan,
            # The origin as strict as Django's CSRF check: scheme, host and port.
            "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(routes))),
        }
    )


class BodyLimit:
    """ASGI middleware: a body sent to the JSON API past ``MAX_FRAME_BYTES`` is refused
    (413, JSON) as soon as it goes past, chunked or not: Django would read it whole
    before any view could look at its size."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.application(scope, receive, send)
        from django.urls import reverse

        if not str(scope.get("path", "")).startswith(reverse("liveprogress:jobs")):
            return await self.application(scope, receive, send)
        from . import conf

        limit = conf.get("MAX_FRAME_BYTES")
        received: list[dict[str, Any]] = []
        size = 0
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                return await _too_large(send, limit)
            if not message.get("more_body"):
                break
        replay = iter(received)

        async def replayed() -> Any:
            return next(replay, None) or await receive()

        return await self.application(scope, replayed, send)


async def _too_large(send: Any, limit: int) -> None:
    from .exceptions import TooLarge
    from .state import encode, error_frame

    body = encode(error_frame(TooLarge(f"Bodies may be at most {limit} bytes"))).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _static_files_handler(application: Any) -> Any:
    """Django's static files handler, answering 404 (not a 500 and a traceback) to a
    path that climbs out of the static folders (``/static/..%2f..%2fmanage.py``)."""
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
    from django.core.exceptions import SuspiciousFileOperation
    from django.http import FileResponse, Http404, HttpRequest, HttpResponse

    class StaticFilesHandler(ASGIStaticFilesHandler):
        def serve(self, request: HttpRequest) -> HttpResponse | FileResponse:
            try:
                return super().serve(request)
            except SuspiciousFileOperation:
                raise Http404("No such file") from None

    return StaticFilesHandler(application)


_told: set[str] = set()


async def no_route(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A socket at a path no route serves: closed with ``CLOSE_NO_ROUTE``, and logged
    once per path (not a traceback per attempt)."""
    from .routing import SOCKET_PATH  # the app registry is ready by now

    path = str(scope.get("path", ""))[:200]
    if path not in _told and len(_told) < 100:
        _told.add(path)
        logger.warning(
            "no WebSocket route for %r: closed with %d (liveprogress serves %s)",
            path,
            CLOSE_NO_ROUTE,
            SOCKET_PATH,
        )
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": CLOSE_NO_ROUTE})
