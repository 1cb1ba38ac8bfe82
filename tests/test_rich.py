"""Rich progress: stages, loops, log lines, ETA and rate, files, child jobs.

Progress itself (memory only), then jobs run by the in-process runner, watched
through the real consumer and the JSON API.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient

from liveprogress import actions, files
from liveprogress.eta import RateWindow
from liveprogress.models import Job, JobLog, Status
from liveprogress.owner import session_owner
from liveprogress.progress import LOG_LINE_MAX, Progress, ProgressSnapshot
from liveprogress.publish import LOG_MESSAGE, receive_locally
from proyecto.asgi import application

# -- Progress, in memory ------------------------------------------------------------


def test_stages_make_a_weighted_percent_and_say_which_runs():
    progress = Progress()
    progress.plan({"Validate": 1, "Import": 8, "Summarise": 1})
    snapshot = progress.snapshot()
    assert [s["status"] for s in snapshot.stages] == ["pending"] * 3
    assert snapshot.fraction == 0

    with progress.stage("Validate"):
        progress.start(total=4)
        progress.advance(2)
        assert progress.snapshot().fraction == pytest.approx(0.05)  # half of 1/10
    snapshot = progress.snapshot()
    assert [s["status"] for s in snapshot.stages] == ["done", "pending", "pending"]
    assert snapshot.fraction == pytest.approx(0.1)

    progress.stage("Import")
    # A stage's counter starts at zero.
    assert (progress.snapshot().current, progress.snapshot().total) == (0, None)
    progress.start(total=100)
    progress.advance(50)
    snapshot = progress.snapshot()
    assert snapshot.fraction == pytest.approx(0.1 + 0.4)
    assert snapshot.stages[1] == {
        "name": "Import",
        "weight": 8.0,
        "status": "running",
        "fraction": 0.5,
    }
    # Entering the next stage ends this one; an unplanned stage is appended.
    progress.stage("Summarise")
    progress.stage("Extra", weight=10)
    snapshot = progress.snapshot()
    assert [s["status"] for s in snapshot.stages] == ["done", "done", "done", "running"]
    assert snapshot.fraction == pytest.approx(10 / 20)
    with pytest.raises(ValueError, match="weight"):
        progress.stage("Bad", weight=-1)


def test_a_failing_stage_block_stays_the_running_stage():
    progress = Progress()
    with pytest.raises(RuntimeError), progress.stage("Parse"):
        raise RuntimeError("broken")
    assert progress.snapshot().stages[0]["status"] == "running"


def test_track_counts_items_and_nested_loops_count_as_a_share_of_the_outer_item():
    progress = Progress()
    seen = []
    for item in progress.track(["a", "b", "c", "d"]):
        seen.append(item)
        snapshot = progress.snapshot()
        # Counted when the loop asks for the next one: the current item isn't done.
        assert (snapshot.current, snapshot.total) == (len(seen) - 1, 4)
        if item == "b":
            for inner in progress.track(range(2)):
                nested = progress.snapshot()
                # The innermost counter shows; the share includes the outer one.
                assert (nested.current, nested.total) == (inner, 2)
                assert nested.fraction == pytest.approx((1 + inner / 2) / 4)
    snapshot = progress.snapshot()
    assert seen == ["a", "b", "c", "d"]
    assert (snapshot.current, snapshot.total, snapshot.fraction) == (4, 4, None)
    # The loop is a checkpoint: a next attempt would skip its four items.
    assert progress.snapshot() == ProgressSnapshot(
        4, 4, "", checkpoint={"loops": [4], "data": None, "current": 4}
    )

    # Without a length the total is unknown (an indeterminate bar) unless given.
    list(progress.track(iter(range(3))))
    assert (progress.snapshot().current, progress.snapshot().total) == (3, None)
    list(progress.track(iter(range(3)), total=3))
    assert progress.snapshot().total == 3


def test_log_lines_have_their_own_sequence_and_a_bounded_buffer():
    progress = Progress(log_seq=7, log_limit=3)
    for number in range(5):
        progress.log(f"line {number}", level="warning" if number % 2 else "info")
    lines, dropped_through = progress.take_logs()
    # The newest 3 are kept; the 2 oldest dropped, and the reader is told through which seq.
    assert [line.seq for line in lines] == [10, 11, 12]
    assert [line.text for line in lines] == ["line 2", "line 3", "line 4"]
    assert [line.level for line in lines] == ["info", "warning", "info"]
    assert dropped_through == 9
    assert progress.take_logs() == ([], 0)
    progress.log("x" * (LOG_LINE_MAX + 50))
    (long,), _ = progress.take_logs()
    assert len(long.text) == LOG_LINE_MAX and long.text.endswith("…")
    with pytest.raises(ValueError, match="level"):
        progress.log("text", level="loud")


def test_files_and_children_need_a_job():
    progress = Progress()
    with pytest.raises(RuntimeError, match="no job"):
        progress.attach("a.csv", "x")


# -- ETA and rate ---------------------------------------------------------------------


def test_eta_and_rate_follow_the_recent_pace_not_the_mean_since_start(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("liveprogress.eta.time.monotonic", lambda: clock[0])
    window = RateWindow()

    def at(seconds: float, current: int) -> tuple[float | None, float | None]:
        clock[0] = seconds
        return window.estimate(ProgressSnapshot(current, 1000, ""))

    assert at(0, 0) == (None, None)  # one sample: nothing known yet
    # Slow for 60 s: 1 unit a second.
    for second in range(1, 61):
        at(second, second)
    eta, rate = at(61, 61)
    assert rate == pytest.approx(1.0)
    assert eta == pytest.approx(939, rel=0.01)
    # Then 10 units a second: within the window the ETA follows the new pace,
    # where the mean since the start would still say ~100 s... no: 400 s.
    for tick in range(1, 21):
        eta, rate = at(61 + tick, 61 + 10 * tick)
    assert rate == pytest.approx(10.0)
    assert eta == pytest.approx((1000 - 261) / 10, rel=0.01)
    # A new total (another stage, a restart) starts a new window.
    clock[0] = 100
    assert window.estimate(ProgressSnapshot(0, 5, "")) == (None, None)
    # Unknown total: a rate, no ETA.
    clock[0] = 101
    window.estimate(ProgressSnapshot(0, None, ""))
    clock[0] = 102
    assert window.estimate(ProgressSnapshot(4, None, "")) == (None, 4.0)


# -- jobs that use them -----------------------------------------------------------------


async def visitor() -> tuple[AsyncClient, str]:
    client = AsyncClient()
    assert (await client.get("/jobs/")).status_code == 200
    return client, session_owner(client.cookies["sessionid"].value)


async def ended(job_id: Any, timeout: float = 10) -> Job:
    async with asyncio.timeout(timeout):
        while (job := await Job.objects.aget(pk=job_id)).is_active:
            await asyncio.sleep(0.02)
    return job


async def test_a_rich_job_ends_with_its_stages_logs_and_file_stored(runtime):
    client, owner = await visitor()
    job = await ended((await actions.start_job(owner, "tests.rich", {"rows": 10})).id)
    assert job.status == Status.SUCCEEDED
    assert job.percent == 100
    assert [(s["name"], s["status"]) for s in job.stages] == [
        ("Read", "done"),
        ("Work", "done"),
        ("Write", "done"),
    ]
    lines = [line async for line in JobLog.objects.filter(job=job).order_by("seq")]
    assert [line.seq for line in lines] == [1, 2, 3, 4]
    assert [line.text for line in lines] == [
        "reading",
        "row 5 is <bad> & skipped",
        "row 10 is <bad> & skipped",
        "written",
    ]
    assert job.log_seq == 4 and job.log_dropped == 0

    state = (await client.get(f"/api/jobs/{job.id}/")).json()
    assert state["log_seq"] == 4
    assert state["files"] == [
        {
            "name": "out.csv",
            "size": 8,
            "content_type": "text/csv",
            "url": f"/api/jobs/{job.id}/files/out.csv",
        }
    ]
    assert state["expires_at"] == pytest.approx(job.finished_at.timestamp() + 7 * 24 * 3600)
    download = await client.get(state["files"][0]["url"])
    assert download.status_code == 200
    assert b"".join([chunk async for chunk in download.streaming_content]) == b"a,b\n1,2\n"
    assert download["Content-Disposition"] == 'attachment; filename="out.csv"'
    logs = (await client.get(f"/api/jobs/{job.id}/logs/?after=2")).json()
    assert [line["seq"] for line in logs["lines"]] == [3, 4]
    assert logs["log_seq"] == 4 and logs["dropped_through"] == 0

    # Nobody else can download it or read the log; an unknown file is 404 too.
    stranger = AsyncClient()
    await stranger.get("/jobs/")
    for path in (state["files"][0]["url"], f"/api/jobs/{job.id}/logs/"):
        refused = await stranger.get(path)
        assert refused.status_code == 404 and refused.json()["code"] == "not_found"
    missing = await client.get(f"/api/jobs/{job.id}/files/other.csv")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    bad = await client.get(f"/api/jobs/{job.id}/logs/?after=x")
    assert bad.status_code == 400 and bad.json()["field"] == "after"


async def test_file_names_are_cleaned_and_kept_inside_the_job_s_folder(runtime):
    _client, owner = await visitor()
    job = await actions.start_job(owner, "tests.sync_steps", {"steps": 1})
    entry = await sync_to_async(files.store)(job, "../../etc/pass wd.csv", b"x", "text/csv")
    assert entry["name"] == "pass_wd.csv"
    assert files.storage().exists(f"liveprogress/{job.id}/pass_wd.csv")
    for bad in ("", ".hidden", "x" * 200):
        with pytest.raises(ValueError):
            files.store(job, bad, b"x", "text/plain")


async def test_logs_past_the_limit_drop_the_oldest_and_readers_are_told(runtime, settings):
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "LOG_LIMIT": 10}
    client, owner = await visitor()
    job = await ended((await actions.start_job(owner, "tests.logger", {"lines": 35})).id)
    stored = [line.seq async for line in JobLog.objects.filter(job=job).order_by("seq")]
    assert stored == list(range(26, 36))
    assert (job.log_seq, job.log_dropped) == (35, 25)
    body = (await client.get(f"/api/jobs/{job.id}/logs/")).json()
    assert [line["text"] for line in body["lines"]] == [f"line {n}" for n in range(26, 36)]
    assert body["dropped_through"] == 25
    # A reader that already has up to 30 misses nothing, and isn't told of a gap.
    body = (await client.get(f"/api/jobs/{job.id}/logs/?after=30")).json()
    assert [line["seq"] for line in body["lines"]] == [31, 32, 33, 34, 35]
    assert body["dropped_through"] == 0


async def socket(client: AsyncClient) -> WebsocketCommunicator:
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    communicator = WebsocketCommunicator(
        application,
        "/ws/progress/",
        headers=[(b"cookie", cookie), (b"origin", b"http://localhost"), (b"host", b"localhost")],
    )
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def frames_until_final(ws: WebsocketCommunicator, job_id: str) -> list[dict[str, Any]]:
    frames = []
    async with asyncio.timeout(15):
        while True:
            frame = json.loads(await ws.receive_from(timeout=10))
            frames.append(frame)
            if frame["type"] == "job" and frame["job"]["status"] not in ("queued", "running"):
                # Log lines stored before it may still be on their way.
                while not await ws.receive_nothing(timeout=0.3):
                    frames.append(json.loads(await ws.receive_from(timeout=1)))
                return frames


async def test_a_reconnect_with_log_after_gets_every_line_once_no_gap(runtime):
    """Subscribe, drop the socket mid-job, resubscribe with the last line held:
    together the two sockets show lines 1..N, each exactly once."""
    client, owner = await visitor()
    job = await actions.start_job(owner, "tests.logger", {"lines": 120, "interval": 0.005})
    job_id = str(job.id)
    first = await socket(client)
    await first.send_json_to({"action": "subscribe", "job": job_id, "log_after": 0})
    got: list[int] = []
    async with asyncio.timeout(10):
        while len(got) < 20:
            frame = json.loads(await first.receive_from(timeout=5))
            if frame["type"] == "log":
                assert frame["job"] == job_id
                got += [line["seq"] for line in frame["lines"]]
    await first.disconnect()

    second = await socket(client)
    await second.send_json_to({"action": "subscribe", "job": job_id, "log_after": got[-1]})
    frames = await frames_until_final(second, job_id)
    await second.disconnect()
    for frame in frames:
        if frame["type"] == "log":
            got += [line["seq"] for line in frame["lines"]]
    assert got == list(range(1, 121))
    final = [f for f in frames if f["type"] == "job"][-1]["job"]
    assert final["status"] == "succeeded" and final["log_seq"] == 120


async def test_only_subscribers_that_ask_with_log_after_get_log_lines(runtime):
    client, owner = await visitor()
    running = await actions.start_job(owner, "tests.logger", {"lines": 40, "interval": 0.01})
    quiet = await socket(client)
    await quiet.send_json_to({"action": "subscribe", "job": str(running.id)})
    frames = await frames_until_final(quiet, str(running.id))
    await quiet.disconnect()
    assert {frame["type"] for frame in frames} == {"job"}
    assert frames[-1]["job"]["log_seq"] == 40

    job = await ended((await actions.start_job(owner, "tests.logger", {"lines": 3})).id)
    ws = await socket(client)
    await ws.send_json_to({"action": "subscribe", "job": str(job.id)})
    snapshot = json.loads(await ws.receive_from(timeout=5))
    assert snapshot["type"] == "job" and snapshot["job"]["log_seq"] == 3
    assert await ws.receive_nothing(timeout=0.3)
    await ws.send_json_to({"action": "subscribe", "job": str(job.id), "log_after": 1})
    answers = [json.loads(await ws.receive_from(timeout=5)) for _ in range(2)]
    assert answers[0]["type"] == "subscribed"
    assert answers[1] == {
        "type": "log",
        "job": str(job.id),
        "lines": [
            {"seq": 2, "level": "info", "text": "line 2", "at": answers[1]["lines"][0]["at"]},
            {"seq": 3, "level": "info", "text": "line 3", "at": answers[1]["lines"][1]["at"]},
        ],
    }
    await ws.send_json_to({"action": "subscribe", "job": str(job.id), "log_after": "1"})
    error = json.loads(await ws.receive_from(timeout=5))
    assert error["code"] == "bad_request" and error["field"] == "log_after"
    await ws.disconnect()


async def test_a_parent_reports_its_children_combined_and_its_cancel_cancels_them(runtime):
    _client, owner = await visitor()
    parent = await actions.start_job(owner, "tests.parent", {"children": 2, "steps": 3})
    done = await ended(parent.id)
    assert done.status == Status.SUCCEEDED
    children = [child async for child in Job.objects.filter(parent=done).order_by("created_at")]
    assert len(children) == 2
    assert all(child.status == Status.SUCCEEDED and child.owner == owner for child in children)
    assert [c["id"] for c in done.result] == [str(child.id) for child in children]
    assert done.percent == 100

    # Halfway through, the parent's share is the children's mean.
    parent = await actions.start_job(
        owner, "tests.parent", {"children": 2, "steps": 40, "interval": 0.05}
    )
    async with asyncio.timeout(10):
        while True:
            live = await actions.get_job(owner, str(parent.id))
            kids = [
                await actions.get_job(owner, str(c.id))
                async for c in Job.objects.filter(parent_id=parent.id)
            ]
            if len(kids) == 2 and all((kid.percent or 0) >= 10 for kid in kids) and live.fraction:
                break
            await asyncio.sleep(0.05)
    assert 0 < live.percent < 100
    await actions.cancel_job(owner, str(parent.id))
    assert (await ended(parent.id)).status == Status.CANCELLED
    for kid in kids:
        assert (await ended(kid.id)).status == Status.CANCELLED


async def test_kinds_that_are_not_public_are_unknown_to_clients(runtime):
    client, owner = await visitor()
    token = client.cookies["csrftoken"].value
    response = await client.post(
        "/api/jobs/",
        {
            "kind": "demo.csv_import",
            "params": {"upload": "demo/uploads/" + "0" * 32 + ".csv"},
        },
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert response.status_code == 400
    assert response.json()["field"] == "kind"
    # The error names no kind at all.
    assert response.json()["detail"] == "Unknown job kind 'demo.csv_import'"
    assert not await Job.objects.filter(kind="demo.csv_import").aexists()


async def test_no_log_line_is_lost_when_a_job_ends_while_its_lines_are_being_written(runtime):
    """The publisher may be writing lines when the function returns; the ending
    waits for that publish instead of cancelling it: every line stored is also
    sent live, once."""
    published: dict[str, list[int]] = {}

    def keep(message: dict[str, Any]) -> None:
        if message["type"] == LOG_MESSAGE:
            seqs = [line["seq"] for line in message["lines"]]
            published.setdefault(message["job"], []).extend(seqs)

    stop = receive_locally(keep)
    try:
        _client, owner = await visitor()
        started = [
            await actions.start_job(owner, "tests.logger", {"lines": 6, "interval": 0.0005})
            for _ in range(10)
        ]
        for job in started:
            done = await ended(job.id)
            stored = [line.seq async for line in JobLog.objects.filter(job=done).order_by("seq")]
            assert (done.status, done.log_seq, stored) == (Status.SUCCEEDED, 6, [1, 2, 3, 4, 5, 6])
            assert published[str(job.id)] == [1, 2, 3, 4, 5, 6]
    finally:
        stop()


async def test_an_ended_job_s_stages_say_where_it_ended(runtime):
    _client, owner = await visitor()
    failed = await ended((await actions.start_job(owner, "tests.fails_in_stage")).id)
    assert failed.status == Status.FAILED
    assert [(s["name"], s["status"]) for s in failed.stages] == [
        ("First", "done"),
        ("Second", "failed"),
        ("Third", "pending"),
    ]
    assert failed.percent == pytest.approx(100 / 3, abs=0.01)
    # Success ends the running stage done, whole.
    done = await ended((await actions.start_job(owner, "tests.rich", {"rows": 2})).id)
    assert {s["status"] for s in done.stages} == {"done"} and done.percent == 100
