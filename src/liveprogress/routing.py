"""WebSocket routes of liveprogress, for the site's ``URLRouter``."""

from __future__ import annotations

from django.urls import path

from .consumers import ProgressConsumer

#: The path of liveprogress's socket.
SOCKET_PATH = "ws/progress/"

websocket_urlpatterns = [
    path(SOCKET_PATH, ProgressConsumer.as_asgi()),
]
