"""liveprogress.asgi.get_asgi_application: a site's whole ASGI app in one call."""

from __future__ import annotations

import logging

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.testing import WebsocketCommunicator

from liveprogress.asgi import CLOSE_NO_ROUTE, get_asgi_application

CSS = "/static/liveprogress/liveprogress.css"
ORIGIN = [(b"origin", b"http://localhost"), (b"host", b"localhost")]


async def status_of(app, path: str) -> int:
    """The status the app answers a GET of ``path`` with, its whole body read."""
    communicator = ApplicationCommunicator(
        app,
        {
            "type": "http",
            "http_version": "1.1",
            "method": "GET",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"host", b"localhost")],
        },
    )
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(timeout=5)
    while (await communicator.receive_output(timeout=5)).get("more_body"):
        pass
    await communicator.wait(timeout=5)
    return start["status"]


@pytest.mark.parametrize(
    ("debug", "serve_static", "served"),
    [(True, None, True), (False, None, False), (False, True, True), (True, False, False)],
)
async def test_static_files_are_served_where_runserver_would(
    settings, transactional_db, debug, serve_static, served
):
    settings.DEBUG = debug
    app = get_asgi_application(serve_static=serve_static)
    assert await status_of(app, CSS) == (200 if served else 404)
    # Django answers everything else.
    assert await status_of(app, "/jobs/") == 200


async def test_the_socket_is_routed_behind_the_origin_check(runtime):
    app = get_asgi_application()
    socket = WebsocketCommunicator(app, "/ws/progress/", headers=ORIGIN)
    connected, _ = await socket.connect(timeout=5)
    assert connected
    await socket.send_json_to({"type": "watch_mine"})
    assert (await socket.receive_json_from(timeout=5))["type"] in ("error", "watching")
    await socket.disconnect()

    foreign = WebsocketCommunicator(
        app, "/ws/progress/", headers=[(b"origin", b"http://evil.example"), (b"host", b"localhost")]
    )
    connected, _ = await foreign.connect(timeout=5)
    assert not connected


async def test_a_socket_at_a_path_no_route_serves_is_closed_and_logged_once(runtime, caplog):
    app = get_asgi_application()
    caplog.set_level(logging.WARNING, logger="liveprogress.asgi")
    for _attempt in range(3):
        socket = WebsocketCommunicator(app, "/ws/elsewhere/", headers=ORIGIN)
        connected, code = await socket.connect(timeout=5)
        assert (connected, code) == (False, CLOSE_NO_ROUTE)
    told = [record for record in caplog.records if "/ws/elsewhere/" in record.getMessage()]
    assert len(told) == 1
    assert "ws/progress/" in told[0].getMessage()
    assert not any(record.exc_info for record in caplog.records)


async def test_the_site_s_own_socket_routes_come_along(runtime):
    from django.urls import path

    async def echo(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})

    app = get_asgi_application(websocket_urlpatterns=[path("ws/echo/", echo)])
    socket = WebsocketCommunicator(app, "/ws/echo/", headers=ORIGIN)
    connected, _ = await socket.connect(timeout=5)
    assert connected
    await socket.disconnect()
