"""What a hostile tester broke (round two), each finding kept as a regression test.

Findings that need a real server (HTTP framing, the handshake's origin) run
against Daphne in a child process; the rest in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote

import pytest
import websockets
from asgiref.testing import ApplicationCommunicator
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient

from liveprogress import actions
from liveprogress.exceptions import LimitReached
from liveprogress.models import UNPERSISTED_SEQ_WINDOW, Job
from proyecto.asgi import application
from tests.servers import HOST, REPO_ROOT, DaphneServer, Visitor

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    db = tmp_path_factory.mktemp("abuse") / "db.sqlite3"
    with DaphneServer(db, liveprogress={"JOB_MODULES": ["tests.jobs"]}) as running:
        yield running


def raw_exchange(server: DaphneServer, requests: bytes, wait: float = 2.0) -> bytes:
    """Send raw bytes on one connection; everything the server answers within ``wait``."""
    received = b""
    with socket.create_connection((HOST, server.port), timeout=wait) as connection:
        connection.sendall(requests)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = connection.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
            # Two complete answers are all this test asks for.
            if received.count(b"HTTP/1.1 ") >= 2 and received.rstrip().endswith(b"}"):
                break
    return received


@pytest.mark.integration
@pytest.mark.parametrize(
    "path", ["/api/jobs/events/", "/api/jobs/{job}/events/", "/api/jobs/{job}/fragments/"]
)
def test_head_on_a_stream_sends_headers_only_and_the_next_request_is_answered(server, path):
    """A HEAD answered with a stream's body desyncs a keep-alive connection: the next
    response read would be event data."""
    visitor = Visitor(server)
    status, state = visitor.post_json("/api/jobs/", {"kind": "demo.timer", "params": {"steps": 50}})
    assert status == 201
    cookie = visitor.cookie_header()
    target = path.format(job=state["id"])
    host = f"{HOST}:{server.port}"
    requests = (
        f"HEAD {target} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n\r\n"
        f"GET /api/jobs/{state['id']}/ HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n\r\n"
    ).encode()
    answer = raw_exchange(server, requests)
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b"text/event-stream" in head
    # Straight after the HEAD's headers comes the GET's answer, not event data.
    assert rest.startswith(b"HTTP/1.1 200"), rest[:300]
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["id"] == state["id"]
    visitor.post_json(f"/api/jobs/{state['id']}/cancel/")


@pytest.mark.integration
@pytest.mark.parametrize(
    "origin",
    ["http://127.0.0.1:1", "http://localhost:3000", "https://127.0.0.1", "http://[::1]:9"],
)
def test_a_page_on_another_port_or_scheme_of_the_host_can_t_open_the_socket(server, origin):
    visitor = Visitor(server)
    visitor.visit("/jobs/")

    async def connect() -> None:
        async with websockets.connect(
            server.ws_url(),
            origin=origin,
            additional_headers={"Cookie": visitor.cookie_header()},
            open_timeout=5,
        ):
            pass

    with pytest.raises(websockets.InvalidStatus) as refused:
        asyncio.run(connect())
    assert refused.value.response.status_code == 403


@pytest.mark.integration
def test_the_site_s_own_origin_opens_the_socket(server):
    visitor = Visitor(server)
    visitor.visit("/jobs/")

    async def watch() -> dict:
        async with websockets.connect(
            server.ws_url(),
            origin=server.origin,
            additional_headers={"Cookie": visitor.cookie_header()},
            open_timeout=5,
        ) as ws:
            await ws.send(json.dumps({"action": "watch_mine"}))
            return json.loads(await asyncio.wait_for(ws.recv(), 5))

    assert asyncio.run(watch())["type"] == "watching"


async def visitor_session() -> tuple[AsyncClient, str]:
    client = AsyncClient()
    await client.get("/jobs/")
    return client, f"session:{client.cookies['sessionid'].value}"


async def socket_of(client: AsyncClient) -> WebsocketCommunicator:
    """A socket opened with the visitor's session, from the site's own origin."""
    socket_ = WebsocketCommunicator(
        application,
        "/ws/progress/",
        headers=[
            (b"host", b"localhost"),
            (b"origin", b"http://localhost"),
            (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
        ],
    )
    assert (await socket_.connect())[0]
    return socket_


async def test_no_after_silences_a_running_job_s_end_on_the_socket(runtime):
    client, owner = await visitor_session()
    job = await actions.start_job(owner, "demo.timer", {"steps": 3, "interval": 0.2})
    socket_ = await socket_of(client)
    # A client that says it holds a state far ahead (within what a running job can reach).
    after = job.seq + UNPERSISTED_SEQ_WINDOW - 1
    await socket_.send_json_to({"action": "subscribe", "job": str(job.id), "after": after})
    async with asyncio.timeout(10):
        while True:
            frame = await socket_.receive_json_from(10)
            if frame["type"] == "job" and frame["job"]["status"] == "succeeded":
                break
    assert frame["job"]["seq"] <= after  # it was "older" than the claim, and still came
    await socket_.disconnect()


async def test_no_after_silences_a_running_job_s_end_on_its_event_stream(runtime):
    client, owner = await visitor_session()
    job = await actions.start_job(owner, "demo.timer", {"steps": 3, "interval": 0.2})
    after = job.seq + UNPERSISTED_SEQ_WINDOW - 1
    response = await client.get(f"/api/jobs/{job.id}/events/?after={after}")
    assert response.status_code == 200
    text = ""
    async with asyncio.timeout(10):
        async for chunk in response.streaming_content:
            text += chunk.decode()
    # The stream ended, and its last event is the final state.
    last = json.loads(text.strip().rsplit("data: ", 1)[1])
    assert last["job"]["status"] == "succeeded"


async def asgi_get(
    path: str, body_chunks: list[bytes] | None = None, method: str = "GET", *, ends: bool = True
):
    """Call the site's ASGI app with a raw request; (status, body) of its answer.
    With ``ends=False`` the body never ends (a client still sending)."""
    headers = [(b"host", b"localhost")]
    if body_chunks is not None:
        headers.append((b"content-type", b"application/json"))
        headers.append((b"transfer-encoding", b"chunked"))
    communicator = ApplicationCommunicator(
        application,
        {
            "type": "http",
            "http_version": "1.1",
            "method": method,
            "path": unquote(path),
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": headers,
        },
    )
    chunks = body_chunks or [b""]
    for index, chunk in enumerate(chunks):
        more = index < len(chunks) - 1 or not ends
        await communicator.send_input({"type": "http.request", "body": chunk, "more_body": more})
    start = await communicator.receive_output(5)
    body = b""
    while True:
        message = await communicator.receive_output(5)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    return start["status"], body


@pytest.mark.parametrize("path", ["/static/..%2f..%2fmanage.py", "/static/../../manage.py"])
async def test_a_static_path_that_climbs_out_is_not_found(runtime, path, caplog):
    status, _ = await asgi_get(path)
    assert status == 404
    assert not any(record.exc_info for record in caplog.records)


async def test_a_chunked_body_is_refused_once_past_the_limit_not_read_whole(runtime, settings):
    limit = 64 * 1024
    chunk = b" " * 16 * 1024
    # 80 KB sent and more to come: the answer comes without waiting for the rest
    # (Django alone would wait for the whole body, then answer).
    status, body = await asgi_get("/api/jobs/", [chunk] * 5, method="POST", ends=False)
    assert status == 413
    assert json.loads(body) == {
        "type": "error",
        "code": "too_large",
        "detail": f"Bodies may be at most {limit} bytes",
    }
    assert not await Job.objects.aexists()


async def test_django_s_refusals_on_the_upload_endpoint_are_json_without_internals(
    runtime, settings
):
    client, _owner = await visitor_session()
    token = client.cookies["csrftoken"].value
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    fields = {f"f{n}": "x" for n in range(10)}
    response = await client.post("/api/imports/", fields, headers={"X-CSRFToken": token})
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "code": "bad_request",
        "detail": "Too many form fields in one request",
    }
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2
    files = {f"file{n}": _csv(n) for n in range(3)}
    response = await client.post("/api/imports/", files, headers={"X-CSRFToken": token})
    assert response.json()["detail"] == "Too many files in one request"
    assert "DATA_UPLOAD" not in response.content.decode()
    # A multipart body with no boundary.
    response = await client.post(
        "/api/imports/",
        b"--x\r\n",
        content_type="multipart/form-data",
        headers={"X-CSRFToken": token},
    )
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert not await Job.objects.aexists()


def _csv(n: int):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(f"f{n}.csv", b"a,b\n1,2\n", content_type="text/csv")


async def test_a_host_refused_under_the_api_names_no_setting(runtime):
    response = await AsyncClient().get("/api/jobs/", headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert response.json()["detail"] == "This host name is not served here"
    assert "ALLOWED_HOSTS" not in response.content.decode()


@pytest.mark.integration
def test_a_burst_of_log_lines_far_over_1_mib_reaches_the_socket_whole(server):
    """Daphne carries at most 1 MiB per message: the lines come in several frames,
    every one of them, and the socket goes on answering."""
    visitor = Visitor(server)
    status, state = visitor.post_json(
        "/api/jobs/", {"kind": "tests.long_lines", "params": {"lines": 1000, "width": 2000}}
    )
    assert status == 201

    async def follow() -> tuple[list[int], list[int], dict]:
        async with websockets.connect(
            server.ws_url(),
            origin=server.origin,
            additional_headers={"Cookie": visitor.cookie_header()},
            open_timeout=5,
            max_size=None,
        ) as ws:
            subscribe = {"action": "subscribe", "job": state["id"], "log_after": 0}
            await ws.send(json.dumps(subscribe))
            seen: list[int] = []
            sizes: list[int] = []
            final: dict = {}
            async with asyncio.timeout(30):
                while len(seen) < 1000 or not final:
                    raw = await ws.recv()
                    frame = json.loads(raw)
                    if frame["type"] == "log":
                        sizes.append(len(raw.encode()))
                        seen += [line["seq"] for line in frame["lines"]]
                    elif frame["type"] == "job" and frame["job"]["status"] == "succeeded":
                        final = frame["job"]
                # Still answering after the burst.
                await ws.send(json.dumps({"action": "watch_mine"}))
                while (json.loads(await ws.recv()))["type"] != "watching":
                    pass
            return seen, sizes, final

    seen, sizes, final = asyncio.run(follow())
    assert seen == list(range(1, 1001))
    assert max(sizes) <= 512 * 1024 and len(sizes) >= 4
    assert final["result"] == 1000


async def test_an_owner_s_list_too_big_for_one_frame_comes_in_several(runtime):
    client, owner = await visitor_session()
    big = "m" * 40_000
    made = [
        await Job.objects.acreate(
            kind="demo.timer", owner=owner, seq=2, status="succeeded", message=big
        )
        for _ in range(20)
    ]
    socket_ = await socket_of(client)
    await socket_.send_json_to({"action": "watch_mine"})
    watching = await socket_.receive_json_from(5)
    assert watching["type"] == "watching"
    listed = [state["id"] for state in watching["jobs"]]
    assert 0 < len(listed) < 20
    rest = [(await socket_.receive_json_from(5))["job"]["id"] for _ in range(20 - len(listed))]
    # Every job once, newest first across the frames.
    assert listed + rest == [str(job.id) for job in reversed(made)]
    await socket_.disconnect()


async def test_an_owner_s_event_streams_are_capped(runtime, settings):
    from liveprogress.events import _open_streams

    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "MAX_STREAMS_PER_OWNER": 2}
    client, owner = await visitor_session()
    job = await actions.start_job(owner, "demo.timer", {"steps": 2, "interval": 0.1})
    # A stream that never started (its client went away first) holds nothing.
    for _ in range(3):
        assert (await client.get("/api/jobs/events/")).status_code == 200
    assert _open_streams[owner] == 0
    one_job = await client.get(f"/api/jobs/{job.id}/events/")
    mine = await client.get("/api/jobs/events/")
    chunks = [aiter(one_job.streaming_content), aiter(mine.streaming_content)]
    for chunk in chunks:
        await anext(chunk)  # the streams start
    assert _open_streams[owner] == 2
    refused = await client.get("/api/jobs/events/")
    assert refused.status_code == 429
    assert refused.json()["code"] == "limit"
    # Another visitor has streams of its own.
    other, _ = await visitor_session()
    assert (await other.get("/api/jobs/events/")).status_code == 200
    # A stream that ends (its job's final state) gives its place back.
    async with asyncio.timeout(10):
        async for _chunk in chunks[0]:
            pass
    assert _open_streams[owner] == 1
    assert (await client.get("/api/jobs/events/")).status_code == 200


def database_files_open(server: DaphneServer) -> int:
    """How many file descriptors the server process holds on its SQLite database."""
    fd_dir = f"/proc/{server.pid}/fd"
    found = 0
    for fd in os.listdir(fd_dir):
        with contextlib.suppress(OSError):
            if os.readlink(f"{fd_dir}/{fd}") == str(server.db_path.resolve()):
                found += 1
    return found


@pytest.mark.integration
def test_open_streams_hold_no_database_connection(server):
    """On SQLite a connection held per open stream would pile up with the streams."""
    visitor = Visitor(server)
    visitor.visit("/jobs/")
    before = database_files_open(server)
    streams = [visitor.events("/api/jobs/events/") for _ in range(5)]
    try:
        for stream in streams:
            assert stream.next_event()["event"] == "watching"
        assert database_files_open(server) <= before + 1
    finally:
        for stream in streams:
            stream.close()


def test_an_owner_s_files_are_held_to_a_quota(db, settings, fast):
    from liveprogress.testing import run_job

    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "MAX_FILE_BYTES_PER_OWNER": 5000}
    first = run_job("tests.attach", owner="session:one", size=3000)
    assert first.status == "succeeded"
    # The same owner's next file would take it past the quota: that job fails, saying so.
    second = run_job("tests.attach", owner="session:one", size=3000)
    assert second.status == "failed"
    assert "would take this owner's files past 5000 bytes (they keep 3000)" in second.error
    # Within one job too; replacing a file of the same name counts once.
    third = run_job("tests.attach", owner="session:two", size=2000, count=3)
    assert third.status == "failed" and "they keep 4000" in third.error
    again = run_job("tests.attach", owner="session:three", size=4000)
    assert again.status == "succeeded"
    # Another owner is not held to anyone else's files; expired files no longer count.
    Job.objects.filter(owner="session:one").update(expired=True)
    assert run_job("tests.attach", owner="session:one", size=4000).status == "succeeded"


async def test_a_server_job_s_files_are_held_to_the_quota_too(runtime, settings):
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "MAX_FILE_BYTES_PER_OWNER": 5000}

    async def run(params: dict) -> Job:
        job = await actions.start_job("session:q", "tests.attach", params)
        async with asyncio.timeout(10):
            while (current := await Job.objects.aget(pk=job.pk)).is_active:
                await asyncio.sleep(0.02)
        return current

    assert (await run({"size": 2000, "count": 2})).status == "succeeded"
    refused = await run({"size": 2000})
    assert refused.status == "failed"
    assert "past 5000 bytes (they keep 4000)" in refused.error


FLOOD_SETTINGS = {
    "MAX_ACTIVE_TOTAL": 30,
    "MAX_ACTIVE_PER_ADDRESS": 5,
    "ANONYMOUS_SHARE": 0.5,
    # The test plays the site's proxy: it says which address each request came from.
    "CLIENT_ADDRESS_HEADER": "X-Forwarded-For",
}
LONG_TIMER = {"kind": "demo.timer", "params": {"steps": 10000, "interval": 60}}


def mint_and_start(server: DaphneServer, address: str) -> int:
    """A start with no session, a made-up CSRF token: a new session, so a new owner."""
    token = secrets.token_hex(16)
    request = urllib.request.Request(  # noqa: S310 (http to the test's own server)
        server.url("/api/jobs/"),
        data=json.dumps(LONG_TIMER).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Cookie": f"csrftoken={token}",
            "X-CSRFToken": token,
            "Origin": server.origin,
            "X-Forwarded-For": address,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.integration
def test_a_flood_of_session_minting_starts_locks_nobody_out(tmp_path):
    db = tmp_path / "db.sqlite3"
    with DaphneServer(db, liveprogress=FLOOD_SETTINGS) as server:
        # One client: 40 concurrent starts, each with a fresh session.
        with ThreadPoolExecutor(10) as pool:
            statuses = list(pool.map(lambda _: mint_and_start(server, "203.0.113.5"), range(40)))
        assert statuses.count(201) == 5 and statuses.count(429) == 35
        # A visitor elsewhere still starts one.
        assert mint_and_start(server, "198.51.100.7") == 201
        # Many addresses (a botnet) take at most the visitors' share: 15 of 30.
        with ThreadPoolExecutor(10) as pool:
            spread = list(pool.map(lambda n: mint_and_start(server, f"192.0.2.{n}"), range(40)))
        assert spread.count(201) == 15 - 6
        # A signed-in user (here through the admin's login) still starts a job.
        create = (
            "from django.contrib.auth.models import User; "
            "User.objects.create_user('ana', password='pw-Secret-1', is_staff=True)"
        )
        manage = [sys.executable, str(REPO_ROOT / "manage.py"), "shell", "-c", create]
        subprocess.run(manage, env=server.env, check=True, timeout=60, capture_output=True)
        ana = Visitor(server)
        ana.visit("/admin/login/")
        form = {
            "username": "ana",
            "password": "pw-Secret-1",
            "csrfmiddlewaretoken": ana.cookie("csrftoken"),
        }
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Referer": server.url("/admin/login/"),
            "Origin": server.origin,
        }
        body = urllib.parse.urlencode(form).encode()
        ana.request("POST", "/admin/login/?next=/jobs/", body, headers)
        assert ana.cookie("sessionid")
        status, state = ana.post_json("/api/jobs/", LONG_TIMER)
        assert status == 201, state
        assert Visitor(server).get(f"/api/jobs/{state['id']}/")[0] == 404


def test_an_ipv6_client_is_counted_by_its_64():
    from liveprogress.owner import client_key

    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("[::ffff:192.0.2.7]") == "192.0.2.7"
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("not an address") == "not an address"


def test_the_client_address_is_the_connection_s_or_the_last_the_proxy_added(rf, settings):
    from liveprogress.owner import request_address, scope_address

    request = rf.get("/", REMOTE_ADDR="10.1.1.1", HTTP_X_FORWARDED_FOR="6.6.6.6, 7.7.7.7")
    scope = {"client": ("10.1.1.1", 5000), "headers": [(b"x-forwarded-for", b"6.6.6.6, 7.7.7.7")]}
    # No proxy configured: a header the client wrote itself is ignored.
    assert request_address(request) == scope_address(scope) == "10.1.1.1"
    settings.LIVEPROGRESS = {"CLIENT_ADDRESS_HEADER": "X-Forwarded-For"}
    # Behind the proxy: the address it saw, not one the client claimed before it.
    assert request_address(request) == scope_address(scope) == "7.7.7.7"


async def test_a_signed_in_user_is_not_held_to_the_visitors_caps(runtime, settings):
    settings.LIVEPROGRESS = {
        **settings.LIVEPROGRESS,
        "MAX_ACTIVE_TOTAL": 4,
        "MAX_ACTIVE_PER_ADDRESS": 1,
    }
    params = {"steps": 100, "interval": 1}
    started = [await actions.start_job("session:a", "demo.timer", params, address="1.1.1.1")]
    # The same address under another session: refused; another address: the share (2 of 4).
    with pytest.raises(LimitReached, match="at your address"):
        await actions.start_job("session:b", "demo.timer", params, address="1.1.1.1")
    started.append(await actions.start_job("session:c", "demo.timer", params, address="2.2.2.2"))
    with pytest.raises(LimitReached, match="not signed in"):
        await actions.start_job("session:d", "demo.timer", params, address="3.3.3.3")
    # Users and the site's own owners are not visitors: the total is theirs.
    started.append(await actions.start_job("user:1", "demo.timer", params, address="1.1.1.1"))
    started.append(await actions.start_job("system:x", "demo.timer", params))
    assert [job.address for job in started] == ["1.1.1.1", "2.2.2.2", "", ""]
    for job in started:
        await actions.cancel_job(job.owner, str(job.id))


async def ended(job_id, timeout: float = 10) -> Job:
    async with asyncio.timeout(timeout):
        while (job := await Job.objects.aget(pk=job_id)).is_active:
            await asyncio.sleep(0.02)
    return job


async def test_a_batch_that_hits_the_cap_ends_its_children_with_it(runtime, settings):
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "MAX_ACTIVE_PER_OWNER": 3}
    parent = await actions.start_job(
        "session:p", "demo.batch", {"parts": 3, "steps": 1000, "interval": 1}
    )
    parent = await ended(parent.pk)
    assert parent.status == "failed" and "already have 3 jobs" in parent.error
    children = [child async for child in Job.objects.filter(parent_id=parent.pk)]
    assert len(children) == 2
    for child in children:
        assert (await ended(child.pk)).status == "cancelled"


async def test_cancelling_an_ended_parent_stops_what_it_left_running(runtime):
    parent = await Job.objects.acreate(kind="demo.batch", owner="session:p", status="failed", seq=3)
    left = await Job.objects.acreate(kind="demo.timer", owner="session:p", parent=parent, seq=1)
    again = await actions.cancel_job("session:p", str(parent.pk))
    assert again.status == "failed"
    child = await ended(left.pk)
    assert (child.status, child.error) == ("cancelled", "Its parent job ended")


async def test_an_interrupted_parent_ends_its_children(runtime):
    from datetime import timedelta

    from django.utils import timezone

    from liveprogress.recovery import sweep_stale

    stale = timezone.now() - timedelta(minutes=5)
    parent = await Job.objects.acreate(
        kind="tests.abandons",
        owner="session:p",
        status="running",
        seq=2,
        worker="elsewhere:1:x",
        heartbeat_at=stale,
    )
    queued = await Job.objects.acreate(kind="demo.timer", owner="session:p", parent=parent, seq=1)
    assert await sweep_stale() == 1
    assert (await ended(parent.pk)).status == "interrupted"
    assert (await ended(queued.pk)).status == "cancelled"


async def test_a_server_job_that_fails_leaves_no_child_running(runtime):
    parent = await actions.start_job("session:p", "tests.abandons", {"children": 2})
    assert (await ended(parent.pk)).status == "failed"
    async for child in Job.objects.filter(parent_id=parent.pk):
        assert (await ended(child.pk)).status == "cancelled"


def test_in_tests_too_a_failing_parent_leaves_no_child_running(db, fast):
    from liveprogress.testing import run_job

    run = run_job("tests.abandons", children=2)
    assert run.status == "failed"
    assert [child.status for child in run.children] == ["cancelled", "cancelled"]


def test_no_part_of_a_state_grows_past_its_bound(db, fast, settings):
    """A state is sent whole in every frame that carries it: each part is bounded,
    and a result past MAX_RESULT_BYTES fails the job, saying so, at its end."""
    from liveprogress.progress import MESSAGE_MAX, STAGE_NAME_MAX, STAGES_MAX
    from liveprogress.testing import run_job

    said = run_job("tests.oversized", message_chars=50_000, stages=3)
    assert said.status == "succeeded"
    assert len(said.state["message"]) == MESSAGE_MAX and said.state["message"].endswith("…")
    assert {len(stage["name"]) for stage in said.state["stages"]} == {STAGE_NAME_MAX}

    too_big = run_job("tests.oversized", result_bytes=70_000)
    assert too_big.status == "failed" and too_big.result is None
    assert "result is 70002 bytes of JSON, more than the 65536" in too_big.error
    assert len(json.dumps(too_big.state)) < 10_000
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "MAX_RESULT_BYTES": 100_000}
    assert run_job("tests.oversized", result_bytes=70_000).status == "succeeded"

    many = run_job("tests.oversized", stages=STAGES_MAX + 1)
    assert many.status == "failed" and f"at most {STAGES_MAX} stages" in many.error


def test_a_job_attaches_at_most_100_files(db, fast):
    from liveprogress.testing import run_job

    run = run_job("tests.attach", size=1, count=101)
    assert run.status == "failed" and "at most 100 files" in run.error
    assert len(run.state["files"]) == 100
    # Replacing one of the same name is no new file.
    assert run_job("tests.attach", name="same.txt", size=1, count=1).status == "succeeded"


@pytest.mark.parametrize(
    ("owners", "address", "turn"),
    [
        # Eight imports from one visitor took all eight threads; another visitor's
        # job waited until they were cancelled.
        (["session:hog"] * 4, "", "session:hog"),
        # Sessions cost nothing: minted at one address, they share one turn.
        ([f"session:{n}" for n in range(4)], "203.0.113.5", "address:203.0.113.5"),
    ],
)
async def test_one_client_can_t_hold_every_sync_thread(runtime, settings, owners, address, turn):
    from liveprogress.runtime import get_runtime, stop_runtime
    from tests import jobs

    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "SYNC_WORKERS": 4, "MAX_SYNC_PER_OWNER": 2}
    await stop_runtime()
    fresh = await get_runtime()  # its threads with these settings
    params = {"seconds": 30}
    hogs = [
        await actions.start_job(owner, "tests.blocking", params, address=address)
        for owner in owners
    ]
    try:
        async with asyncio.timeout(5):
            while fresh.runner.threads.running(turn) < 2:
                await asyncio.sleep(0.02)
        other = await actions.start_job(
            "session:other", "tests.sync_steps", {"steps": 2}, address="198.51.100.7"
        )
        assert (await ended(other.pk)).status == "succeeded"
        statuses = [(await Job.objects.aget(pk=job.pk)).status for job in hogs]
        assert sorted(statuses) == ["queued", "queued", "running", "running"]
        assert fresh.runner.threads.running(turn) == 2
    finally:
        jobs.release.set()
    try:
        for job in hogs:
            assert (await ended(job.pk)).status == "succeeded"
    finally:
        jobs.release.clear()


async def test_watch_mine_answers_first_however_busy_the_owner_s_jobs(runtime):
    """Live states that arrive while the list is read come after it, never before."""
    client, owner = await visitor_session()
    for _ in range(3):
        await actions.start_job(owner, "tests.chatty", {"seconds": 5, "size": 200})
    await asyncio.sleep(0.3)
    for _attempt in range(5):
        socket_ = await socket_of(client)
        await socket_.send_json_to({"action": "watch_mine"})
        first = await socket_.receive_json_from(5)
        assert first["type"] == "watching", first["type"]
        seqs = {state["id"]: state["seq"] for state in first["jobs"]}
        # Nothing older than the list follows it.
        for _ in range(10):
            frame = await socket_.receive_json_from(5)
            assert frame["job"]["seq"] > seqs.get(frame["job"]["id"], 0)
        await socket_.disconnect()
    async for job in Job.objects.filter(owner=owner):
        await actions.cancel_job(owner, str(job.pk))


async def test_a_sync_attach_in_an_async_job_fails_it_instead_of_freezing_the_server(runtime):
    wrong = await actions.start_job("system:a", "tests.async_attach", {"sync_call": True})
    right = await actions.start_job("system:a", "tests.async_attach", {})
    wrong, right = await ended(wrong.pk), await ended(right.pk)
    assert (wrong.status, right.status) == ("failed", "succeeded")
    assert "await aattach" in wrong.error
    assert [entry["name"] for entry in right.files] == ["right.txt"]
