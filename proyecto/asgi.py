"""ASGI entry point: ``daphne -b 127.0.0.1 -p 8000 proyecto.asgi:application``."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proyecto.settings")

from liveprogress.asgi import get_asgi_application  # noqa: E402

# The demo serves its own assets, DEBUG or not (no CDN, no collectstatic step).
application = get_asgi_application(serve_static=True)
