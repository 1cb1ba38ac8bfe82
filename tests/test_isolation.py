"""Isolation between owners: every way of naming a job reaches only one's own.

Three owners share one server: two logged-in users and an anonymous session,
each with jobs of its own, all running (long demo.timer jobs, quiet after their
first states, cancelled at the end). For every way of naming a job (WebSocket
subscribe, cancel, unsubscribe, start with forged owner fields; the API's
get, cancel and list; ``watch_mine``'s listing and live stream) an owner reaches
its own jobs, and a stranger's job answers byte for byte as a random UUID does,
apart from the id it echoes. Logging in or out changes the owner: what the
session owned before is not visible after, either way. Writes need the CSRF
token; sockets from a foreign origin are refused.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import AsyncClient

from liveprogress import actions
from liveprogress.models import Job
from proyecto.asgi import application
from tests.conftest import FAST
from tests.test_consumers import connect, new_session

pytestmark = pytest.mark.asyncio

# Running for a long time and silent after its first states: a stranger's request
# can't be confused with a state the job happened to publish at that moment.
LONG = {"steps": 1000, "interval": 60.0}


@pytest.fixture
def fast(settings):
    """FAST, without heartbeat writes: rows stay identical unless someone changes them."""
    settings.LIVEPROGRESS = {**FAST, "HEARTBEAT_INTERVAL": 600.0, "STALE_AFTER": 3600.0}
    return settings.LIVEPROGRESS


@dataclass
class Browser:
    """One browser: its cookies (session, CSRF token) and the owner they stand for."""

    name: str
    client: AsyncClient
    owner: str = ""
    jobs: list[str] = field(default_factory=list)

    @property
    def session_key(self) -> str:
        return self.client.cookies["sessionid"].value

    @property
    def token(self) -> str:
        return self.client.cookies["csrftoken"].value

    async def post(self, path: str, body: Any = None, *, token: str | None = None):
        headers = {"X-CSRFToken": self.token if token is None else token}
        return await self.client.post(
            path, json.dumps(body or {}), content_type="application/json", headers=headers
        )

    async def start(self, params: dict[str, Any] = LONG, **extra: Any) -> str:
        response = await self.post("/api/jobs/", {"kind": "demo.timer", "params": params, **extra})
        assert response.status_code == 201, response.content
        job_id = response.json()["id"]
        self.jobs.append(job_id)
        return job_id

    async def socket(self) -> WebsocketCommunicator:
        return await connect(self.session_key)


async def open_browser(name: str) -> Browser:
    """A browser that loaded the page: an anonymous session and a CSRF cookie."""
    client = AsyncClient(enforce_csrf_checks=True)
    response = await client.get("/progress/")
    assert response.status_code == 200
    browser = Browser(name, client)
    browser.owner = f"session:{browser.session_key}"
    return browser


async def log_in(browser: Browser, username: str) -> None:
    """Log the browser in as a (new) user, the way Django's login does: the session key changes."""
    user = await get_user_model().objects.acreate_user(username)
    before = browser.session_key
    await browser.client.aforce_login(user)
    assert browser.session_key != before
    browser.owner = f"user:{user.pk}"


async def rows() -> dict[str, dict[str, Any]]:
    return {str(row["id"]): row async for row in Job.objects.values()}


async def until_running(job_ids: list[str], timeout: float = 5) -> None:
    """Wait until every job runs and has written what it published (it is quiet then)."""
    async with asyncio.timeout(timeout):
        while await Job.objects.filter(pk__in=job_ids).exclude(status="running").aexists():
            await asyncio.sleep(0.02)
    await asyncio.sleep(FAST["PERSIST_INTERVAL"] + 0.1)


async def ask_text(ws: WebsocketCommunicator, frame: dict[str, Any]) -> str:
    await ws.send_json_to(frame)
    return await ws.receive_from(3)


def masked(text: str, job_id: str) -> str:
    assert text.count(job_id) <= 1, text
    return text.replace(job_id, "<ID>")


def http_answer(response) -> tuple[int, bytes, dict[str, str], dict[str, str]]:
    cookies = {name: morsel.value for name, morsel in response.cookies.items()}
    return response.status_code, response.content, dict(response.headers), cookies


