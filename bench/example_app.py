"""The original example's design, for comparison: the timed loop inside the consumer.

    daphne -v 0 -b 127.0.0.1 -p PORT bench.example_app:application

A Channels ``AsyncWebsocketConsumer`` at ``/ws/progress/`` that, on connect, loops
``steps`` times (default 10): sleep ``interval`` seconds (default 1), send
``{"progress": P, "message": "Progreso: P%"}``, then ``"¡Proceso completado!"``.
One job per socket, nothing persisted, nothing shared: a reload starts over.
Query parameters ``steps`` and ``interval`` set the loop; each frame also carries
``ts`` (epoch seconds at send), the one addition, so latency can be measured.
``GET /progress/`` is a plain page, as in the example. Self-contained: its own
minimal Django settings, the in-memory channel layer as in the demo site.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import parse_qs

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-example-not-secret",  # noqa: S106
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["channels"],
    MIDDLEWARE=[],
    CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    USE_TZ=True,
)
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

PAGE = "<!doctype html><title>Progress</title><p>Progreso: <span id=p>0</span>%</p>"


class ProgressConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        query = parse_qs(self.scope.get("query_string", b"").decode())
        steps = int(query.get("steps", ["10"])[0])
        interval = float(query.get("interval", ["1"])[0])
        await self.accept()
        for step in range(1, steps + 1):
            await asyncio.sleep(interval)
            progress = step * 100 // steps
            await self.send(
                json.dumps(
                    {"progress": progress, "message": f"Progreso: {progress}%", "ts": time.time()}
                )
            )
        await self.send(
            json.dumps({"progress": 100, "message": "¡Proceso completado!", "ts": time.time()})
        )


def progress_page(request: object) -> HttpResponse:
    return HttpResponse(PAGE)


urlpatterns = [path("progress/", progress_page)]

application = ProtocolTypeRouter(
    {
        "http": get_asgi_application(),
        "websocket": URLRouter([path("ws/progress/", ProgressConsumer.as_asgi())]),
    }
)
