"""Real servers for end-to-end tests: Daphne in a child process, and HTTP/WebSocket clients.

``DaphneServer`` runs the demo site (``proyecto.asgi:application``) exactly as a
deployment would, on its own SQLite file, so a test sees what a browser sees:
real sockets, real sessions, real processes (and can kill one).

    with DaphneServer(tmp_path / "db.sqlite3") as server:
        alice = Visitor(server)
        status, state = alice.post_json("/api/jobs/", {"kind": "demo.timer"})
        async with alice.ws() as ws:
            await ws.send(json.dumps({"action": "subscribe", "job": state["id"]}))
            frame = await next_frame(ws)

Settings reach the server through its environment: ``DATABASE_URL`` always, and
``LIVEPROGRESS_SETTINGS_JSON`` (a JSON object merged into ``LIVEPROGRESS``) when
given ``liveprogress={...}``. Every wait here is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import http.cookiejar
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: The checkout's root: manage.py and the ``proyecto`` package live here.
REPO_ROOT = Path(__file__).resolve().parent.parent

HOST = "127.0.0.1"
WS_PATH = "/ws/progress/"
#: Seconds a server may take to answer HTTP after it was started.
START_TIMEOUT = 20.0
#: Seconds a server may take to exit after SIGTERM before it gets SIGKILL.
STOP_TIMEOUT = 5.0
#: Seconds ``manage.py migrate`` may take.
MIGRATE_TIMEOUT = 120.0
#: Seconds one HTTP request of a Visitor may take.
HTTP_TIMEOUT = 15.0

# Databases already migrated by this process (resolved paths): migrate runs once each.
_migrated: set[Path] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def database_url(db_path: Path) -> str:
    """The dj-database-url URL of a SQLite file: ``sqlite:////abs/path``."""
    return "sqlite:///" + str(Path(db_path).resolve())


def server_env(
    db_path: Path,
    extra: Mapping[str, str | None] | None = None,
    liveprogress: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The environment of a server process; a value of None in ``extra`` unsets a name."""
    env = dict(os.environ)
    # The test process's own overrides must not leak into the server.
    env.pop("LIVEPROGRESS_TEST_SETTINGS", None)
    env.pop("LIVEPROGRESS_SETTINGS_JSON", None)
    env["DJANGO_SETTINGS_MODULE"] = "proyecto.settings"
    env["DATABASE_URL"] = database_url(db_path)
    # Jobs' files beside the database, never in the checkout.
    env["DJANGO_MEDIA_ROOT"] = str(db_path.with_name(db_path.stem + "-media"))
    env["PYTHONUNBUFFERED"] = "1"
    if liveprogress is not None:
        env["LIVEPROGRESS_SETTINGS_JSON"] = json.dumps(dict(liveprogress))
    for name, value in (extra or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def migrate(db_path: Path, env: Mapping[str, str] | None = None, *, force: bool = False) -> None:
    """``manage.py migrate --noinput`` for the SQLite file ``db_path``, once per process."""
    key = Path(db_path).resolve()
    if key in _migrated and not force:
        return
    key.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=REPO_ROOT,
        env=dict(env) if env is not None else server_env(key),
        capture_output=True,
        text=True,
        timeout=MIGRATE_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"migrate failed for {key} (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    _migrated.add(key)


class ServerDied(RuntimeError):
    """The server process exited before it answered HTTP."""


class DaphneServer:
    """A Daphne child process serving the demo site on a free port of 127.0.0.1.

    A context manager: entering migrates the database (once per file), starts
    the server and waits until it answers HTTP; leaving stops it (SIGTERM, then
    SIGKILL after ``STOP_TIMEOUT`` s). ``kill()`` is the crash: SIGKILL at once.
    Its stdout/stderr go to files beside the database (``log_text()``), so a
    chatty server never blocks on a full pipe.
    """

    #: The server's name, in logs' file names and in errors.
    name = "daphne"

    def __init__(
        self,
        db_path: Path | str,
        env: Mapping[str, str | None] | None = None,
        *,
        liveprogress: Mapping[str, Any] | None = None,
        port: int | None = None,
        start_timeout: float = START_TIMEOUT,
        ready_path: str = "/",
        args: Sequence[str] = (),
    ) -> None:
        self.db_path = Path(db_path).resolve()
        self.env = server_env(self.db_path, env, liveprogress)
        self.requested_port = port
        self.port = 0
        self.start_timeout = start_timeout
        self.ready_path = ready_path
        #: Extra command-line options of the server.
        self.args = list(args)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._log: Any = None

    # -- addresses -----------------------------------------------------------------

    @property
    def origin(self) -> str:
        return f"http://{HOST}:{self.port}"

    def url(self, path: str) -> str:
        return self.origin + path

    def ws_url(self, path: str = WS_PATH) -> str:
        return f"ws://{HOST}:{self.port}{path}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the server is not running"
        return self.process.pid

    # -- life ----------------------------------------------------------------------

    def __enter__(self) -> DaphneServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        migrate(self.db_path, self.env)
        # A free port may be taken between the probe and Daphne's bind: try again.
        attempts = 1 if self.requested_port else 3
        for attempt in range(attempts):
            self.port = self.requested_port or free_port()
            self._spawn()
            try:
                self._wait_ready()
                return
            except ServerDied:
                log = self.log_text()
                self.stop()
                if "Address already in use" in log and attempt + 1 < attempts:
                    continue
                raise
            except BaseException:
                self.stop()
                raise

    def _spawn(self) -> None:
        n = 0
        while True:
            name = f"{self.db_path.stem}.{self.name}-{self.port}-{n}.log"
            candidate = self.db_path.with_name(name)
            if not candidate.exists():
                break
            n += 1
        self.log_path = candidate
        self._log = open(candidate, "wb")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            self.command(),
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def command(self) -> list[str]:
        """The server's command line, on ``self.port``."""
        daphne = [sys.executable, "-m", "daphne", "-v", "0", "-b", HOST, "-p", str(self.port)]
        return [*daphne, *self.args, "proyecto.asgi:application"]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ServerDied(
                    f"{self.name} exited with {self.process.returncode} before answering on port "
                    f"{self.port}; its output:\n{self.log_text()}"
                )
            if self._answers_http():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} did not answer HTTP on port {self.port} within "
                    f"{self.start_timeout} s; its output:\n{self.log_text()}"
                )
            time.sleep(0.05)

    def _answers_http(self) -> bool:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=2)
        try:
            connection.request("GET", self.ready_path)
            connection.getresponse().read()
            return True
        except OSError:
            return False
        finally:
            connection.close()

    def kill(self) -> None:
        """SIGKILL the server now, as a crash would; waits until it is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT`` s; idempotent, quiet on a dead one."""
        process, self.process = self.process, None
        try:
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=STOP_TIMEOUT)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        """Everything the server wrote to stdout/stderr so far."""
        if self._log is not None:
            self._log.flush()
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text("utf-8", "replace")