async def assert_ws_like_random(ws, frame: dict[str, Any], foreign: str) -> str:
    """The frame naming ``foreign`` answers exactly as it does naming a random id."""
    random_id = str(uuid.uuid4())
    theirs = await ask_text(ws, {**frame, "job": foreign})
    unknown = await ask_text(ws, {**frame, "job": random_id})
    assert masked(theirs, foreign) == masked(unknown, random_id), (frame, theirs, unknown)
    return theirs


async def assert_http_like_random(browser: Browser, method: str, template: str, foreign: str):
    random_id = str(uuid.uuid4())

    async def call(job_id: str):
        path = template.format(job_id)
        if method == "GET":
            return await browser.client.get(path)
        return await browser.post(path)

    theirs, unknown = await call(foreign), await call(random_id)
    assert http_answer(theirs) == http_answer(unknown), (template, theirs.content)
    assert theirs.status_code == 404
    assert theirs.json() == {
        "type": "error",
        "code": "not_found",
        "detail": "No such job",
        "field": "job",
    }


@pytest.fixture
async def browsers(runtime):
    """alice and bob, logged in; anon, a visitor with a session: four jobs each, running."""
    alice, bob, anon = [await open_browser(name) for name in ("alice", "bob", "anon")]
    await log_in(alice, "alice")
    await log_in(bob, "bob")
    everyone = [alice, bob, anon]
    for browser in everyone:
        for _ in range(4):
            await browser.start()
    await until_running([job_id for browser in everyone for job_id in browser.jobs])
    yield everyone
    # Whatever happened, nothing keeps running.
    async for job in Job.objects.filter(status__in=("queued", "running")):
        await actions.cancel_job(job.owner, str(job.id))


async def test_each_owner_reaches_only_its_own_jobs(browsers):
    alice, bob, anon = browsers
    sockets = {browser.name: await browser.socket() for browser in browsers}
    try:
        # A start over the socket with forged owner fields: the job is the caller's.
        for browser, other in ((alice, bob), (bob, anon), (anon, alice)):
            ws = sockets[browser.name]
            forged = {"owner": other.owner, "user": other.owner.partition(":")[2]}
            await ws.send_json_to(
                {"action": "start", "kind": "demo.timer", "params": LONG, **forged}
            )
            first = await ws.receive_json_from(3)
            assert first["type"] == "job", first
            browser.jobs.append(first["job"]["id"])
            assert (await Job.objects.aget(pk=first["job"]["id"])).owner == browser.owner
            # The same fields among the params are refused, and start nothing.
            count = await Job.objects.acount()
            await ws.send_json_to(
                {"action": "start", "kind": "demo.timer", "params": {**LONG, "owner": "x"}}
            )
            # (after the live states of the job just started)
            while (refused := await ws.receive_json_from(3))["type"] == "job":
                assert refused["job"]["id"] == first["job"]["id"]
            assert (refused["code"], refused["field"]) == ("bad_request", "params.owner")
            assert await Job.objects.acount() == count
        # Over HTTP too: the body's owner is ignored.
        forged_id = await alice.start(owner=bob.owner, user=bob.owner)
        assert (await Job.objects.aget(pk=forged_id)).owner == alice.owner
        await until_running([job_id for browser in browsers for job_id in browser.jobs])
        # The socket's own live states of those starts are done with.
        for ws in sockets.values():
            while not await ws.receive_nothing(0.1):
                await ws.receive_from()

        before = await rows()
        for browser in browsers:
            ws = sockets[browser.name]
            foreign = [
                job_id for other in browsers if other is not browser for job_id in other.jobs
            ]
            assert len(foreign) >= 2 * 4
            for job_id in foreign:
                for frame in (
                    {"action": "subscribe"},
                    {"action": "subscribe", "after": 0},
                    {"action": "cancel"},
                ):
                    answer = json.loads(await assert_ws_like_random(ws, frame, job_id))
                    assert answer["code"] == "not_found" and answer["job"] == job_id
                answer = json.loads(
                    await assert_ws_like_random(ws, {"action": "unsubscribe"}, job_id)
                )
                assert answer == {"type": "unsubscribed", "job": job_id}
                await assert_http_like_random(browser, "GET", "/api/jobs/{}/", job_id)
                await assert_http_like_random(browser, "POST", "/api/jobs/{}/cancel/", job_id)
            # Nothing of theirs arrived in between, live or otherwise.
            assert await ws.receive_nothing(0.2)
        # Nobody's job noticed.
        assert await rows() == before

        for browser in browsers:
            ws = sockets[browser.name]
            for job_id in browser.jobs:
                answer = json.loads(await ask_text(ws, {"action": "subscribe", "job": job_id}))
                # Its state, or an ack when this socket holds it already (it started it).
                named = answer["job"]["id"] if answer["type"] == "job" else answer["job"]
                assert answer["type"] in ("job", "subscribed") and named == job_id, answer
                response = await browser.client.get(f"/api/jobs/{job_id}/")
                assert response.status_code == 200 and response.json()["id"] == job_id
            for query in ("?limit=200", "?status=active&limit=200"):
                listing = (await browser.client.get("/api/jobs/" + query)).json()
                assert {state["id"] for state in listing["jobs"]} == set(browser.jobs)
    finally:
        for ws in sockets.values():
            await ws.disconnect()

    # The end: each cancels its own, the first over the socket, the rest over HTTP.
    for browser in browsers:
        ws = await browser.socket()
        first, *rest = browser.jobs
        answer = json.loads(await ask_text(ws, {"action": "cancel", "job": first}))
        assert answer["type"] == "job" and answer["job"]["cancel_requested"]
        for job_id in rest:
            response = await browser.post(f"/api/jobs/{job_id}/cancel/")
            assert response.status_code in (200, 202), response.content
        await ws.disconnect()
    everyone = [job_id for browser in browsers for job_id in browser.jobs]
    async with asyncio.timeout(5):
        while await Job.objects.filter(pk__in=everyone).exclude(status="cancelled").aexists():
            await asyncio.sleep(0.05)


