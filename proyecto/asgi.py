"""ASGI entry point: ``daphne -b 127.0.0.1 -p 8000 proyecto.asgi:application``."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proyecto.settings")
# Django first: the imports below need the app registry ready.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from liveprogress.lifespan import lifespan  # noqa: E402
from liveprogress.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # The demo serves its own assets (no CDN, no collectstatic step, DEBUG or
        # not); a production site serves them from its web server or WhiteNoise.
        "http": ASGIStaticFilesHandler(django_asgi_app),
        # Uvicorn: start-up recovery before the first request; Daphne ignores it.
        "lifespan": lifespan,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
