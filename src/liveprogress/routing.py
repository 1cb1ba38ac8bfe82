"""WebSocket routes of liveprogress, for the site's ``URLRouter``."""

from __future__ import annotations

from django.urls import path

from .consumers import ProgressConsumer

websocket_urlpatterns = [
    path("ws/progress/", ProgressConsumer.as_asgi()),
]