async def test_watch_mine_lists_and_streams_only_ones_own(browsers):
    alice, bob, anon = browsers
    sockets = {browser.name: await browser.socket() for browser in browsers}
    try:
        for browser in browsers:
            listing = json.loads(await ask_text(sockets[browser.name], {"action": "watch_mine"}))
            assert listing["type"] == "watching"
            assert {state["id"] for state in listing["jobs"]} == set(browser.jobs)

        # Meanwhile, each starts a job over HTTP, and one over a second socket.
        started = {browser.name: [await browser.start()] for browser in browsers}
        for browser in browsers:
            other = await browser.socket()
            first = json.loads(
                await ask_text(other, {"action": "start", "kind": "demo.timer", "params": LONG})
            )
            started[browser.name].append(first["job"]["id"])
            browser.jobs.append(first["job"]["id"])
            await other.disconnect()

        for browser in browsers:
            ws = sockets[browser.name]
            seen: set[str] = set()
            async with asyncio.timeout(5):
                while not set(started[browser.name]) <= seen:
                    frame = await ws.receive_json_from(5)
                    assert frame["type"] == "job", frame
                    seen.add(frame["job"]["id"])
            # A little longer: still nothing of anyone else's.
            while not await ws.receive_nothing(0.3):
                frame = await ws.receive_json_from(1)
                seen.add(frame["job"]["id"])
            assert seen <= set(browser.jobs), (browser.name, seen - set(browser.jobs))
    finally:
        for ws in sockets.values():
            await ws.disconnect()


async def test_logging_out_or_in_leaves_the_other_owner_s_jobs_behind(browsers):
    alice, bob, anon = browsers
    old_alice_key, old_anon_key = alice.session_key, anon.session_key

    # alice logs out: the same browser, anonymous now, sees none of alice's jobs.
    await alice.client.alogout()
    assert (await alice.client.get("/progress/")).status_code == 200
    assert alice.session_key != old_alice_key
    assert (await alice.client.get("/api/jobs/")).json() == {"jobs": []}
    for job_id in alice.jobs:
        await assert_http_like_random(alice, "GET", "/api/jobs/{}/", job_id)
        await assert_http_like_random(alice, "POST", "/api/jobs/{}/cancel/", job_id)
    ws = await alice.socket()
    assert json.loads(await ask_text(ws, {"action": "watch_mine"})) == {
        "type": "watching",
        "jobs": [],
    }
    for job_id in alice.jobs:
        await assert_ws_like_random(ws, {"action": "subscribe"}, job_id)
    await ws.disconnect()

    # anon logs in: the user does not inherit what the session owned.
    await log_in(anon, "carol")
    assert (await anon.client.get("/api/jobs/")).json() == {"jobs": []}
    ws = await anon.socket()
    assert json.loads(await ask_text(ws, {"action": "watch_mine"}))["jobs"] == []
    for job_id in anon.jobs:
        await assert_ws_like_random(ws, {"action": "subscribe"}, job_id)
        await assert_http_like_random(anon, "GET", "/api/jobs/{}/", job_id)
    await ws.disconnect()

    # The cookies from before name sessions that are gone: they own nothing.
    for key in (old_alice_key, old_anon_key):
        ws = await connect(key)
        answer = json.loads(await ask_text(ws, {"action": "subscribe", "job": alice.jobs[0]}))
        assert answer["code"] == "forbidden", answer
        await ws.disconnect()

    # Nothing was cancelled along the way.
    assert not await Job.objects.exclude(status="running").aexists()


