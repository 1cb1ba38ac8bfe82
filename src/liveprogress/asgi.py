"""A ready ASGI application for a site that uses liveprogress: ``asgi.py`` in three lines.

    import os
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from liveprogress.asgi import get_asgi_application
    application = get_asgi_application()

It routes HTTP to Django (with the static files where runserver would serve
them), the ASGI lifespan to liveprogress's start-up and clean stop, and
WebSockets to liveprogress's socket behind an origin check as strict as
Django's CSRF check (``liveprogress.origin``) and the session and auth middleware.
While a service the site needs is down, both say so (:class:`AnswerUnavailable`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from django.core.asgi import get_asgi_application as get_django_asgi_application

from .outage import is_unavailable

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)

#: Close code for a socket opened at a path no route serves.
CLOSE_NO_ROUTE = 4404
#: Close code for a socket that can't be served while a service is down; an
#: ``unavailable`` error frame comes just before it. RFC 6455's "Try Again Later" is
#: 1013, but Daphne (autobahn) lets an application close with 1000 or 3000-4999 only.
CLOSE_UNAVAILABLE = 4013


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
            "http": AnswerUnavailable(http),
            # Uvicorn, Hypercorn, Granian: start-up recovery before the first
            # request, a clean stop; Daphne ignores it (the first request starts it).
            "lifespan": lifespan,
            # The origin as strict as Django's CSRF check: scheme, host and port.
            "websocket": AnswerUnavailable(
                SameOriginValidator(AuthMiddlewareStack(URLRouter(routes)))
            ),
        }
    )


#: Set by AnswerUnavailable around each HTTP request: what answers it instead of
#: Django's 500 when a service it needed was down, with the error that said so
#: (empty: a 500 stays a 500).
_outage_answer: ContextVar[list[tuple[HttpResponse, str]] | None] = ContextVar(
    "liveprogress_outage_answer", default=None
)


class _OutageLogFilter(logging.Filter):
    """On ``django.request``: Django's "Internal Server Error" record, with its
    traceback, for a 500 that goes out as a 503 (a service down is no bug; one warning
    line says it, ``liveprogress.asgi``). Every other record passes. The 500 is an
    outage when :func:`_note_outage` made its answer (it judged the exception)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "status_code", None) != 500 or not _outage_answer.get()


class AnswerUnavailable:
    """ASGI middleware: while a service the site needs is down, say so.

    HTTP: a 500 that an unreachable database or Redis caused goes out as a 503 with
    ``Retry-After``: the API's JSON error (``unavailable``) under the API or to a
    client that takes no HTML, a short page that says to try again elsewhere. Any
    other 500 is left alone. Django turns an exception into a 500 response before
    any middleware sees it; its ``got_request_exception`` signal, sent while the
    exception is handled, is where the answer is made (:func:`_note_outage`).

    WebSocket: a socket that can't start (its session can't be read) is accepted
    and told ``unavailable``, then closed with :data:`CLOSE_UNAVAILABLE`.
    """

    def __init__(self, application: Any) -> None:
        from django.core.signals import got_request_exception

        self.application = application
        got_request_exception.connect(_note_outage, dispatch_uid="liveprogress.asgi.outage")
        request_logger = logging.getLogger("django.request")
        if not any(isinstance(each, _OutageLogFilter) for each in request_logger.filters):
            request_logger.addFilter(_OutageLogFilter())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "http":
            return await self._http(scope, receive, send)
        if scope["type"] == "websocket":
            return await self._websocket(scope, receive, send)
        return await self.application(scope, receive, send)

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        answer: list[tuple[HttpResponse, str]] = []
        replaced = False

        async def send_or_replace(message: dict[str, Any]) -> None:
            nonlocal replaced
            if replaced:
                return  # the 500's body: the answer went in its place
            if message["type"] == "http.response.start" and message["status"] == 500 and answer:
                replaced = True
                response, error = answer[-1]
                logger.warning(
                    "service unavailable: answered 503 path=%s error=%s", scope["path"][:200], error
                )
                await _send_response(send, response, head=scope.get("method") == "HEAD")
                return
            await send(message)

        token = _outage_answer.set(answer)
        try:
            await self.application(scope, receive, send_or_replace)
        finally:
            _outage_answer.reset(token)

    async def _websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        from channels.db import aclose_old_connections

        from .consumers import SERVER_SEND
        from .exceptions import Unavailable
        from .state import encode, error_frame

        accepted = False
        # The socket's frames go to the server's send directly (they come after the
        # accept, which is all tracked_send watches for).
        scope = {**scope, SERVER_SEND: send}

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal accepted
            accepted = accepted or message["type"] == "websocket.accept"
            await send(message)

        try:
            await self.application(scope, receive, tracked_send)
        except Exception as error:
            if not is_unavailable(error):
                raise
            logger.warning("service unavailable: socket closed (%d): %s", CLOSE_UNAVAILABLE, error)
            # The broken connection goes, so the next socket connects afresh.
            await aclose_old_connections()
            frame = encode(error_frame(Unavailable()))
            # The client may be gone already: nothing then to tell.
            with contextlib.suppress(Exception):
                if not accepted:
                    await send({"type": "websocket.accept"})
                await send({"type": "websocket.send", "text": frame})
                await send({"type": "websocket.close", "code": CLOSE_UNAVAILABLE})


def _note_outage(sender: Any, request: HttpRequest, **kwargs: Any) -> None:
    """``got_request_exception``: when the exception being handled says a service is
    down, make the answer that replaces the 500 (the last exception decides: the
    500 that goes out is the one made for it)."""
    answer = _outage_answer.get()
    if answer is None:
        return  # not under AnswerUnavailable (WSGI, the test client)
    answer.clear()
    error = sys.exc_info()[1]
    if error is None or not is_unavailable(error):
        return
    try:
        answer.append((unavailable_response(request), f"{type(error).__name__}: {error}"[:300]))
    except Exception:
        # Never worse than Django's own answer: the 500 stays.
        logger.exception("the 503 answer could not be made path=%s", request.path[:200])


def unavailable_response(request: HttpRequest) -> HttpResponse:
    """503 with ``Retry-After``: the API's JSON error under the API or for a client
    that takes no HTML, else a short page in the request's language."""
    from django.http import HttpResponse
    from django.template.loader import render_to_string
    from django.utils import translation
    from django.utils.cache import add_never_cache_headers

    from .api import error_response, is_api
    from .exceptions import Unavailable

    error = Unavailable()
    if is_api(request) or not request.accepts("text/html"):
        response: HttpResponse = error_response(error)
    else:
        language = getattr(request, "LANGUAGE_CODE", None)
        language = language or translation.get_language_from_request(request)
        with translation.override(language):
            shown = translation.get_language()
            # No request in the context: its processors could read the session.
            page = render_to_string(
                "liveprogress/unavailable.html",
                {
                    "retry_after": error.retry_after,
                    # A GET can try again by itself; a POST would be sent again.
                    "refresh": request.method in ("GET", "HEAD"),
                    "language": shown,
                },
            )
        response = HttpResponse(page, status=error.http_status)
        response["Retry-After"] = str(error.retry_after)
        response["Content-Language"] = shown
    add_never_cache_headers(response)
    return response


async def _send_response(send: Any, response: HttpResponse, *, head: bool) -> None:
    headers = [(name.encode("latin-1"), text.encode("latin-1")) for name, text in response.items()]
    headers.append((b"content-length", b"%d" % len(response.content)))
    body = b"" if head else response.content
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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
    from django.http import FileResponse, Http404

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
