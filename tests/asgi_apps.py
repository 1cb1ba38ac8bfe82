"""ASGI applications for the W007 check's tests: with and without liveprogress's socket."""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from channels.generic.websocket import WebsocketConsumer
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application as get_django_asgi_application
from django.urls import path

from liveprogress.asgi import get_asgi_application
from liveprogress.consumers import ProgressConsumer
from liveprogress.routing import websocket_urlpatterns

#: Django alone: HTTP, no WebSocket at all.
plain = get_django_asgi_application()

#: liveprogress's ready application.
liveprogress = get_asgi_application()

#: A site's own router with liveprogress's routes, behind channels' middleware.
by_hand = ProtocolTypeRouter(
    {"http": plain, "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns))}
)

#: liveprogress's consumer under nested routers: ws/ then progress/.
nested = ProtocolTypeRouter(
    {
        "http": plain,
        "websocket": URLRouter(
            [path("ws/", URLRouter([path("progress/", ProgressConsumer.as_asgi())]))]
        ),
    }
)


class ChatConsumer(WebsocketConsumer):
    pass


#: Sockets, but only the site's own.
other_sockets = ProtocolTypeRouter(
    {"http": plain, "websocket": URLRouter([path("ws/chat/", ChatConsumer.as_asgi())])}
)

#: ws/progress/ taken by another consumer.
other_consumer = ProtocolTypeRouter(
    {"http": plain, "websocket": URLRouter([path("ws/progress/", ChatConsumer.as_asgi())])}
)

#: A router for HTTP only.
http_only = ProtocolTypeRouter({"http": plain})
