"""ASGI config for mysite: ``daphne mysite.asgi:application`` (or uvicorn, hypercorn, granian).

liveprogress's application serves HTTP, the static files when DEBUG is on (like
runserver), and the progress socket at ws/progress/.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
from liveprogress.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
