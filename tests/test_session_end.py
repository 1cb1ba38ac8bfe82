"""A socket or a stream stops when its session does (access.py, docs/security.md).

A real Daphne, real logins and logouts through Django's own views: a logout ends
the session's socket (close code 4401) and event streams (``event:
session_ended``, then the end) at once, with the periodic check set far off to
prove it; a deactivated user, a deleted session and an anonymous visitor's
session that went away end theirs within ``SESSION_CHECK_INTERVAL``. Other
sessions, the same user's in another browser included, go on.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.accounts import PASSWORD, manage, sign_in, sign_out
from tests.servers import (
    DaphneServer,
    EventStream,
    Visitor,
    frames_until,
    is_state,
    next_frame,
    send_json,
    start_timer,
)
from tests.topology import RedisServer

pytestmark = pytest.mark.integration

#: The check's interval in the servers that test it, and what a cut may take past it.
CHECK_INTERVAL = 1.0
SLACK = 2.5


def start_server(tmp_path: Any, name: str, interval: float) -> DaphneServer:
    return DaphneServer(
        tmp_path / f"{name}.sqlite3",
        {"DJANGO_SETTINGS_MODULE": "tests.staff_settings"},
        liveprogress={"SESSION_CHECK_INTERVAL": interval, "RECONCILE_INTERVAL": 0.5},
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """The periodic check set far off: only the logout's broadcast can cut in time."""
    with start_server(tmp_path_factory.mktemp("session-end"), "fast", 600.0) as running:
        manage(running, {"users": {"alice": {"password": PASSWORD}}})
        yield running


@pytest.fixture(scope="module")
def checking_server(tmp_path_factory: pytest.TempPathFactory):
    with start_server(tmp_path_factory.mktemp("session-check"), "check", CHECK_INTERVAL) as running:
        yield running


async def opened(who: Visitor, job_id: str) -> tuple[Any, EventStream]:
    """A socket subscribed to ``job_id`` and ``who``'s owner stream, each past its
    first state: both live."""
    ws = await who.ws()
    await send_json(ws, {"action": "subscribe", "job": job_id})
    await frames_until(ws, lambda frame: is_state(frame, job_id))
    stream = await asyncio.to_thread(who.events, "/api/jobs/events/")
    assert stream.status == 200, stream.json
    first = await asyncio.to_thread(stream.next_event)
    assert first is not None and first["event"] == "watching"
    return ws, stream


async def closed_code(ws: Any, within: float) -> int:
    """The close code of ``ws``, which must close within ``within`` s (states before
    that are read and dropped)."""
    deadline = time.monotonic() + within
    try:
        while True:
            await next_frame(ws, max(0.01, deadline - time.monotonic()))
    except ConnectionClosed as closed:
        assert closed.rcvd is not None
        return closed.rcvd.code
    except TimeoutError:
        raise AssertionError(f"the socket was still open after {within} s") from None


def stream_ends_with_session_ended(stream: EventStream) -> list[str]:
    """The stream's remaining events' names: it must end right after ``session_ended``."""
    names = []
    while (event := stream.next_event()) is not None:
        names.append(event["event"])
    assert names and names[-1] == "session_ended", names
    return names


async def test_a_logout_ends_the_session_s_socket_and_streams_at_once(server):
    alice = Visitor(server)
    await asyncio.to_thread(sign_in, alice, "alice")
    other_browser = Visitor(server)
    await asyncio.to_thread(sign_in, other_browser, "alice")
    job = await asyncio.to_thread(start_timer, alice, 2000, 0.05)
    ws, stream = await opened(alice, job["id"])
    other_ws = await other_browser.ws()
    await send_json(other_ws, {"action": "subscribe", "job": job["id"]})
    await frames_until(other_ws, lambda frame: is_state(frame, job["id"]))
    job_stream = await asyncio.to_thread(alice.events, f"/api/jobs/{job['id']}/events/")
    assert job_stream.status == 200

    signed_out_at = time.monotonic()
    await asyncio.to_thread(sign_out, alice)
    # Well under the check's 600 s: the broadcast did it.
    assert await closed_code(ws, within=3.0) == 4401
    await asyncio.wait_for(asyncio.to_thread(stream_ends_with_session_ended, stream), 3.0)
    await asyncio.wait_for(asyncio.to_thread(stream_ends_with_session_ended, job_stream), 3.0)
    assert time.monotonic() - signed_out_at < 5.0

    # The same user's other browser is another session: it goes on.
    before = time.monotonic()
    seqs = []
    while time.monotonic() - before < 1.0:
        frame = await next_frame(other_ws, 2.0)
        if is_state(frame, job["id"]):
            seqs.append(frame["job"]["seq"])
    assert len(seqs) >= 2 and seqs == sorted(seqs)
    await other_ws.close()

    # Signed out, the browser is an anonymous visitor (the page after the logout
    # gave it a new session): a new stream of it sees none of alice's jobs.
    again = await asyncio.to_thread(alice.events, "/api/jobs/events/")
    watching = await asyncio.to_thread(again.next_event)
    assert watching is not None and watching["data"]["jobs"] == []
    refused = await asyncio.to_thread(alice.events, f"/api/jobs/{job['id']}/events/")
    assert refused.status == 404 and refused.json["code"] == "not_found"
    for each in (stream, job_stream, again, refused):
        each.close()


