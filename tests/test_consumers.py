"""The WebSocket protocol, through the site's real ASGI stack (origin, session, auth)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.db import SessionStore

from liveprogress.models import Job
from proyecto.asgi import application

pytestmark = pytest.mark.asyncio
ORIGIN = (b"origin", b"http://localhost")


@sync_to_async
def new_session() -> str:
    session = SessionStore()
    session["liveprogress"] = True
    session.create()
    return session.session_key


async def connect(
    session_key: str | None = None, *, origin=ORIGIN, language=None, path="/ws/progress/"
):
    headers = [(b"host", b"localhost")]
    if origin:
        headers.append(origin)
    if session_key:
        headers.append((b"cookie", f"sessionid={session_key}".encode()))
    if language:
        headers.append((b"accept-language", language.encode()))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def ask(ws, frame, timeout=3):
    await (ws.send_to(text_data=frame) if isinstance(frame, str) else ws.send_json_to(frame))
    return await ws.receive_json_from(timeout)


async def until(ws, predicate, timeout=10):
    frames = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await ws.receive_json_from(timeout)
            frames.append(frame)
            if predicate(frame):
                return frames


def terminal(frame):
    return frame["type"] == "job" and frame["job"]["status"] not in ("queued", "running")


@pytest.fixture
async def session_key(runtime):
    return await new_session()


@pytest.fixture
async def visitor(session_key):
    ws = await connect(session_key)
    yield ws
    await ws.disconnect()


async def test_start_answers_with_the_first_state_then_streams(visitor):
    first = await ask(
        visitor, {"action": "start", "kind": "demo.timer", "params": {"steps": 3, "interval": 0.05}}
    )
    assert first["type"] == "job"
    state = first["job"]
    assert state["kind"] == "demo.timer"
    assert state["status"] in ("queued", "running")
    frames = await until(visitor, terminal)
    seqs = [state["seq"]] + [f["job"]["seq"] for f in frames]
    assert seqs == sorted(set(seqs))
    final = frames[-1]["job"]
    assert final["status"] == "succeeded"
    assert (final["progress"], final["percent"]) == (100, 100.0)
    assert final["message"] == "¡Proceso completado!"
    assert final["result"] == {"steps": 3}
    assert final["finished_at"] >= final["started_at"] >= final["created_at"]


async def test_english_socket_gets_english_messages(runtime):
    ws = await connect(await new_session(), language="en-US,en;q=0.9")
    await ask(ws, {"action": "start", "kind": "demo.timer", "params": {"steps": 2, "interval": 0}})
    frames = await until(ws, terminal)
    assert frames[-1]["job"]["message"] == "Process completed!"
    await ws.disconnect()


async def test_subscribe_snapshot_then_live_and_after(visitor, session_key):
    first = await ask(
        visitor, {"action": "start", "kind": "demo.timer", "params": {"steps": 4, "interval": 0.1}}
    )
    job_id = first["job"]["id"]
    other = await connect(session_key)
    snapshot = await ask(other, {"action": "subscribe", "job": job_id})
    assert snapshot["type"] == "job"
    assert snapshot["job"]["id"] == job_id
    frames = await until(other, terminal)
    assert all(f["job"]["seq"] > snapshot["job"]["seq"] for f in frames)
    final_seq = frames[-1]["job"]["seq"]
    # Nothing newer than `after`: an ack instead of a repeated state.
    assert await ask(other, {"action": "subscribe", "job": job_id, "after": final_seq}) == {
        "type": "subscribed",
        "job": job_id,
        "seq": final_seq,
    }
    # This socket holds the final state already: an ack, not a duplicate...
    again = await ask(other, {"action": "subscribe", "job": job_id, "after": final_seq - 2})
    assert again == {"type": "subscribed", "job": job_id, "seq": final_seq}
    # ...while a fresh socket behind it gets the state.
    fresh = await connect(session_key)
    caught_up = await ask(fresh, {"action": "subscribe", "job": job_id, "after": final_seq - 2})
    assert caught_up["job"]["seq"] == final_seq
    await fresh.disconnect()
    await other.disconnect()


async def test_unsubscribe_stops_the_stream(visitor):
    first = await ask(
        visitor,
        {"action": "start", "kind": "demo.timer", "params": {"steps": 20, "interval": 0.05}},
    )
    job_id = first["job"]["id"]
    await until(visitor, lambda f: f["type"] == "job" and f["job"]["current"] >= 1)
    await visitor.send_json_to({"action": "unsubscribe", "job": job_id})
    frames = await until(visitor, lambda f: f["type"] == "unsubscribed")
    assert frames[-1] == {"type": "unsubscribed", "job": job_id}
    assert await visitor.receive_nothing(0.4)
    await ask(visitor, {"action": "cancel", "job": job_id})


async def test_cancel_answers_then_the_terminal_state_follows(visitor):
    first = await ask(
        visitor,
        {"action": "start", "kind": "demo.timer", "params": {"steps": 50, "interval": 0.05}},
    )
    job_id = first["job"]["id"]
    await until(visitor, lambda f: f["type"] == "job" and f["job"]["current"] >= 2)
    await visitor.send_json_to({"action": "cancel", "job": job_id})
    frames = await until(visitor, terminal)
    assert any(f["job"]["cancel_requested"] for f in frames)
    assert frames[-1]["job"]["status"] == "cancelled"
    assert frames[-1]["job"]["current"] < 50
    stored = await Job.objects.aget(pk=job_id)
    assert stored.status == "cancelled"


async def test_cancel_of_an_ended_job_answers_its_state(visitor):
    first = await ask(
        visitor, {"action": "start", "kind": "demo.timer", "params": {"steps": 1, "interval": 0}}
    )
    job_id = first["job"]["id"]
    final = (await until(visitor, terminal))[-1]
    answer = await ask(visitor, {"action": "cancel", "job": job_id})
    assert answer == final


async def test_watch_mine_lists_and_streams_jobs_started_elsewhere(runtime):
    key = await new_session()
    watcher = await connect(key)
    starter = await connect(key)
    listing = await ask(watcher, {"action": "watch_mine"})
    assert listing == {"type": "watching", "jobs": []}
    started = await ask(
        starter, {"action": "start", "kind": "demo.timer", "params": {"steps": 2, "interval": 0.05}}
    )
    frames = await until(watcher, terminal)
    assert {f["job"]["id"] for f in frames} == {started["job"]["id"]}
    listing = await ask(watcher, {"action": "watch_mine"})
    assert [s["id"] for s in listing["jobs"]] == [started["job"]["id"]]
    await watcher.disconnect()
    await starter.disconnect()


async def test_foreign_and_unknown_jobs_answer_alike(visitor, runtime):
    mine = await ask(
        visitor, {"action": "start", "kind": "demo.timer", "params": {"steps": 3, "interval": 0.1}}
    )
    job_id = mine["job"]["id"]
    stranger = await connect(await new_session())
    unknown = str(uuid.uuid4())
    for action in ("subscribe", "cancel"):
        foreign = await ask(stranger, {"action": action, "job": job_id})
        random = await ask(stranger, {"action": action, "job": unknown})
        assert foreign["code"] == random["code"] == "not_found"
        assert {**foreign, "job": None} == {**random, "job": None}
    # The stranger's requests changed nothing: the job ends as it would have.
    final = (await until(visitor, terminal))[-1]["job"]
    assert final["status"] == "succeeded"
    assert not final["cancel_requested"]
    await stranger.disconnect()


@pytest.mark.parametrize(
    ("frame", "code", "field"),
    [
        ("not json", "bad_request", None),
        ("[1, 2]", "bad_request", None),
        ('{"action": "subscribe", "job": NaN}', "bad_request", None),
        ({"action": "dance"}, "bad_request", "action"),
        ({"job": "x"}, "bad_request", "action"),
        ({"action": "subscribe"}, "bad_request", "job"),
        ({"action": "subscribe", "job": "not-a-uuid"}, "bad_request", "job"),
        (
            {"action": "subscribe", "job": str(uuid.UUID(int=1)), "after": -1},
            "bad_request",
            "after",
        ),
        (
            {"action": "subscribe", "job": str(uuid.UUID(int=1)), "after": "3"},
            "bad_request",
            "after",
        ),
        ({"action": "start", "kind": "nope"}, "bad_request", "kind"),
        (
            {"action": "start", "kind": "demo.timer", "params": {"steps": 0}},
            "bad_request",
            "params.steps",
        ),
        (
            {"action": "start", "kind": "demo.timer", "params": {"owner": "x"}},
            "bad_request",
            "params.owner",
        ),
        ({"action": "start", "kind": "demo.timer", "params": []}, "bad_request", "params"),
        ({"action": "cancel", "job": 5}, "bad_request", "job"),
    ],
)
async def test_bad_frames_get_an_error_and_the_socket_lives_on(visitor, frame, code, field):
    answer = await ask(visitor, frame if isinstance(frame, str) else json.dumps(frame))
    assert answer["type"] == "error"
    assert answer["code"] == code
    assert answer.get("field") == field
    assert answer["detail"]
    # Still serving.
    assert (await ask(visitor, {"action": "watch_mine"}))["type"] == "watching"
    assert await Job.objects.acount() == 0


async def test_binary_and_oversized_frames(visitor, settings):
    await visitor.send_to(bytes_data=b"\x00\x01")
    assert (await visitor.receive_json_from())["code"] == "bad_request"
    huge = json.dumps({"action": "watch_mine", "pad": "x" * 70_000})
    assert (await ask(visitor, huge))["code"] == "too_large"
    assert (await ask(visitor, {"action": "watch_mine"}))["type"] == "watching"


async def test_no_session_is_forbidden(runtime):
    ws = await connect(None)
    for frame in (
        {"action": "start", "kind": "demo.timer"},
        {"action": "watch_mine"},
        {"action": "subscribe", "job": str(uuid.uuid4())},
    ):
        answer = await ask(ws, frame)
        assert answer["code"] == "forbidden"
    await ws.disconnect()
    assert await Job.objects.acount() == 0


async def test_made_up_session_cookie_is_no_session(runtime):
    ws = await connect("x" * 32)
    assert (await ask(ws, {"action": "watch_mine"}))["code"] == "forbidden"
    await ws.disconnect()


async def test_foreign_origin_is_refused(runtime):
    communicator = WebsocketCommunicator(
        application,
        "/ws/progress/",
        headers=[(b"host", b"localhost"), (b"origin", b"http://evil.example")],
    )
    connected, _ = await communicator.connect()
    assert not connected


async def test_subscription_cap(visitor, session_key, settings):
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "MAX_SUBSCRIPTIONS": 1}
    running = await ask(
        visitor, {"action": "start", "kind": "demo.timer", "params": {"steps": 100, "interval": 5}}
    )
    assert running["job"]["status"] in ("queued", "running")

    def error(frame):
        return frame["type"] == "error"

    # No second job is started for a socket that couldn't watch it...
    await visitor.send_json_to({"action": "start", "kind": "demo.timer"})
    assert (await until(visitor, error))[-1]["code"] == "limit"
    assert await Job.objects.acount() == 1
    # ...nor another job of the owner's watched.
    owner = f"session:{session_key}"
    other = await Job.objects.acreate(kind="demo.timer", owner=owner, seq=1)
    await visitor.send_json_to({"action": "subscribe", "job": str(other.id)})
    assert (await until(visitor, error))[-1]["code"] == "limit"
    # The one it holds still answers.
    await visitor.send_json_to({"action": "subscribe", "job": running["job"]["id"]})
    again = (await until(visitor, lambda frame: frame["type"] == "subscribed"))[-1]
    assert again["job"] == running["job"]["id"]
    await ask(visitor, {"action": "cancel", "job": running["job"]["id"]})


async def test_ended_jobs_give_up_their_places_on_the_socket(visitor, settings):
    """A page left open starts job after job over one socket: the cap counts the
    jobs that can still send something, not every job it ever watched."""
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "MAX_SUBSCRIPTIONS": 2}
    for _ in range(6):
        started = await ask(
            visitor,
            {"action": "start", "kind": "demo.timer", "params": {"steps": 1, "interval": 0}},
        )
        assert started["type"] == "job", started
        await until(visitor, terminal)
    assert await Job.objects.filter(status="succeeded").acount() == 6


async def test_after_on_a_fresh_socket_sends_no_older_state(visitor, session_key):
    first = await ask(
        visitor, {"action": "start", "kind": "demo.timer", "params": {"steps": 1, "interval": 0}}
    )
    final = (await until(visitor, terminal))[-1]["job"]
    fresh = await connect(session_key)
    answer = await ask(
        fresh, {"action": "subscribe", "job": first["job"]["id"], "after": final["seq"]}
    )
    assert answer == {"type": "subscribed", "job": final["id"], "seq": final["seq"]}
    assert await fresh.receive_nothing(0.3)
    await fresh.disconnect()


async def test_frame_rate_is_limited_and_the_socket_recovers(visitor, settings):
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "MAX_FRAMES_PER_SECOND": 5, "FRAME_BURST": 5}
    ws = await connect(await new_session())  # reads the new limits
    for _ in range(12):
        await ws.send_json_to({"action": "watch_mine"})
    answers = [await ws.receive_json_from() for _ in range(12)]
    assert [a["type"] for a in answers[:5]] == ["watching"] * 5
    limited = [a for a in answers if a["type"] == "error"]
    assert len(limited) >= 6
    assert all(a["code"] == "limit" for a in limited)
    await asyncio.sleep(0.3)
    assert (await ask(ws, {"action": "watch_mine"}))["type"] == "watching"
    await ws.disconnect()


async def test_a_client_that_never_reads_is_closed(runtime, settings):
    from channels.auth import AuthMiddlewareStack
    from channels.routing import URLRouter
    from django.urls import path

    from liveprogress.consumers import CLOSE_NOT_READING, ProgressConsumer

    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "MAX_UNREAD_ANSWERS": 3}

    class NeverRead(ProgressConsumer):
        # The server's send never completes, as with a client that never reads
        # (under a server with backpressure, such as Uvicorn).
        async def _send_text(self, text):
            await asyncio.Event().wait()

    app = AuthMiddlewareStack(URLRouter([path("ws/progress/", NeverRead.as_asgi())]))
    headers = [(b"cookie", f"sessionid={await new_session()}".encode())]
    ws = WebsocketCommunicator(app, "/ws/progress/", headers=headers)
    assert (await ws.connect())[0]
    for _ in range(5):
        await ws.send_json_to({"action": "watch_mine"})
    assert await ws.receive_output(3) == {"type": "websocket.close", "code": CLOSE_NOT_READING}
    await ws.wait()
