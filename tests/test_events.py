"""Server-Sent Events, the WebSocket's fallback: a real Daphne, a real HTTP client.

The same states as the socket and the JSON API, in seq order, resumable with
Last-Event-ID, ended after the final state, and nobody else's.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from django.core.handlers.asgi import ASGIHandler
from django.test import AsyncClient

from liveprogress import actions
from liveprogress.owner import session_owner

from .servers import DaphneServer, EventStream, Visitor, start_timer

pytestmark = pytest.mark.integration

TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    db = tmp_path_factory.mktemp("events") / "events.sqlite3"
    with DaphneServer(db, liveprogress={"JOB_MODULES": ["tests.jobs"]}) as running:
        yield running


def visitor(server: DaphneServer) -> Visitor:
    new = Visitor(server)
    assert new.visit() == 200
    return new


def is_final(event: dict[str, Any]) -> bool:
    return event["event"] == "job" and event["data"]["job"]["status"] in TERMINAL


def job_states(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    assert all(event["event"] == "job" for event in events), events
    return [event["data"]["job"] for event in events]


def test_a_job_s_stream_carries_its_states_in_seq_order_and_ends_after_the_final_one(server):
    alice = visitor(server)
    job = start_timer(alice, steps=5, interval=0.1)
    with alice.events(f"/api/jobs/{job['id']}/events/") as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert stream.headers["Cache-Control"] == "no-cache"
        events = stream.events_until(is_final)
        # Then the server closes the stream by itself.
        assert stream.next_event() is None
    assert stream.retry == 2000
    states = job_states(events)
    # Each event's id is the state's seq, strictly increasing: no repeat, no step back.
    assert [int(event["id"]) for event in events] == [state["seq"] for state in states]
    assert all(b["seq"] > a["seq"] for a, b in zip(states, states[1:], strict=False))
    assert {state["id"] for state in states} == {job["id"]}
    final = states[-1]
    assert final["status"] == "succeeded" and final["percent"] == 100
    # The same state the JSON API answers.
    status, stored = alice.get(f"/api/jobs/{job['id']}/")
    assert status == 200 and stored == final


def test_last_event_id_resumes_where_the_client_was_without_repeats(server):
    alice = visitor(server)
    job = start_timer(alice, steps=8, interval=0.15)
    path = f"/api/jobs/{job['id']}/events/"
    with alice.events(path) as stream:
        first = stream.events_until(lambda event: event["data"]["job"]["current"] >= 2)
    held = int(first[-1]["id"])

    # The browser's reconnect: Last-Event-ID; nothing it holds comes again.
    with alice.events(path, headers={"Last-Event-ID": str(held)}) as stream:
        rest = job_states(stream.events_until(is_final))
    assert rest[0]["seq"] > held
    assert rest[0]["current"] >= 2
    assert rest[-1]["status"] == "succeeded"
    final_seq = rest[-1]["seq"]

    # ?after= says the same; holding the final state, there is nothing more: 204,
    # which tells EventSource to stop reconnecting.
    with alice.events(f"{path}?after={final_seq}") as stream:
        assert stream.status == 204
    with alice.events(path, headers={"Last-Event-ID": str(final_seq)}) as stream:
        assert stream.status == 204
    # Holding less than the final state: the final state, then the end.
    with alice.events(f"{path}?after={final_seq - 1}") as stream:
        assert job_states(stream.events_until(is_final))[0]["seq"] == final_seq
        assert stream.next_event() is None


def test_a_stream_with_logs_resumes_from_last_event_id_without_gap_or_repeat(server):
    alice = visitor(server)
    status, job = alice.post_json(
        "/api/jobs/", {"kind": "tests.logger", "params": {"lines": 150, "interval": 0.01}}
    )
    assert status == 201
    path = f"/api/jobs/{job['id']}/events/"
    seqs: list[int] = []
    with alice.events(f"{path}?log_after=0") as stream:
        first = stream.events_until(
            lambda event: event["event"] == "log" and event["data"]["lines"][-1]["seq"] >= 20
        )
    last_id = first[-1]["id"]
    # With logs, each event's id holds both positions: state seq and log seq.
    state_seq, log_seq = (int(part) for part in last_id.split("-"))
    for event in first:
        if event["event"] == "log":
            seqs += [line["seq"] for line in event["data"]["lines"]]
    assert seqs[-1] == log_seq

    with alice.events(path, headers={"Last-Event-ID": last_id}) as stream:
        rest = []
        while (event := stream.next_event()) is not None:
            rest.append(event)
    states = [event["data"]["job"] for event in rest if event["event"] == "job"]
    assert all(state["seq"] > state_seq for state in states)
    assert states[-1]["status"] == "succeeded"
    for event in rest:
        if event["event"] == "log":
            seqs += [line["seq"] for line in event["data"]["lines"]]
    assert seqs == list(range(1, 151))


def test_the_owner_stream_lists_and_follows_every_job_of_the_caller_and_no_other(server):
    alice, mallory = visitor(server), visitor(server)
    earlier = start_timer(alice, steps=1, interval=0)
    with alice.events("/api/jobs/events/") as stream:
        opening = stream.next_event()
        assert opening is not None and opening["event"] == "watching"
        assert earlier["id"] in {state["id"] for state in opening["data"]["jobs"]}
        # Jobs started elsewhere (here: the API) after the stream opened arrive too;
        # another visitor's never do.
        theirs = start_timer(mallory, steps=2, interval=0.05)
        mine = start_timer(alice, steps=2, interval=0.05)
        events = stream.events_until(
            lambda event: is_final(event) and event["data"]["job"]["id"] == mine["id"]
        )
    seen = {state["id"] for state in job_states(events)}
    assert mine["id"] in seen
    assert theirs["id"] not in seen
    assert seen <= {mine["id"], earlier["id"]}


def test_the_owner_stream_with_batches_sends_many_states_an_event_in_order(server):
    alice = visitor(server)
    with alice.events("/api/jobs/events/?batch=1") as stream:
        opening = stream.next_event()
        assert opening is not None and opening["event"] == "watching"
        jobs = [start_timer(alice, steps=8, interval=0.03)["id"] for _ in range(4)]
        states: dict[str, list[dict[str, Any]]] = {job: [] for job in jobs}
        batches = 0
        while any(not states[job] or states[job][-1]["status"] not in TERMINAL for job in jobs):
            event = stream.next_event()
            assert event is not None, "the stream ended first"
            assert event["event"] in ("job", "batch"), event
            frames = event["data"]["frames"] if event["event"] == "batch" else [event["data"]]
            batches += event["event"] == "batch" and len(frames) > 1
            for frame in frames:
                assert frame["type"] == "job", frame
                states[frame["job"]["id"]].append(frame["job"])
    for job in jobs:
        seqs = [state["seq"] for state in states[job]]
        assert seqs == sorted(set(seqs)), seqs
        assert states[job][-1]["status"] == "succeeded"
    # Four jobs reporting every 30 ms, sent in rounds of 0.1 s: several states an event.
    assert batches > 0


def test_strangers_and_bad_requests_get_json_errors(server):
    alice, mallory = visitor(server), visitor(server)
    job = start_timer(alice, steps=20, interval=0.1)
    path = f"/api/jobs/{job['id']}/events/"

    def refused(stream: EventStream, status: int, code: str) -> None:
        assert stream.status == status, stream.json
        assert stream.json["type"] == "error" and stream.json["code"] == code

    # Someone else's job and a job that doesn't exist answer the same.
    with mallory.events(path) as stream:
        refused(stream, 404, "not_found")
    with mallory.events(f"/api/jobs/{uuid.uuid4()}/events/") as stream:
        refused(stream, 404, "not_found")
    with alice.events("/api/jobs/not-a-uuid/events/") as stream:
        refused(stream, 400, "bad_request")
    for bad in ("x", "-1", "1.5", "9" * 40):
        with alice.events(f"{path}?after={bad}") as stream:
            refused(stream, 400, "bad_request")
        with alice.events(path, headers={"Last-Event-ID": bad}) as stream:
            refused(stream, 400, "bad_request")
    # No session at all: nothing to stream.
    nobody = Visitor(server)
    with nobody.events("/api/jobs/events/") as stream:
        refused(stream, 403, "forbidden")
    with nobody.events(path) as stream:
        refused(stream, 404, "not_found")
    status, body = alice.post_json(path)
    assert status == 405 and body["code"] == "bad_request"
    # None of it touched the job.
    status, cancelled = alice.post_json(f"/api/jobs/{job['id']}/cancel/")
    assert status in (200, 202) and cancelled["status"] in ("running", "cancelled")


async def test_a_stream_whose_client_went_away_leaves_the_hub(runtime):
    """A closed EventSource must not keep its outbox subscribed (a leak per reload)."""
    client = AsyncClient()
    assert (await client.get("/progress/")).status_code == 200
    session_key = client.cookies["sessionid"].value
    job = await actions.start_job(session_owner(session_key), "tests.sync_steps", {"steps": 10_000})
    job_id = str(job.id)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/api/jobs/{job_id}/events/",
        "raw_path": f"/api/jobs/{job_id}/events/".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"cookie", f"sessionid={session_key}".encode())],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    stream = ApplicationCommunicator(ASGIHandler(), scope)
    await stream.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await stream.receive_output(5)
    assert start["type"] == "http.response.start" and start["status"] == 200
    body = b""
    while b"event: job" not in body:
        body += (await stream.receive_output(5))["body"]
    assert len(runtime.hub._job_watchers[job_id]) == 1

    await stream.send_input({"type": "http.disconnect"})
    async with asyncio.timeout(5):
        while job_id in runtime.hub._job_watchers:
            await asyncio.sleep(0.02)
    await stream.wait(5)
    await actions.cancel_job(session_owner(session_key), job_id)
