"""The staff view (staff.py): every job live for users with
``liveprogress.view_all_jobs``, anyone's cancel for those with
``liveprogress.cancel_any_job`` too, nothing for anyone else.

A real Daphne with real logins: the staff feed carries two owners' jobs live and
new jobs as they start; a staff cancel reaches the owner's socket and is recorded
(who, when); a watcher without the cancel permission gets 403; everyone else
meets a page that does not exist (404); filters select; a staff member who loses
the permission loses the feed within SESSION_CHECK_INTERVAL.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import AsyncClient

from liveprogress import actions
from liveprogress.models import Job, Status
from tests.accounts import PASSWORD, manage, sign_in
from tests.servers import (
    DaphneServer,
    EventStream,
    Visitor,
    frames_until,
    is_state,
    is_terminal,
    send_json,
    start_timer,
)

pytestmark = pytest.mark.integration

STAFF = "liveprogress.view_all_jobs"
CANCEL = "liveprogress.cancel_any_job"
CHECK_INTERVAL = 1.0
RECONCILE = 0.5


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    """The server and its users' pks: root (watch and cancel), watcher (watch
    only), alice and bob (neither)."""
    db = tmp_path_factory.mktemp("staff") / "staff.sqlite3"
    env = {"DJANGO_SETTINGS_MODULE": "tests.staff_settings"}
    settings = {
        "SESSION_CHECK_INTERVAL": CHECK_INTERVAL,
        "RECONCILE_INTERVAL": RECONCILE,
        "JOB_MODULES": ["tests.jobs"],
    }
    with DaphneServer(db, env, liveprogress=settings) as server:
        users = {
            "root": {"password": PASSWORD, "permissions": [STAFF, CANCEL]},
            "watcher": {"password": PASSWORD, "permissions": [STAFF]},
            "alice": {"password": PASSWORD},
            "bob": {"password": PASSWORD},
        }
        yield server, manage(server, {"users": users})


def signed_in(server: DaphneServer, name: str, language: str | None = None) -> Visitor:
    visitor = Visitor(server, language=language)
    sign_in(visitor, name)
    return visitor


def staff_events(who: Visitor, query: str = "") -> EventStream:
    stream = who.events("/api/jobs/staff/events/" + query)
    assert stream.status == 200, stream.json
    return stream


def rows_of(event: dict[str, Any]) -> dict[str, dict[str, Any]]:
    assert event["event"] == "staff_jobs", event
    return {row["job"]["id"]: row for row in event["data"]["jobs"]}


async def test_staff_watch_two_owners_jobs_live_and_cancel_one(site):
    server, pks = site
    root, alice, bob = [
        await asyncio.to_thread(signed_in, server, name) for name in ("root", "alice", "bob")
    ]
    alice_job = await asyncio.to_thread(start_timer, alice, 2000, 0.05)
    bob_job = await asyncio.to_thread(start_timer, bob, 2000, 0.05)
    alice_ws = await alice.ws()
    await send_json(alice_ws, {"action": "subscribe", "job": alice_job["id"]})
    await frames_until(alice_ws, lambda frame: is_state(frame, alice_job["id"]))

    stream = await asyncio.to_thread(staff_events, root, "?status=active")
    listed = rows_of(await asyncio.to_thread(stream.next_event))
    assert listed[alice_job["id"]]["owner"] == f"user:{pks['alice']}"
    assert listed[bob_job["id"]]["owner"] == f"user:{pks['bob']}"
    # Both jobs live: newer states of each arrive on the feed.
    newer: dict[str, int] = {}
    seen = {job_id: row["job"]["seq"] for job_id, row in listed.items()}

    def live_states() -> None:
        while len(newer) < 2:
            event = stream.next_event()
            assert event is not None
            if event["event"] == "job":
                state = event["data"]["job"]
                if (
                    state["id"] in (alice_job["id"], bob_job["id"])
                    and state["seq"] > seen[state["id"]]
                ):
                    newer[state["id"]] = state["seq"]

    await asyncio.wait_for(asyncio.to_thread(live_states), 10)

    # A job started now appears on the feed within RECONCILE_INTERVAL.
    started_at = time.monotonic()
    later = await asyncio.to_thread(start_timer, bob, 2000, 0.05)

    def appears() -> dict[str, Any]:
        while True:
            event = stream.next_event()
            assert event is not None
            if event["event"] == "staff_jobs" and later["id"] in rows_of(event):
                return rows_of(event)[later["id"]]

    row = await asyncio.wait_for(asyncio.to_thread(appears), 10)
    assert row["owner"] == f"user:{pks['bob']}"
    assert time.monotonic() - started_at < RECONCILE + 3

    # root cancels alice's job: alice's socket sees it end, the row says who and when.
    status, cancelled = await asyncio.to_thread(
        root.post_json, f"/api/jobs/staff/{alice_job['id']}/cancel/"
    )
    assert status in (200, 202), cancelled
    assert cancelled["cancelled_by"] == f"staff:{pks['root']}" and cancelled["cancelled_at"]
    frames = await frames_until(alice_ws, lambda frame: is_terminal(frame, alice_job["id"]))
    assert frames[-1]["job"]["status"] == "cancelled"
    status, body = await asyncio.to_thread(root.get, "/api/jobs/staff/?owner=alice")
    assert status == 200
    row = {row["job"]["id"]: row for row in body["jobs"]}[alice_job["id"]]
    assert row["job"]["status"] == "cancelled" and row["cancelled_by"] == f"staff:{pks['root']}"

    # bob cancels his own: recorded as the owner's.
    status, _ = await asyncio.to_thread(bob.post_json, f"/api/jobs/{bob_job['id']}/cancel/")
    assert status in (200, 202)

    def bobs_cancel_recorded() -> bool:
        _, body = root.get("/api/jobs/staff/?owner=bob&status=cancelled")
        return any(
            row["job"]["id"] == bob_job["id"] and row["cancelled_by"] == "owner"
            for row in body["jobs"]
        )

    deadline = time.monotonic() + 10
    while not await asyncio.to_thread(bobs_cancel_recorded):
        assert time.monotonic() < deadline, "bob's cancel never showed"
        await asyncio.sleep(0.1)
    await alice_ws.close()
    stream.close()
    await asyncio.to_thread(bob.post_json, f"/api/jobs/{later['id']}/cancel/")


def test_a_watcher_without_the_cancel_permission_is_refused_with_403(site):
    server, _ = site
    alice, watcher = signed_in(server, "alice"), signed_in(server, "watcher")
    job = start_timer(alice, 2000, 0.05)
    status, body = watcher.get("/api/jobs/staff/")
    assert status == 200 and job["id"] in {row["job"]["id"] for row in body["jobs"]}
    status, body = watcher.post_json(f"/api/jobs/staff/{job['id']}/cancel/")
    assert status == 403 and body["code"] == "forbidden"
    status, state = alice.get(f"/api/jobs/{job['id']}/")
    assert state["status"] in ("queued", "running") and not state["cancel_requested"]
    # The page shows no Cancel button to them.
    page = watcher.request("GET", "/jobs/staff/", headers={"Accept": "text/html"})
    assert page[0] == 200 and 'class="lp-staff-cancel"' not in watcher.last_text
    alice.post_json(f"/api/jobs/{job['id']}/cancel/")


def test_everyone_else_meets_pages_that_do_not_exist(site):
    server, _ = site
    alice = signed_in(server, "alice")
    anonymous = Visitor(server)
    anonymous.visit()
    bob = signed_in(server, "bob")
    bobs = start_timer(bob, 2000, 0.05)
    for who in (alice, anonymous):
        assert who.request("GET", "/jobs/staff/", headers={"Accept": "text/html"})[0] == 404
        status, body = who.get("/api/jobs/staff/")
        assert status == 404 and body["code"] == "not_found"
        with who.events("/api/jobs/staff/events/") as stream:
            assert stream.status == 404 and stream.json["code"] == "not_found"
        status, body = who.post_json(f"/api/jobs/staff/{bobs['id']}/cancel/")
        assert status == 404 and body["code"] == "not_found"
        # Their own rules are unchanged: bob's job is no job of theirs.
        status, body = who.post_json(f"/api/jobs/{bobs['id']}/cancel/")
        assert status == 404 and body["code"] == "not_found"
    assert bob.get(f"/api/jobs/{bobs['id']}/")[1]["status"] in ("queued", "running")
    bob.post_json(f"/api/jobs/{bobs['id']}/cancel/")


def test_the_filters_select_by_kind_status_and_owner(site):
    server, pks = site
    root, alice, bob = (signed_in(server, name) for name in ("root", "alice", "bob"))
    quick = alice.post_json("/api/jobs/", {"kind": "tests.sync_steps", "params": {"steps": 1}})[1]
    slow = start_timer(bob, 2000, 0.05)

    def ids(query: str) -> set[str]:
        status, body = root.get("/api/jobs/staff/" + query)
        assert status == 200, body
        return {row["job"]["id"] for row in body["jobs"]}

    assert {quick["id"], slow["id"]} <= ids("")
    assert slow["id"] in ids("?kind=demo.timer") and quick["id"] not in ids("?kind=demo.timer")
    assert quick["id"] not in ids("?owner=bob") and slow["id"] in ids("?owner=bob")
    assert slow["id"] in ids(f"?owner=user:{pks['bob']}") and not ids("?owner=nobody")
    assert slow["id"] in ids("?status=active") and slow["id"] not in ids("?status=succeeded")
    assert ids("?limit=1") and len(ids("?limit=1")) == 1
    for query, field in (
        ("?status=sleeping", "status"),
        ("?limit=0", "limit"),
        ("?kind=" + "k" * 101, "kind"),
    ):
        status, body = root.get("/api/jobs/staff/" + query)
        assert status == 400 and body["field"] == field, body
    # The page takes the same query string, and shows the filtered rows.
    status, _ = root.request(
        "GET", "/jobs/staff/?kind=demo.timer&owner=bob", headers={"Accept": "text/html"}
    )
    assert status == 200 and slow["id"] in root.last_text and quick["id"] not in root.last_text
    bob.post_json(f"/api/jobs/{slow['id']}/cancel/")


async def test_a_staff_member_who_loses_the_permission_loses_the_feed(site):
    server, _ = site
    users = {"temp": {"password": PASSWORD, "permissions": [STAFF]}}
    await asyncio.to_thread(manage, server, {"users": users})
    temp = await asyncio.to_thread(signed_in, server, "temp")
    stream = await asyncio.to_thread(staff_events, temp)
    assert (await asyncio.to_thread(stream.next_event))["event"] == "staff_jobs"
    users["temp"]["permissions"] = []
    changed_at = time.monotonic()
    await asyncio.to_thread(manage, server, {"users": users})

    def last_event() -> str:
        name = ""
        while (event := stream.next_event()) is not None:
            name = event["event"]
        return name

    assert (
        await asyncio.wait_for(asyncio.to_thread(last_event), CHECK_INTERVAL + 4) == "session_ended"
    )
    assert time.monotonic() - changed_at < CHECK_INTERVAL + 4
    stream.close()
    status, _ = await asyncio.to_thread(temp.get, "/api/jobs/staff/")
    assert status == 404


async def test_the_admin_shows_and_records_a_staff_cancel(runtime):
    admin = await get_user_model().objects.acreate_superuser("root", "root@example.com")
    client = AsyncClient()
    await client.aforce_login(admin)
    running = await actions.start_job("session:a", "tests.ignores_cancel_checks", {"steps": 10**6})
    await client.post(
        "/admin/liveprogress/job/",
        {"action": "cancel_jobs", "_selected_action": [str(running.id)]},
    )
    job = await Job.objects.aget(pk=running.pk)
    assert job.cancelled_by == f"staff:{admin.pk}" and job.cancelled_at is not None
    listing = (await client.get("/admin/liveprogress/job/")).content.decode()
    assert "column-cancelled_by" in listing and f"staff:{admin.pk}" in listing
    # The first cancel's record stays.
    await actions.cancel_job("session:a", str(running.id))
    assert (await Job.objects.aget(pk=running.pk)).cancelled_by == f"staff:{admin.pk}"
    deadline = time.monotonic() + 10
    while (await Job.objects.aget(pk=running.pk)).status != Status.CANCELLED:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
