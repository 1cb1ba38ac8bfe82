"""The demo site under each ASGI server the docs name besides Daphne: Uvicorn,
Hypercorn and Granian, each a real process on a free port.

What a browser does, on each: load a page (session and CSRF cookies), start a
job over the JSON API, follow it over a real WebSocket to its end, and fetch a
static file. Daphne is covered at length by test_e2e.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import liveprogress

from .servers import (
    DaphneServer,
    GranianServer,
    HypercornServer,
    UvicornServer,
    Visitor,
    frames_until,
    is_state,
    is_terminal,
    send_json,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=[UvicornServer, HypercornServer, GranianServer])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    kind: type[DaphneServer] = request.param
    db = tmp_path_factory.mktemp(kind.name) / "db.sqlite3"
    with kind(db) as running:
        yield running


async def test_a_job_started_over_http_is_followed_over_the_socket_to_its_end(server):
    visitor = Visitor(server)
    assert visitor.visit("/jobs/") == 200
    assert visitor.cookie("sessionid") and visitor.cookie("csrftoken")

    body = {"kind": "demo.timer", "params": {"steps": 4, "interval": 0.1}}
    status, started = visitor.post_json(
        "/api/jobs/", body, headers={"X-CSRFToken": visitor.cookie("csrftoken") or ""}
    )
    assert status == 201, (status, visitor.last_text)
    job_id = started["id"]

    async with visitor.ws() as ws:
        await send_json(ws, {"action": "subscribe", "job": job_id})
        frames = await frames_until(
            ws, lambda f: is_terminal(f, job_id) or f.get("type") == "error", timeout=15
        )

    assert all(is_state(frame, job_id) for frame in frames), frames
    seqs = [frame["job"]["seq"] for frame in frames]
    assert seqs == sorted(seqs), seqs
    final = frames[-1]["job"]
    assert final["status"] == "succeeded", final
    assert (final["current"], final["total"], final["percent"]) == (4, 4, 100.0)
    assert final["result"] == {"steps": 4}

    assert visitor.get(f"/api/jobs/{job_id}/") == (200, final)


def test_static_files_are_served(server):
    visitor = Visitor(server)

    status, _ = visitor.get("/static/liveprogress/liveprogress.css")

    assert status == 200
    assert visitor.last_headers["Content-Type"].startswith("text/css")
    stylesheet = Path(liveprogress.__file__).parent / "static/liveprogress/liveprogress.css"
    assert visitor.last_text == stylesheet.read_text("utf-8")
