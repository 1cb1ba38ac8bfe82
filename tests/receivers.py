"""A local webhook receiver for the tests: a real HTTP server on a free port.

Each path behaves as a test needs: ``/ok`` answers 204, ``/flaky/<n>`` fails its
first n calls with a 503, ``/hang`` answers only after ``hang_seconds``,
``/broken`` always answers 500. Every call is kept with whether its signature
verified.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from liveprogress.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, verify


@dataclass
class Call:
    path: str
    body: dict[str, Any]
    delivery: str
    signed: bool
    at: float


@dataclass
class Receiver:
    secret: str
    hang_seconds: float = 5.0
    calls: list[Call] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    called: threading.Condition = field(init=False)
    url: str = ""

    def __post_init__(self) -> None:
        self.called = threading.Condition(self.lock)

    def wait_for(self, predicate: Any, timeout: float = 10) -> None:
        """Block until ``predicate(calls)`` holds (run the test's waits in a thread)."""
        with self.called:
            if not self.called.wait_for(lambda: predicate(self.calls), timeout):
                raise AssertionError(f"receiver never saw it; calls: {self.calls}")


def serve(secret: str, hang_seconds: float = 5.0) -> tuple[Receiver, http.server.HTTPServer]:
    receiver = Receiver(secret, hang_seconds)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            signed = verify(receiver.secret, self.headers.get(SIGNATURE_HEADER, ""), raw)
            with receiver.called:
                receiver.seen[self.path] += 1
                tries = receiver.seen[self.path]
                receiver.calls.append(
                    Call(
                        self.path,
                        json.loads(raw),
                        self.headers.get(DELIVERY_HEADER, ""),
                        signed,
                        time.monotonic(),
                    )
                )
                receiver.called.notify_all()
            status = 204
            if self.path == "/hang":
                time.sleep(receiver.hang_seconds)
            elif self.path == "/broken":
                status = 500
            elif self.path.startswith("/flaky/") and tries <= int(self.path.rsplit("/", 1)[1]):
                status = 503
            if not signed:
                status = 401
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver, server
