"""Share links on a real Daphne (the demo site, which turns them on): a stranger
with a fresh cookie jar follows the owner's job live to its end through the link,
sees no result or file, and can cancel nothing through any endpoint; revoking the
link cuts the stranger's open stream at once (the periodic check set far off to
prove the broadcast does it), an expired link's within ``SESSION_CHECK_INTERVAL``;
a dead link answers 404 from then on, and a revoke in one server process cuts a
stream held by another.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.servers import (
    DaphneServer,
    EventStream,
    Visitor,
    next_frame,
    send_json,
    start_timer,
)
from tests.topology import RedisServer

pytestmark = pytest.mark.integration

CHECK_INTERVAL = 1.0
SLACK = 2.5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """The periodic check far off: only a revoke's broadcast cuts in time."""
    db = tmp_path_factory.mktemp("shares") / "shares.sqlite3"
    settings = {"SESSION_CHECK_INTERVAL": 600.0, "RECONCILE_INTERVAL": 0.5}
    with DaphneServer(db, liveprogress=settings) as running:
        yield running


@pytest.fixture(scope="module")
def checking_server(tmp_path_factory: pytest.TempPathFactory):
    db = tmp_path_factory.mktemp("shares-check") / "shares.sqlite3"
    settings = {"SESSION_CHECK_INTERVAL": CHECK_INTERVAL, "RECONCILE_INTERVAL": 0.5}
    with DaphneServer(db, liveprogress=settings) as running:
        yield running


def share(owner: Visitor, job_id: str, lifetime: int | None = None) -> tuple[dict[str, Any], str]:
    """A new link to the owner's job: its API answer, and its path."""
    body = {} if lifetime is None else {"lifetime": lifetime}
    status, link = owner.post_json(f"/api/jobs/{job_id}/shares/", body)
    assert status == 201, link
    path = link["url"].removeprefix(owner.server.origin)
    assert path.startswith("/shared/") and link["url"].startswith(owner.server.origin)
    return link, path


def feed_of(path: str, job_id: str) -> str:
    return "/api/jobs" + path + job_id + "/events/"


def shared_stream(stranger: Visitor, path: str, job_id: str) -> EventStream:
    stream = stranger.events(feed_of(path, job_id))
    assert stream.status == 200, stream.json
    assert "Set-Cookie" not in stream.headers
    return stream


def ends_with_session_ended(stream: EventStream) -> list[str]:
    names = []
    while (event := stream.next_event()) is not None:
        names.append(event["event"])
    assert names and names[-1] == "session_ended", names
    return names


def test_a_stranger_follows_the_job_live_to_its_end_and_can_cancel_nothing(server):
    owner = Visitor(server)
    job = start_timer(owner, 30, 0.05)
    link, path = share(owner, job["id"])

    stranger = Visitor(server)
    status, _ = stranger.get(path)
    assert status == 200 and "Set-Cookie" not in stranger.last_headers
    assert not list(stranger.jar)
    with shared_stream(stranger, path, job["id"]) as stream:
        events = stream.events_until(
            lambda event: event["event"] == "job" and event["data"]["job"]["status"] == "succeeded"
        )
        assert stream.next_event() is None  # the stream ends after the final state
    states = [event["data"]["job"] for event in events if event["event"] == "job"]
    seqs = [state["seq"] for state in states]
    assert len(states) >= 3 and seqs == sorted(set(seqs))
    assert [int(event["id"]) for event in events if event["event"] == "job"] == seqs
    assert {state["id"] for state in states} == {job["id"]}
    assert all(state["result"] is None and state["files"] == [] for state in states)
    assert states[-1]["percent"] == 100.0
    assert owner.get(f"/api/jobs/{job['id']}/")[1]["result"] == {"steps": 30}
    # Reconnecting once it holds the final state: nothing will come (204).
    again = stranger.events(feed_of(path, job["id"]), {"Last-Event-ID": str(seqs[-1])})
    assert again.status == 204
    assert not list(stranger.jar)

    # Now a running one: nothing the stranger does stops it.
    running = start_timer(owner, 2000, 0.05)
    _, running_path = share(owner, running["id"])
    feed = "/api/jobs" + running_path + running["id"]
    for method, where in [
        ("POST", feed + "/"),
        ("DELETE", feed + "/"),
        ("POST", feed + "/events/"),
        ("POST", feed + "/cancel/"),
        ("POST", feed + "/pause/"),
        ("POST", running_path),
        ("POST", f"/api/jobs/{running['id']}/cancel/"),
        ("POST", f"/api/jobs/{running['id']}/pause/"),
    ]:
        status, body = stranger.request(method, where, b"{}", {"Content-Type": "application/json"})
        assert status in (403, 404, 405), (method, where, status, body)
    # Even as a visitor with a session and the CSRF token, through the API and the socket.
    status, body = stranger.post_json(f"/api/jobs/{running['id']}/cancel/")
    assert status == 404 and body["code"] == "not_found"
    status, body = stranger.post_json(f"/api/jobs/{running['id']}/shares/")
    assert status == 404 and body["code"] == "not_found"

    async def through_the_socket() -> None:
        async with stranger.ws() as ws:
            for action in ("cancel", "pause", "subscribe"):
                await send_json(ws, {"action": action, "job": running["id"]})
                frame = await next_frame(ws)
                assert frame["type"] == "error" and frame["code"] == "not_found", frame

    asyncio.run(through_the_socket())
    # The link opens its own job, not the owner's others.
    status, body = stranger.get("/api/jobs" + running_path + job["id"] + "/")
    assert status == 404 and body["code"] == "not_found"
    assert owner.get(f"/api/jobs/{running['id']}/")[1]["status"] == "running"
    owner.post_json(f"/api/jobs/{running['id']}/cancel/")