class UvicornServer(DaphneServer):
    """The same site under Uvicorn (its websockets implementation, which applies
    backpressure: a send to a client that doesn't read waits)."""

    name = "uvicorn"

    def command(self) -> list[str]:
        uvicorn = [sys.executable, "-m", "uvicorn", "--host", HOST, "--port", str(self.port)]
        options = ["--ws", "websockets", "--log-level", "warning", "--lifespan", "on"]
        return [*uvicorn, *options, *self.args, "proyecto.asgi:application"]


class HypercornServer(DaphneServer):
    """The same site under Hypercorn (asyncio, HTTP/1.1 and WebSockets by wsproto)."""

    name = "hypercorn"

    def command(self) -> list[str]:
        hypercorn = [sys.executable, "-m", "hypercorn", "--bind", f"{HOST}:{self.port}"]
        return [*hypercorn, "--log-level", "warning", *self.args, "proyecto.asgi:application"]


class GranianServer(DaphneServer):
    """The same site under Granian (a Rust server) through its ASGI interface, one worker."""

    name = "granian"

    def command(self) -> list[str]:
        granian = [sys.executable, "-m", "granian", "--interface", "asgi"]
        address = ["--host", HOST, "--port", str(self.port), "--workers", "1"]
        options = ["--log-level", "warning", "--no-access-log"]
        return [*granian, *address, *options, *self.args, "proyecto.asgi:application"]


