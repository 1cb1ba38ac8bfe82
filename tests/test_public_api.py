"""The public Python API: start a job from the site's own code, sync or async, and
find or cancel it as its owner."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.test import AsyncClient, Client

import liveprogress
from liveprogress import JobNotFound, acancel_job, aget_job, aowner_of, owner_of
from liveprogress.bridge import call
from liveprogress.exceptions import BadRequest
from liveprogress.models import Job, Status
from liveprogress.runners import WSGI_REASON
from liveprogress.runtime import stop_runtime
from proyecto.demo.jobs import timer
from tests import jobs


def test_the_package_exports_the_public_api():
    for name in liveprogress.__all__:
        assert getattr(liveprogress, name) is not None
    assert isinstance(timer, liveprogress.JobDefinition)
    assert timer.name == "demo.timer"
    with pytest.raises(AttributeError):
        liveprogress.nothing_here  # noqa: B018


@pytest.mark.urls("tests.public_views")
async def test_an_async_view_starts_a_job_its_visitor_owns(runtime):
    client = AsyncClient()
    body = (await client.get("/start-async/")).json()
    # The visitor had no session: one was made, and it owns the job.
    session_key = client.cookies["sessionid"].value
    assert body["owner"] == f"session:{session_key}"
    job = await Job.objects.aget(pk=body["id"])
    assert job.owner == body["owner"]
    # Its own API answers the visitor, and the job runs to its end.
    async with asyncio.timeout(10):
        while (state := (await client.get(f"/api/jobs/{body['id']}/")).json())["status"] in (
            "queued",
            "running",
        ):
            await asyncio.sleep(0.05)
    assert state["status"] == "succeeded"
    assert (await client.get(f"/show/{body['id']}/")).json()["status"] == "succeeded"
    # Another visitor is told there is no such job.
    stranger = AsyncClient()
    assert (await stranger.get(f"/api/jobs/{body['id']}/")).status_code == 404
    with pytest.raises(JobNotFound):
        await aget_job("session:" + "0" * 32, body["id"])


@pytest.mark.urls("tests.public_views")
async def test_a_sync_view_starts_and_reads_a_job_of_its_logged_in_user(runtime):
    user = await get_user_model().objects.acreate_user("ana")
    client = AsyncClient()
    await client.aforce_login(user)
    body = (await client.get("/start-sync/")).json()
    assert body["owner"] == f"user:{user.pk}"
    assert body["state"]["kind"] == "demo.timer"
    assert body["again"]["id"] == body["id"] and body["again"]["seq"] >= body["state"]["seq"]
    handle = await aget_job(user, body["id"])
    assert (await handle.await_end(timeout=10))["status"] == "succeeded"


@pytest.mark.urls("tests.public_views")
def test_a_job_started_over_wsgi_fails_saying_why(db, fast):
    """Django's sync test Client is WSGI: an in-process job could not outlive the
    request, so it ends failed with a reason that names the fix, at once."""
    response = Client().get("/start-async/")
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Status.FAILED
    assert job.error == WSGI_REASON
    assert "daphne" in job.error and "liveprogress.testing" in job.error


def test_the_api_s_start_over_wsgi_fails_saying_why(db, fast):
    client = Client()
    client.get("/jobs/")
    response = client.post(
        "/api/jobs/",
        {"kind": "demo.timer", "params": {"steps": 1}},
        content_type="application/json",
        headers={"X-CSRFToken": client.cookies["csrftoken"].value},
    )
    assert response.status_code == 201
    assert (response.json()["status"], response.json()["error"]) == ("failed", WSGI_REASON)


async def test_owners_a_site_names_itself(runtime):
    user = await get_user_model().objects.acreate_user("bea")
    assert await aowner_of(user) == f"user:{user.pk}"
    assert owner_of("system:nightly") == "system:nightly"
    for bad in ("nightly", "system:", "system:has space", "X:upper", "s:" + "x" * 99):
        with pytest.raises(ValueError, match="prefix:name"):
            owner_of(bad)
    with pytest.raises(ValueError, match="anonymous user owns nothing"):
        owner_of(AnonymousUser())
    with pytest.raises(TypeError, match="not int"):
        owner_of(42)

    handle = await timer.astart("system:nightly", steps=1, interval=0)
    assert handle.owner == "system:nightly"
    final = await handle.await_end(timeout=10)
    assert final["status"] == "succeeded" and handle.result == {"steps": 1}
    assert (await aget_job("system:nightly", handle.id)).state == final
    with pytest.raises(JobNotFound):
        await aget_job(user, handle.id)
    # An id that is no job's (or no id at all) is no job of anyone's.
    with pytest.raises(JobNotFound):
        await aget_job("system:nightly", "not-a-uuid")
    # A UUID is a job id as well as its text (it is what <uuid:...> routes give).
    assert (await aget_job("system:nightly", uuid.UUID(handle.id))).id == handle.id


async def test_the_owner_cancels_a_running_job_and_a_stranger_can_t(runtime):
    handle = await jobs.cooperative.astart("system:ops", steps=10**7)
    async with asyncio.timeout(15):
        while (await handle.arefresh()).status == "queued":
            await asyncio.sleep(0.02)
    assert handle.status == "running"
    with pytest.raises(JobNotFound):
        await acancel_job("system:other", handle.id)
    assert (await handle.arefresh()).status == "running"
    cancelled = await acancel_job("system:ops", handle.id)
    assert cancelled.id == handle.id
    assert (await handle.await_end(timeout=15))["status"] == "cancelled"


async def test_params_are_checked_and_the_caps_apply(runtime, settings):
    with pytest.raises(BadRequest, match="steps"):
        await timer.astart("system:x", steps=0)
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "MAX_ACTIVE_PER_OWNER": 1}
    first = await timer.astart("system:x", steps=100, interval=1)
    with pytest.raises(liveprogress.LiveProgressError, match="already have 1 job"):
        await timer.astart("system:x", steps=1, interval=0)
    await first.acancel()


async def test_await_end_gives_up_after_its_timeout(runtime):
    handle = await timer.astart("system:x", steps=100, interval=1)
    with pytest.raises(TimeoutError):
        await handle.await_end(timeout=0.2)
    await handle.acancel()


def test_a_management_command_starts_a_job_and_waits_for_it(transactional_db, fast):
    """No server loop here: the job runs on liveprogress's own loop in this process."""
    handle = timer.start("system:nightly", steps=2, interval=0.01)
    try:
        assert handle.wait(timeout=10)["status"] == "succeeded"
        assert liveprogress.get_job("system:nightly", handle.id).status == "succeeded"
        again = timer.start("system:nightly", steps=1000, interval=1)
        assert liveprogress.cancel_job("system:nightly", again.id).id == again.id
        assert again.wait(timeout=10)["status"] == "cancelled"
    finally:
        call(stop_runtime)


async def test_the_sync_api_refuses_async_code(runtime):
    with pytest.raises(RuntimeError, match="astart"):
        timer.start("system:x")


def test_calling_a_definition_calls_the_function():
    """A plain call, no job: the function with whatever progress it is given."""

    class Counter:
        def start(self, total=None, message=None):
            self.total, self.done = total, 0

        def advance(self, n=1, message=None):
            self.done += n

    counter = Counter()
    assert jobs.sync_steps(counter, steps=3, delay=0) == {"done": 3}
    assert (counter.total, counter.done) == (3, 3)


@pytest.mark.urls("tests.public_views")
async def test_looking_a_job_up_makes_no_session_for_a_visitor_without_one(runtime):
    from django.contrib.sessions.models import Session

    job = await timer.astart("system:x", steps=1, interval=0)
    client = AsyncClient()
    assert (await client.get(f"/show/{job.id}/")).status_code == 404
    assert "sessionid" not in client.cookies
    assert not await Session.objects.aexists()