async def test_a_deactivated_user_a_deleted_session_and_a_gone_visitor_are_cut_within_the_interval(
    checking_server,
):
    server = checking_server
    pks = await asyncio.to_thread(
        manage, server, {"users": {name: {"password": PASSWORD} for name in ("bob", "carol")}}
    )
    bob, carol, visitor, bystander = (Visitor(server) for _ in range(4))
    await asyncio.to_thread(sign_in, bob, "bob")
    await asyncio.to_thread(sign_in, carol, "carol")
    await asyncio.to_thread(bystander.visit)
    await asyncio.to_thread(visitor.visit)
    opened_ones = {}
    for who in (bob, carol, visitor, bystander):
        job = await asyncio.to_thread(start_timer, who, 2000, 0.05)
        opened_ones[who] = await opened(who, job["id"])

    # bob is deactivated, carol's session is deleted (what a flush or an expiry
    # does), the anonymous visitor's too; no signal tells of any of it.
    changed_at = time.monotonic()
    gone = [carol.cookie("sessionid"), visitor.cookie("sessionid")]
    await asyncio.to_thread(
        manage,
        server,
        {"users": {"bob": {"password": PASSWORD, "active": False}}, "delete_sessions": gone},
    )
    assert pks["bob"] != pks["carol"]
    for who in (bob, carol, visitor):
        ws, stream = opened_ones[who]
        assert await closed_code(ws, within=CHECK_INTERVAL + SLACK) == 4401
        await asyncio.wait_for(
            asyncio.to_thread(stream_ends_with_session_ended, stream), CHECK_INTERVAL + SLACK
        )
        stream.close()
    took = time.monotonic() - changed_at
    assert took < CHECK_INTERVAL + SLACK + 2.0, took

    # The bystander's session stands: its socket still gets states.
    ws, stream = opened_ones[bystander]
    frame = await frames_until(ws, lambda frame: is_state(frame))
    assert frame
    await ws.close()
    stream.close()


async def test_a_logout_in_one_server_process_ends_the_session_s_socket_in_another(tmp_path):
    """Two servers, Redis between them: the logout's broadcast reaches the other."""
    redis = RedisServer(tmp_path)
    redis.start()
    env = {"DJANGO_SETTINGS_MODULE": "tests.staff_settings", "REDIS_URL": redis.url}
    settings = {"SESSION_CHECK_INTERVAL": 600.0}
    db = tmp_path / "shared.sqlite3"
    try:
        with (
            DaphneServer(db, env, liveprogress=settings) as first,
            DaphneServer(db, env, liveprogress=settings) as second,
        ):
            await asyncio.to_thread(manage, first, {"users": {"dora": {"password": PASSWORD}}})
            dora = Visitor(first)
            await asyncio.to_thread(sign_in, dora, "dora")
            job = await asyncio.to_thread(start_timer, dora, 2000, 0.05)
            ws, stream = await opened(dora.on(second), job["id"])
            await asyncio.to_thread(sign_out, dora)
            assert await closed_code(ws, within=3.0) == 4401
            await asyncio.wait_for(asyncio.to_thread(stream_ends_with_session_ended, stream), 3.0)
            stream.close()
    finally:
        redis.stop()
