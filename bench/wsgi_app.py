"""The timed process inside a synchronous request, for a WSGI server with sync workers.

    gunicorn -k sync -w 5 -b 127.0.0.1:PORT bench.wsgi_app:application

``GET /run?steps=N&interval=S`` sleeps through the timed process in the request
(the worker can do nothing else meanwhile) and answers when it is over; the
visitor sees no progress, only the end. ``GET /page`` is a plain page: what every
other visitor wants while the workers are busy. No Django: the cost measured is
the design's (a worker held for the whole job), not a framework's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

PAGE = b"<!doctype html><title>Progress</title><p>A plain page.</p>"


def application(
    environ: dict[str, Any], start_response: Callable[[str, list[tuple[str, str]]], Any]
) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/run":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        steps = int(query.get("steps", ["10"])[0])
        interval = float(query.get("interval", ["1"])[0])
        for _ in range(steps):
            time.sleep(interval)
        body = json.dumps(
            {"progress": 100, "message": "¡Proceso completado!", "ts": time.time()}
        ).encode()
        content_type = "application/json"
    elif path == "/page":
        body, content_type = PAGE, "text/html; charset=utf-8"
    else:
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]