class Visitor:
    """One browser: its own cookie jar (session, CSRF token) against one server.

    ``get``/``post_json`` answer ``(status, body)``, the body parsed as JSON, or
    None when it is not JSON (``last_text`` keeps the raw text). ``language``
    becomes the Accept-Language of every request and socket unless overridden.
    """

    def __init__(
        self,
        server: DaphneServer,
        *,
        language: str | None = None,
        jar: http.cookiejar.CookieJar | None = None,
        timeout: float = HTTP_TIMEOUT,
    ) -> None:
        self.server = server
        self.language = language
        self.jar = jar if jar is not None else http.cookiejar.CookieJar()
        self.timeout = timeout
        self.last_text = ""
        self.last_headers: Mapping[str, str] = {}
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def on(self, server: DaphneServer) -> Visitor:
        """The same visitor (same cookies) talking to another server, e.g. after a restart."""
        return Visitor(server, language=self.language, jar=self.jar, timeout=self.timeout)

    # -- cookies -----------------------------------------------------------------

    def cookie(self, name: str) -> str | None:
        for cookie in self.jar:
            if cookie.name == name:
                return cookie.value
        return None

    def cookie_header(self) -> str:
        """The Cookie header a browser would send to this server (may be empty)."""
        probe = urllib.request.Request(self.server.url(WS_PATH))  # noqa: S310 (http only)
        self.jar.add_cookie_header(probe)
        return probe.get_header("Cookie") or ""

    def visit(self, path: str = "/progress/") -> int:
        """Load a page, as a browser does before it posts: sets the session and CSRF cookies."""
        status, _ = self.get(path)
        return status

    # -- HTTP --------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        all_headers = {"Accept": "application/json"}
        if self.language:
            all_headers["Accept-Language"] = self.language
        all_headers.update(headers or {})
        # Always http://127.0.0.1:PORT/..., never a file: or custom scheme.
        url = self.server.url(path)
        request = urllib.request.Request(  # noqa: S310
            url, data=body, method=method, headers=all_headers
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status, raw, response_headers = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, raw, response_headers = error.code, error.read(), error.headers
            error.close()
        self.last_headers = response_headers
        self.last_text = raw.decode("utf-8", "replace")
        try:
            return status, json.loads(self.last_text)
        except ValueError:
            return status, None

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        return self.request("GET", path, headers=headers)

    def post_json(
        self, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        """POST a JSON body with the CSRF token, as the site's own scripts do."""
        if self.cookie("csrftoken") is None:
            self.visit()
        all_headers = {
            "Content-Type": "application/json",
            "X-CSRFToken": self.cookie("csrftoken") or "",
            "Origin": self.server.origin,
            "Referer": self.server.url("/progress/"),
        }
        all_headers.update(headers or {})
        data = json.dumps({} if body is None else body).encode()
        return self.request("POST", path, data, all_headers)

    def post_file(
        self, path: str, name: str, content: bytes, field: str = "file"
    ) -> tuple[int, Any]:
        """POST one file as multipart/form-data with the CSRF token, as a form does."""
        if self.cookie("csrftoken") is None:
            self.visit()
        boundary = "liveprogress-test-boundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                f'filename="{name}"\r\nContent-Type: text/csv\r\n\r\n'
            ).encode()
            + content
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "X-CSRFToken": self.cookie("csrftoken") or "",
            "Origin": self.server.origin,
            "Referer": self.server.url("/import/"),
        }
        return self.request("POST", path, body, headers)

    # -- Server-Sent Events --------------------------------------------------------

    def events(
        self,
        path: str,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10,
        parse: Callable[[str], Any] = json.loads,
    ) -> EventStream:
        """Open an event stream (``with visitor.events(path) as stream:``) with this
        visitor's cookies; every read waits at most ``timeout`` seconds. ``parse``
        reads each event's data (``str``: as it came, e.g. HTML)."""
        all_headers = {"Accept": "text/event-stream"}
        if self.cookie_header():
            all_headers["Cookie"] = self.cookie_header()
        if self.language:
            all_headers["Accept-Language"] = self.language
        all_headers.update(headers or {})
        return EventStream(self.server, path, all_headers, timeout, parse)

    # -- WebSocket -----------------------------------------------------------------

    def ws(
        self,
        *,
        cookies: bool = True,
        origin: str | None = "",
        headers: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Any:
        """``websockets.connect(...)`` to the progress socket with this visitor's cookies.

        Use it as ``async with visitor.ws() as ws:`` (or ``ws = await visitor.ws()``).
        ``origin=""`` sends the server's own Origin; None sends none; anything else
        is sent as is. ``cookies=False`` connects without the visitor's cookies.
        """
        from websockets.asyncio.client import connect

        extra: dict[str, str] = {}
        if cookies and self.cookie_header():
            extra["Cookie"] = self.cookie_header()
        if origin == "":
            extra["Origin"] = self.server.origin
        elif origin is not None:
            extra["Origin"] = origin
        if self.language:
            extra["Accept-Language"] = self.language
        extra.update(headers or {})
        options.setdefault("open_timeout", 10)
        options.setdefault("close_timeout", 5)
        return connect(self.server.ws_url(), additional_headers=extra, **options)


class EventStream:
    """One ``text/event-stream`` response, read event by event (a real HTTP client).

    ``status``, ``headers`` and, for a response that is not a stream, ``json``;
    ``next_event()`` answers ``{"event", "id", "data"}`` (data read by ``parse``),
    or None once the server has ended the stream. Comments and ``retry:`` lines
    are kept in ``comments``/``retry``.
    """

    def __init__(
        self,
        server: DaphneServer,
        path: str,
        headers: Mapping[str, str],
        timeout: float,
        parse: Callable[[str], Any] = json.loads,
    ) -> None:
        self.parse = parse
        self.connection = http.client.HTTPConnection(HOST, server.port, timeout=timeout)
        self.connection.request("GET", path, headers=dict(headers))
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.headers = self.response.headers
        self.comments: list[str] = []
        self.retry: int | None = None
        self.json: Any = None
        if not self.headers.get("Content-Type", "").startswith("text/event-stream"):
            raw = self.response.read()
            self.json = json.loads(raw) if raw else None

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.connection.close()

    def next_event(self) -> dict[str, Any] | None:
        event: dict[str, Any] = {"event": "message", "id": None, "data": None}
        data: list[str] = []
        while True:
            raw = self.response.readline()
            if not raw:
                return None
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line:
                if data:
                    event["data"] = self.parse("\n".join(data))
                    return event
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "":
                self.comments.append(value)
            elif field == "retry":
                self.retry = int(value)
            elif field == "data":
                data.append(value)
            elif field in ("event", "id"):
                event[field] = value

    def events_until(
        self, predicate: Callable[[dict[str, Any]], bool], limit: int = 10_000
    ) -> list[dict[str, Any]]:
        """Events up to and including the first one ``predicate`` accepts."""
        seen: list[dict[str, Any]] = []
        for _ in range(limit):
            event = self.next_event()
            assert event is not None, f"the stream ended first; got {seen}"
            seen.append(event)
            if predicate(event):
                return seen
        raise AssertionError(f"no matching event in {limit}")


# -- WebSocket frames ------------------------------------------------------------------


async def send_json(ws: Any, frame: Any) -> None:
    await asyncio.wait_for(ws.send(json.dumps(frame)), 5)


async def next_frame(ws: Any, timeout: float = 5) -> Any:
    """The next frame of ``ws`` as JSON; TimeoutError after ``timeout`` s."""
    try:
        text = await asyncio.wait_for(ws.recv(), timeout)
    except TimeoutError:
        raise TimeoutError(f"no frame within {timeout} s") from None
    return json.loads(text)


async def frames_until(ws: Any, predicate: Callable[[Any], bool], timeout: float = 10) -> list[Any]:
    """Frames of ``ws`` up to and including the first that matches ``predicate``.

    Raises AssertionError, listing what came, if none matches within ``timeout`` s.
    """
    frames: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            frame = await next_frame(ws, left)
        except TimeoutError:
            break
        frames.append(frame)
        if predicate(frame):
            return frames
    raise AssertionError(
        f"no matching frame within {timeout} s; got {len(frames)}: "
        + json.dumps(frames, ensure_ascii=False)[:4000]
    )


async def no_frame(ws: Any, within: float) -> None:
    """Assert that ``ws`` sends nothing for ``within`` s (a measured silence)."""
    with contextlib.suppress(TimeoutError):
        frame = await next_frame(ws, within)
        raise AssertionError(f"expected silence, got {frame!r}")


# -- states ------------------------------------------------------------------------------

TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")


def is_state(frame: Any, job_id: str | None = None) -> bool:
    return (
        isinstance(frame, dict)
        and frame.get("type") == "job"
        and (job_id is None or frame["job"]["id"] == job_id)
    )


def is_terminal(frame: Any, job_id: str | None = None) -> bool:
    return is_state(frame, job_id) and frame["job"]["status"] in TERMINAL


def start_timer(who: Visitor, steps: int, interval: float) -> dict[str, Any]:
    """Start the demo's timed process for ``who`` through the API; its first state."""
    status, state = who.post_json(
        "/api/jobs/", {"kind": "demo.timer", "params": {"steps": steps, "interval": interval}}
    )
    assert status == 201, state
    return state


def wait_for_http(check: Callable[[], Any], timeout: float = 10, interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last: {last!r})")
