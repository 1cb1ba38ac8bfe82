"""A service down is told as such (HTTP 503 + Retry-After, an error frame, close code
4013); a bug stays a 500. The real thing, PostgreSQL and Redis stopped under a
running server, is in test_service_down.py."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.testing import WebsocketCommunicator
from django.db import OperationalError
from django.db.utils import ConnectionHandler, ProgrammingError

from liveprogress.asgi import CLOSE_UNAVAILABLE, get_asgi_application
from liveprogress.exceptions import Unavailable
from liveprogress.outage import is_unavailable
from tests import outage_site
from tests.servers import HOST, free_port

# Every test reaches a database: a real one, or one nobody listens on.
pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = [(b"origin", b"http://localhost"), (b"host", b"localhost")]


def raised(work) -> BaseException:
    try:
        work()
    except Exception as error:
        return error
    raise AssertionError("it did not fail")


def sqlite_at(path: Path) -> None:
    handler = ConnectionHandler({"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": path}})
    try:
        with handler["default"].cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")
    finally:
        handler.close_all()


# -- which errors mean "down" -------------------------------------------------------


def test_a_refused_postgresql_connection_is_unavailable():
    error = raised(outage_site.database_down)
    assert isinstance(error, OperationalError)
    assert is_unavailable(error)


def test_a_sqlite_file_that_cannot_be_opened_is_unavailable(tmp_path):
    error = raised(lambda: sqlite_at(tmp_path / "missing-folder" / "db.sqlite3"))
    assert isinstance(error, OperationalError)
    assert isinstance(error.__cause__, sqlite3.Error)
    assert is_unavailable(error)


def test_a_missing_table_is_a_bug_not_an_outage(tmp_path):
    error = raised(lambda: sqlite_at(tmp_path / "db.sqlite3"))
    assert isinstance(error, OperationalError)  # the same class, another cause
    assert not is_unavailable(error)


def test_a_failed_query_on_a_live_postgresql_is_a_bug():
    import psycopg

    # A server that answers: its errors carry a SQLSTATE (42P01, no such table).
    cause = psycopg.errors.UndefinedTable("relation does not exist")
    error = ProgrammingError("relation does not exist")
    error.__cause__ = cause
    assert not is_unavailable(error)
    wrapped = OperationalError("canceling statement due to statement timeout")
    wrapped.__cause__ = psycopg.errors.QueryCanceled("canceling statement")
    assert not is_unavailable(wrapped)
    shutdown = OperationalError("terminating connection due to administrator command")
    shutdown.__cause__ = psycopg.errors.AdminShutdown("terminating connection")
    assert is_unavailable(shutdown)


async def test_a_refused_redis_connection_is_unavailable():
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[f"redis://{HOST}:{free_port()}/0"])
    try:
        await layer.group_add("liveprogress.test", "channel")
    except Exception as error:
        assert is_unavailable(error), repr(error)
    else:
        raise AssertionError("group_add reached a Redis that isn't there")
    finally:
        await layer.close_pools()


@pytest.mark.parametrize("error", [ZeroDivisionError(), KeyError("x"), RuntimeError("boom")])
def test_other_errors_are_not_unavailable(error):
    assert not is_unavailable(error)


# -- the HTTP answers -----------------------------------------------------------------


async def answer(app, path: str, *, method: str = "GET", headers=()) -> tuple[int, dict, bytes]:
    """Status, headers and body the app answers ``path`` with."""
    communicator = ApplicationCommunicator(
        app,
        {
            "type": "http",
            "http_version": "1.1",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"host", b"localhost"), *headers],
        },
    )
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(timeout=10)
    body = b""
    while True:
        message = await communicator.receive_output(timeout=10)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await communicator.wait(timeout=10)
    headers_seen = {name.decode().lower(): value.decode() for name, value in start["headers"]}
    return start["status"], headers_seen, body


@pytest.fixture
def site(settings):
    settings.ROOT_URLCONF = "tests.outage_site"
    settings.DEBUG = False
    return get_asgi_application(websocket_urlpatterns=outage_site.websocket_urlpatterns)


async def test_the_api_answers_503_json_with_retry_after(site):
    status, headers, body = await answer(site, "/down-api/")
    assert status == 503
    assert headers["content-type"] == "application/json"
    assert headers["retry-after"] == str(Unavailable.retry_after) == "5"
    assert json.loads(body) == {
        "type": "error",
        "code": "unavailable",
        "detail": Unavailable().detail,
        "retry_after": 5,
    }


@pytest.mark.parametrize(
    ("language", "text"),
    [("en", "Please try again in 5 seconds"), ("es", "Vuelve a intentarlo en 5 segundos")],
)
async def test_a_page_answers_a_short_503_page_in_the_visitors_language(site, language, text):
    accept = [(b"accept", b"text/html"), (b"accept-language", language.encode())]
    status, headers, body = await answer(site, "/down/", headers=accept)
    assert status == 503
    assert headers["retry-after"] == "5"
    assert headers["content-type"].startswith("text/html")
    assert headers["content-language"] == language
    assert "no-store" in headers["cache-control"]
    page = body.decode()
    assert text in page
    assert f'<html lang="{language}">' in page
    assert '<meta http-equiv="refresh" content="5">' in page  # a GET tries again by itself
    assert len(page) < 2000


async def test_a_client_that_takes_no_html_gets_json_anywhere(site):
    status, headers, body = await answer(site, "/down/", headers=[(b"accept", b"application/json")])
    assert status == 503
    assert json.loads(body)["code"] == "unavailable"


async def test_a_post_that_failed_is_not_sent_again_by_the_page(site):
    html = [(b"accept", b"text/html")]
    status, _, body = await answer(site, "/down/", method="POST", headers=html)
    assert status == 503
    assert b"http-equiv" not in body


async def test_head_gets_the_headers_only(site):
    status, headers, body = await answer(site, "/down-api/", method="HEAD")
    assert (status, body) == (503, b"")
    assert headers["retry-after"] == "5"


@pytest.mark.parametrize("path", ["/bug/", "/crash/"])
async def test_a_bug_stays_a_500(site, path, caplog):
    status, headers, body = await answer(site, path, headers=[(b"accept", b"text/html")])
    assert status == 500
    assert "retry-after" not in headers
    # Logged as Django logs any 500: an error with its traceback.
    [logged] = [record for record in caplog.records if record.name == "django.request"]
    assert logged.levelname == "ERROR" and logged.exc_info is not None


async def test_an_outage_logs_one_warning_not_a_traceback(site, caplog):
    status, _, _ = await answer(site, "/down-api/")
    assert status == 503
    assert [record for record in caplog.records if record.name == "django.request"] == []
    [logged] = [record for record in caplog.records if record.name == "liveprogress.asgi"]
    assert logged.levelname == "WARNING" and logged.exc_info is None
    assert "answered 503 path=/down-api/ error=OperationalError" in logged.getMessage()


async def test_the_rest_of_the_site_is_untouched(site):
    status, _, _ = await answer(site, "/api/jobs/")
    assert status == 200


# -- the socket -------------------------------------------------------------------------


async def test_a_socket_that_cannot_start_is_told_and_closed_with_4013(site):
    socket = WebsocketCommunicator(site, "/ws/down/", headers=ORIGIN)
    connected, _ = await socket.connect(timeout=10)
    assert connected  # accepted, to be told why it closes
    frame = await socket.receive_json_from(timeout=10)
    assert frame == {
        "type": "error",
        "code": "unavailable",
        "detail": Unavailable().detail,
        "retry_after": 5,
    }
    assert await socket.receive_output(timeout=10) == {
        "type": "websocket.close",
        "code": CLOSE_UNAVAILABLE,
    }


async def test_a_socket_that_crashes_is_not_called_unavailable(site):
    socket = WebsocketCommunicator(site, "/ws/crash/", headers=ORIGIN)
    await socket.send_input({"type": "websocket.connect"})
    with pytest.raises(ZeroDivisionError):
        await socket.wait(timeout=10)
    assert socket.output_queue.empty()  # neither accepted nor told "unavailable"


async def test_a_site_s_own_application_wrapped_answers_the_same(settings):
    from django.core.asgi import get_asgi_application as get_django_asgi_application

    from liveprogress.asgi import AnswerUnavailable

    settings.ROOT_URLCONF = "tests.outage_site"
    app = AnswerUnavailable(get_django_asgi_application())
    status, headers, body = await answer(app, "/down-api/")
    assert (status, headers["retry-after"]) == (503, "5")
    assert json.loads(body)["code"] == "unavailable"


# -- an event stream --------------------------------------------------------------------


async def test_a_stream_that_finds_the_database_down_as_it_begins_says_so_and_ends(runtime):
    from asgiref.sync import sync_to_async

    from liveprogress import events

    ended: list[bool] = []

    async def begin(outbox) -> None:
        await sync_to_async(outage_site.database_down)()

    async def end(outbox) -> None:
        ended.append(True)

    def no_event(frame: str) -> tuple[str, dict]:
        raise AssertionError(f"no frame was expected, got {frame}")

    stream = events._stream("session:down", begin, end, None, no_event, runtime=runtime, grant=None)
    sent = [chunk async for chunk in stream]
    detail = json.dumps(Unavailable().detail)
    assert sent == [
        "retry: 5000\n\nevent: unavailable\n"
        f'data: {{"type":"error","code":"unavailable","detail":{detail},"retry_after":5}}\n\n'
    ]
    assert ended == [True]
    assert "session:down" not in events._open_streams  # its place given back
