"""Views and a socket for tests/test_outage.py: each fails the way a real outage, or
a real bug, makes it fail (a connection to a port nobody listens on, a bad query)."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.db import connection
from django.db.utils import ConnectionHandler
from django.http import HttpRequest, HttpResponse
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt

from liveprogress.api import api_view
from tests.servers import HOST, free_port


def database_down() -> None:
    """Connect to a PostgreSQL port nobody listens on: Django's OperationalError."""
    settings = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": HOST,
        "PORT": str(free_port()),
        "NAME": "gone",
        "USER": "nobody",
        "OPTIONS": {"connect_timeout": 2},
    }
    handler = ConnectionHandler({"default": settings})
    try:
        handler["default"].ensure_connection()
    finally:
        handler.close_all()


@csrf_exempt
def down_page(request: HttpRequest) -> HttpResponse:
    database_down()
    return HttpResponse("never")


@api_view("GET", "POST")
async def down_api(request: HttpRequest) -> HttpResponse:
    from asgiref.sync import sync_to_async

    await sync_to_async(database_down)()
    return HttpResponse("never")


def bug_page(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table")  # OperationalError too, yet a bug
    return HttpResponse("never")


def crash_page(request: HttpRequest) -> HttpResponse:
    raise ZeroDivisionError("a bug")


class DownConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """A socket whose start needs the database, which is down."""

    async def connect(self) -> None:
        from asgiref.sync import sync_to_async

        await sync_to_async(database_down)()


class CrashConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    async def connect(self) -> None:
        raise ZeroDivisionError("a bug")


urlpatterns = [
    path("down/", down_page),
    path("down-api/", down_api),
    path("bug/", bug_page),
    path("crash/", crash_page),
    path("", include("proyecto.urls")),
]

websocket_urlpatterns: list[Any] = [
    re_path(r"^ws/down/$", DownConsumer.as_asgi()),
    re_path(r"^ws/crash/$", CrashConsumer.as_asgi()),
]