async def test_writes_without_the_csrf_token_are_refused(browsers):
    alice, bob, anon = browsers
    count = await Job.objects.acount()
    for token in ("", "x" * 32, bob.token):
        for path in ("/api/jobs/", f"/api/jobs/{alice.jobs[0]}/cancel/"):
            response = await alice.post(path, {"kind": "demo.timer"}, token=token)
            assert response.status_code == 403, (token, path)
            assert response["Content-Type"] == "application/json"
            body = response.json()
            assert (body["type"], body["code"]) == ("error", "forbidden")
            assert "CSRF" in body["detail"]
    assert await Job.objects.acount() == count
    assert not await Job.objects.filter(cancel_requested=True).aexists()


@pytest.mark.parametrize(
    "origin",
    [
        b"http://evil.example",
        b"http://localhost.evil.example",
        b"null",
        b"http://localhost:1@evil",
        # The same host on another port or scheme is another origin (as for CSRF).
        b"http://localhost:3000",
        b"http://localhost:1",
        b"https://localhost",
        b"HTTP://LOCALHOST",
        None,
    ],
)
async def test_a_socket_from_a_foreign_origin_is_refused(runtime, origin):
    visitor = await open_browser("visitor")
    headers = [(b"host", b"localhost"), (b"cookie", f"sessionid={visitor.session_key}".encode())]
    if origin is not None:
        headers.append((b"origin", origin))
    communicator = WebsocketCommunicator(application, "/ws/progress/", headers=headers)
    connected, _ = await communicator.connect()
    assert not connected


@pytest.mark.parametrize(
    ("host", "origin", "extra"),
    [
        (b"localhost:8000", b"http://localhost:8000", {}),
        (
            b"localhost",
            b"https://localhost",
            {"SECURE_PROXY_SSL_HEADER": ("HTTP_X_PROTO", "https")},
        ),
        (
            b"localhost",
            b"https://app.example.com",
            {"CSRF_TRUSTED_ORIGINS": ["https://*.example.com"]},
        ),
        (b"localhost", b"http://other.test:81", {"CSRF_TRUSTED_ORIGINS": ["http://other.test:81"]}),
    ],
)
async def test_a_socket_from_the_site_s_own_or_a_trusted_origin_connects(
    runtime, settings, host, origin, extra
):
    for name, value in extra.items():
        setattr(settings, name, value)
    visitor = await open_browser("visitor")
    headers = [
        (b"host", host),
        (b"origin", origin),
        (b"x-proto", b"https"),
        (b"cookie", f"sessionid={visitor.session_key}".encode()),
    ]
    communicator = WebsocketCommunicator(application, "/ws/progress/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    await communicator.disconnect()


async def test_a_stranger_never_receives_a_state_of_a_busy_job(runtime, settings):
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "MAX_FRAMES_PER_SECOND": 10_000}
    owner = await connect(await new_session())
    await owner.send_json_to(
        {"action": "start", "kind": "demo.timer", "params": {"steps": 10_000, "interval": 0.001}}
    )
    job_id = (await owner.receive_json_from(3))["job"]["id"]
    stranger = await connect(await new_session())
    leaked = []
    try:
        async with asyncio.timeout(20):
            for _ in range(400):
                await stranger.send_json_to({"action": "subscribe", "job": job_id})
                while (frame := await stranger.receive_json_from(3))["type"] != "error":
                    leaked.append(frame)
                if leaked:
                    break
        assert leaked == []
    finally:
        await owner.send_json_to({"action": "cancel", "job": job_id})
        await stranger.disconnect()
        await owner.disconnect()
