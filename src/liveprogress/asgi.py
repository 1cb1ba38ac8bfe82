"""A ready ASGI application for a site that uses liveprogress: ``asgi.py`` in three lines.

    import os
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from liveprogress.asgi import get_asgi_application
    application = get_asgi_application()

It routes HTTP to Django (with the static files where runserver would serve
them), the ASGI lifespan to liveprogress's start-up and clean stop, and
WebSockets to liveprogress's socket behind an origin check and the session and
auth middleware.
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
    from channels.security.websocket import AllowedHostsOriginValidator
    from django.apps import apps
    from django.conf import settings
    from django.urls import re_path

    from .lifespan import lifespan
    from .routing import websocket_urlpatterns as liveprogress_routes

    if serve_static is None:
        serve_static = settings.DEBUG and apps.is_installed("django.contrib.staticfiles")
    http: Any = django_application
    if serve_static:
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        http = ASGIStaticFilesHandler(django_application)
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
            "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(routes))),
        }
    )


_told: set[str] = set()


async def no_route(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A socket at a path no route serves: closed with ``CLOSE_NO_ROUTE``, and logged
    once per path (not a traceback per attempt)."""
    path = str(scope.get("path", ""))[:200]
    if path not in _told and len(_told) < 100:
        _told.add(path)
        logger.warning(
            "no WebSocket route for %r: closed with %d (liveprogress serves ws/progress/)",
            path,
            CLOSE_NO_ROUTE,
        )
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": CLOSE_NO_ROUTE})