async def test_revoking_cuts_the_open_stream_at_once_and_the_link_is_dead(server):
    owner = Visitor(server)
    job = await asyncio.to_thread(start_timer, owner, 2000, 0.05)
    link, path = await asyncio.to_thread(share, owner, job["id"])
    stranger = Visitor(server)
    stream = await asyncio.to_thread(shared_stream, stranger, path, job["id"])
    first = await asyncio.to_thread(stream.next_event)
    assert first is not None and first["event"] == "job"

    revoked_at = time.monotonic()
    status, body = await asyncio.to_thread(
        owner.post_json, f"/api/jobs/{job['id']}/shares/{link['id']}/revoke/"
    )
    assert status == 200 and body["revoked_at"] is not None
    # Well under the check's 600 s: the broadcast did it.
    await asyncio.wait_for(asyncio.to_thread(ends_with_session_ended, stream), 3.0)
    assert time.monotonic() - revoked_at < 3.0
    stream.close()
    for where in (path, "/api/jobs" + path + job["id"] + "/", feed_of(path, job["id"])):
        status, _ = await asyncio.to_thread(stranger.get, where)
        assert status == 404, where
    listed = await asyncio.to_thread(owner.get, f"/api/jobs/{job['id']}/shares/")
    assert listed == (200, {"shares": []})
    await asyncio.to_thread(owner.post_json, f"/api/jobs/{job['id']}/cancel/")


async def test_an_expired_link_s_stream_ends_within_the_check_interval(checking_server):
    server = checking_server
    owner = Visitor(server)
    job = await asyncio.to_thread(start_timer, owner, 2000, 0.05)
    lifetime = 3
    _, path = await asyncio.to_thread(share, owner, job["id"], lifetime)
    made_at = time.monotonic()
    stranger = Visitor(server)
    stream = await asyncio.to_thread(shared_stream, stranger, path, job["id"])
    names = await asyncio.wait_for(
        asyncio.to_thread(ends_with_session_ended, stream), lifetime + CHECK_INTERVAL + SLACK
    )
    took = time.monotonic() - made_at
    # It ran until the link expired, and no longer than the bound past that.
    assert lifetime - 0.5 <= took <= lifetime + CHECK_INTERVAL + SLACK, took
    assert names.count("job") >= 3
    stream.close()
    status, body = await asyncio.to_thread(stranger.get, "/api/jobs" + path + job["id"] + "/")
    assert status == 404 and body["code"] == "not_found"
    assert (await asyncio.to_thread(stranger.get, path))[0] == 404
    await asyncio.to_thread(owner.post_json, f"/api/jobs/{job['id']}/cancel/")


async def test_a_revoke_in_one_server_process_cuts_a_stream_in_another(tmp_path):
    """Two servers, Redis between them: the link's row and the broadcast reach both."""
    redis = RedisServer(tmp_path)
    redis.start()
    env = {"REDIS_URL": redis.url}
    settings = {"SESSION_CHECK_INTERVAL": 600.0}
    db = tmp_path / "shared.sqlite3"
    try:
        with (
            DaphneServer(db, env, liveprogress=settings) as first,
            DaphneServer(db, env, liveprogress=settings) as second,
        ):
            owner = Visitor(first)
            job = await asyncio.to_thread(start_timer, owner, 2000, 0.05)
            link, path = await asyncio.to_thread(share, owner, job["id"])
            stranger = Visitor(second)
            stream = await asyncio.to_thread(shared_stream, stranger, path, job["id"])
            first_event = await asyncio.to_thread(stream.next_event)
            assert first_event is not None and first_event["event"] == "job"
            await asyncio.to_thread(
                owner.post_json, f"/api/jobs/{job['id']}/shares/{link['id']}/revoke/"
            )
            await asyncio.wait_for(asyncio.to_thread(ends_with_session_ended, stream), 3.0)
            stream.close()
            assert (await asyncio.to_thread(stranger.get, path))[0] == 404
            await asyncio.to_thread(owner.post_json, f"/api/jobs/{job['id']}/cancel/")
    finally:
        redis.stop()
