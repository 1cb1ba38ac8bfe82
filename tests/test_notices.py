"""Notices beyond the tab: the email when a job ends, and webhook calls, each sent
once, retried with backoff, never held up by a receiver that hangs."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import AsyncClient
from django.utils import timezone

from liveprogress import actions
from liveprogress.exceptions import Forbidden
from liveprogress.models import Job, Notice
from liveprogress.notices import Courier
from proyecto.demo.jobs import timer
from tests.conftest import FAST
from tests.receivers import serve
from tests.test_consumers import ask, connect, new_session, until

pytestmark = pytest.mark.asyncio
SECRET = "whsec-test"  # noqa: S105 (a test's)
SITE = "https://example.test"


@pytest.fixture
def receiver():
    served, server = serve(SECRET, hang_seconds=2.0)
    yield served
    server.shutdown()
    server.server_close()


@pytest.fixture
def notice_settings(fast, settings, receiver):
    settings.LIVEPROGRESS = {
        **FAST,
        "EMAIL_NOTICES": True,
        "SITE_URL": SITE,
        "WEBHOOK_TIMEOUT": 0.3,
        "NOTICE_BACKOFF": 0.1,
        "NOTICE_INTERVAL": 0.05,
        "NOTICE_ATTEMPTS": 4,
    }
    mail.outbox = []
    return settings.LIVEPROGRESS


def hooks(settings, webhooks):
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "WEBHOOKS": webhooks}


@pytest.fixture
async def user(notice_settings, runtime):
    return await get_user_model().objects.acreate_user("ana", email="ana@example.test")


async def run(runtime, owner, kind, params, **options):
    job = await actions.start_job(owner, kind, params, **options)
    await asyncio.wait_for(runtime.runner.wait(str(job.id)), 10)
    return job


async def settled(job_id, count=1, timeout=10):
    """The job's notices once ``count`` of them are delivered or given up."""
    async with asyncio.timeout(timeout):
        while True:
            notices = [notice async for notice in Notice.objects.filter(job_id=job_id)]
            if sum(notice.status in ("delivered", "failed") for notice in notices) >= count:
                return notices
            await asyncio.sleep(0.02)


# -- email ------------------------------------------------------------------------


async def test_the_owner_is_emailed_once_in_the_jobs_language(runtime, user):
    job = await run(
        runtime,
        f"user:{user.pk}",
        "demo.timer",
        {"steps": 1, "interval": 0},
        language="en",
        email=True,
    )
    [notice] = await settled(job.pk)
    assert (notice.channel, notice.status, notice.tries) == ("email", "delivered", 1)
    [email] = mail.outbox
    assert email.to == ["ana@example.test"]
    assert email.subject == "“Timed process”: succeeded"
    assert "Your job “Timed process” has ended." in email.body
    assert f"{SITE}/jobs/#job-{job.pk}" in email.body
    await asyncio.sleep(0.3)  # more looks of the courier: still one email
    assert len(mail.outbox) == 1


async def test_a_failed_job_says_its_error_in_spanish(runtime, user):
    job = await run(runtime, f"user:{user.pk}", "tests.fail", {}, language="es", email=True)
    await settled(job.pk)
    [email] = mail.outbox
    assert "fallido" in email.subject
    assert "Falló: boom" in email.body
    assert "Tu trabajo" in email.body


async def test_asked_while_it_runs_and_taken_back(runtime, user):
    owner = f"user:{user.pk}"
    kept = await actions.start_job(owner, "demo.timer", {"steps": 3, "interval": 0.1})
    dropped = await actions.start_job(owner, "demo.timer", {"steps": 3, "interval": 0.1})
    assert await actions.ask_email(owner, str(kept.id), True) is True
    assert await actions.ask_email(owner, str(dropped.id), True) is True
    assert await actions.ask_email(owner, str(dropped.id), False) is False
    assert await actions.emailed(owner, str(kept.id))
    assert not await actions.emailed(owner, str(dropped.id))
    for job in (kept, dropped):
        await asyncio.wait_for(runtime.runner.wait(str(job.id)), 10)
    await settled(kept.pk)
    assert [email.to for email in mail.outbox] == [["ana@example.test"]]
    assert not await Notice.objects.filter(job_id=dropped.pk).aexists()


async def test_the_python_api_takes_notify(runtime, user):
    handle = await timer.astart(user, notify=True, steps=1, interval=0)
    assert (await Job.objects.aget(pk=handle.id)).notify_email == "ana@example.test"
    with pytest.raises(Forbidden, match="Sign in"):
        await timer.astart("session:nobody", notify=True, steps=1, interval=0)


async def test_who_may_not_be_emailed(runtime, user, settings):
    nameless = await get_user_model().objects.acreate_user("bo")
    with pytest.raises(Forbidden, match="no email address"):
        await actions.start_job(f"user:{nameless.pk}", "demo.timer", {}, email=True)
    with pytest.raises(Forbidden, match="Sign in"):
        await actions.start_job("system:nightly", "demo.timer", {}, email=True)
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "EMAIL_NOTICES": False}
    with pytest.raises(Forbidden, match="sends no email"):
        await actions.start_job(f"user:{user.pk}", "demo.timer", {}, email=True)
    # Nothing was created by a refused start.
    assert not await Job.objects.filter(
        owner__in=[f"user:{nameless.pk}", "system:nightly"]
    ).aexists()


async def test_exactly_once_however_many_processes_look(runtime, user):
    """Ten ended jobs owe an email each; four couriers (the runtime's and three
    others, as other processes) look at once, again and again: ten emails."""
    owner = f"user:{user.pk}"
    jobs = [
        await Job.objects.acreate(
            kind="demo.timer", owner=owner, status="succeeded", notify_email=f"u{n}@example.test"
        )
        for n in range(10)
    ]
    await Notice.objects.abulk_create(
        [
            Notice(job=job, channel="email", event="finished", target=job.notify_email)
            for job in jobs
        ]
    )
    others = [Courier(f"other:{n}", asyncio.get_running_loop()) for n in range(3)]
    for _ in range(5):
        await asyncio.gather(*(courier.deliver_due() for courier in others))
    for courier in others:
        await courier.stop()
    async with asyncio.timeout(10):
        while await Notice.objects.exclude(status="delivered").aexists():
            await asyncio.sleep(0.02)
    assert sorted(email.to[0] for email in mail.outbox) == sorted(j.notify_email for j in jobs)


async def test_a_claim_of_a_process_that_died_runs_out_then_it_is_sent(user, runtime):
    job = await Job.objects.acreate(
        kind="demo.timer", owner=f"user:{user.pk}", status="succeeded", language="en"
    )
    notice = await Notice.objects.acreate(
        job=job,
        channel="email",
        event="finished",
        target="ana@example.test",
        status="sending",
        tries=1,
        claimed_by="dead-host:1:x",
        lease_until=timezone.now() + timedelta(seconds=1.5),
    )
    await asyncio.sleep(0.5)
    assert mail.outbox == []  # its lease holds: the dead process might still send it
    [notice] = await settled(job.pk)
    assert (notice.status, notice.tries) == ("delivered", 2)
    assert len(mail.outbox) == 1


# -- webhooks ---------------------------------------------------------------------


async def test_a_webhook_fails_twice_then_is_delivered_once_signed(
    notice_settings, runtime, settings, receiver
):
    hooks(settings, {"demo.timer": [{"url": f"{receiver.url}/flaky/2", "secret": SECRET}]})
    job = await run(runtime, "session:hooks", "demo.timer", {"steps": 1, "interval": 0})
    [notice] = await settled(job.pk)
    assert (notice.status, notice.tries, notice.last_error) == ("delivered", 3, "")
    calls = receiver.calls
    assert len(calls) == 3
    assert all(call.signed for call in calls)
    assert {call.delivery for call in calls} == {str(notice.pk)}
    body = calls[-1].body
    assert body["event"] == "job.finished"
    assert body["job"]["id"] == str(job.pk)
    assert body["job"]["status"] == "succeeded"
    assert body["owner"].startswith("session #")  # a session key is a live cookie
    # Backoff: 0.1 s after the first failure, 0.2 s after the second.
    assert calls[1].at - calls[0].at >= 0.1
    assert calls[2].at - calls[1].at >= 0.2


async def test_a_hanging_receiver_holds_up_nothing_else(
    notice_settings, runtime, settings, receiver
):
    hooks(
        settings,
        {
            "demo.timer": [{"url": f"{receiver.url}/hang", "secret": SECRET}],
            "*": [{"url": f"{receiver.url}/ok", "secret": SECRET}],
        },
    )
    # The receiver hangs 2 s, past this timeout; the other call is answered at once.
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "WEBHOOK_TIMEOUT": 1.0, "NOTICE_ATTEMPTS": 2}
    job = await run(runtime, "session:hooks", "demo.timer", {"steps": 1, "interval": 0})
    ended = timezone.now()
    notices = await settled(job.pk, count=1)
    [delivered] = [notice for notice in notices if notice.status == "delivered"]
    assert delivered.target.endswith("/ok")
    # Before the hanging call's timeout would have let a queue behind it move.
    assert (delivered.delivered_at - ended).total_seconds() < 0.9
    notices = await settled(job.pk, count=2)
    [hung] = [notice for notice in notices if notice.target.endswith("/hang")]
    assert (hung.status, hung.tries) == ("failed", 2)
    assert hung.last_error == "no answer within 1.0 s"
    assert receiver.seen["/hang"] == 2 and receiver.seen["/ok"] == 1


async def test_a_receiver_that_keeps_failing_is_given_up(
    notice_settings, runtime, settings, receiver
):
    hooks(settings, {"tests.fail": [{"url": f"{receiver.url}/broken", "secret": SECRET}]})
    job = await run(runtime, "session:hooks", "tests.fail", {})
    [notice] = await settled(job.pk)
    assert (notice.status, notice.tries) == ("failed", 4)
    assert notice.last_error.startswith("HTTP 500")
    assert receiver.seen["/broken"] == 4
    assert receiver.calls[0].body["job"]["error"] == "boom"


async def test_start_and_end_events_for_a_webhook_that_asks(
    notice_settings, runtime, settings, receiver
):
    hooks(
        settings,
        {
            "demo.timer": [
                {"url": f"{receiver.url}/ok", "secret": SECRET, "events": ["started", "finished"]}
            ]
        },
    )
    job = await run(runtime, "session:hooks", "demo.timer", {"steps": 1, "interval": 0})
    notices = await settled(job.pk, count=2)
    assert sorted((notice.event, notice.attempt) for notice in notices) == [
        ("finished", 0),
        ("started", 1),
    ]
    events = [(call.body["event"], call.body["job"]["status"]) for call in receiver.calls]
    assert sorted(events) == [("job.finished", "succeeded"), ("job.started", "running")]


async def test_a_webhook_taken_out_of_the_settings_is_given_up(
    notice_settings, runtime, settings, receiver
):
    job = await Job.objects.acreate(kind="demo.timer", owner="session:hooks", status="succeeded")
    notice = await Notice.objects.acreate(
        job=job, channel="webhook", event="finished", target=f"{receiver.url}/ok", payload={}
    )
    [notice] = await settled(job.pk)
    assert (notice.status, notice.tries) == ("failed", 1)
    assert "WEBHOOKS" in notice.last_error
    assert await sync_to_async(lambda: receiver.calls)() == []


# -- asking: the API, the socket ---------------------------------------------------


async def signed_in(user):
    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(user)
    response = await client.get("/progress/")
    return client, response.cookies["csrftoken"].value


async def post(client, path, body, token):
    return await client.post(
        path, body, content_type="application/json", headers={"X-CSRFToken": token}
    )


async def test_the_api_asks_and_answers(user, runtime):
    client, token = await signed_in(user)
    started = await post(
        client,
        "/api/jobs/",
        {"kind": "demo.timer", "params": {"steps": 3, "interval": 0.1}, "notify": {"email": True}},
        token,
    )
    assert started.status_code == 201
    job_id = started.json()["id"]
    path = f"/api/jobs/{job_id}/notify/"
    assert (await client.get(path)).json() == {"type": "notify", "job": job_id, "email": True}
    answer = await post(client, path, {"email": False}, token)
    assert answer.json() == {"type": "notify", "job": job_id, "email": False}
    assert (await Job.objects.aget(pk=job_id)).notify_email == ""
    assert (await post(client, path, {"email": True}, token)).json()["email"] is True
    bad = await post(client, path, {"email": "yes"}, token)
    assert (bad.status_code, bad.json()["field"]) == (400, "email")
    assert (
        await client.post(path, {"email": False}, content_type="application/json")
    ).status_code == 403
    await asyncio.wait_for(runtime.runner.wait(job_id), 10)
    ended = await post(client, path, {"email": False}, token)
    assert (ended.status_code, ended.json()["code"]) == (400, "bad_request")
    await settled(job_id)
    assert [email.to for email in mail.outbox] == [["ana@example.test"]]


async def test_a_visitor_is_refused_and_a_strangers_job_is_not_found(user, runtime):
    client, token = await signed_in(user)
    owned = (
        await post(client, "/api/jobs/", {"kind": "demo.timer", "params": {"steps": 50}}, token)
    ).json()
    visitor = AsyncClient(enforce_csrf_checks=True)
    visitor_token = (await visitor.get("/progress/")).cookies["csrftoken"].value
    refused = await post(
        visitor, "/api/jobs/", {"kind": "demo.timer", "notify": {"email": True}}, visitor_token
    )
    assert refused.status_code == 403
    assert refused.json() == {
        "type": "error",
        "code": "forbidden",
        "detail": "Sign in to be emailed when a job ends",
        "field": "email",
    }
    assert not await Job.objects.exclude(pk=owned["id"]).aexists()
    theirs = await post(visitor, f"/api/jobs/{owned['id']}/notify/", {"email": True}, visitor_token)
    assert (theirs.status_code, theirs.json()["code"]) == (404, "not_found")
    assert (await visitor.get(f"/api/jobs/{owned['id']}/notify/")).status_code == 404
    mine = (
        await post(
            visitor, "/api/jobs/", {"kind": "demo.timer", "params": {"steps": 50}}, visitor_token
        )
    ).json()
    own = await post(visitor, f"/api/jobs/{mine['id']}/notify/", {"email": True}, visitor_token)
    assert (own.status_code, own.json()["code"]) == (403, "forbidden")
    assert (await Job.objects.aget(pk=owned["id"])).notify_email == ""
    bad_start = await post(
        visitor, "/api/jobs/", {"kind": "demo.timer", "notify": True}, visitor_token
    )
    assert (bad_start.status_code, bad_start.json()["field"]) == (400, "notify")


async def test_the_socket_asks_and_refuses(user, runtime):
    client, _token = await signed_in(user)
    ws = await connect(client.cookies["sessionid"].value)
    stranger = await connect(await new_session())
    try:
        first = await ask(
            ws,
            {
                "action": "start",
                "kind": "demo.timer",
                "params": {"steps": 50},
                "notify": {"email": True},
            },
        )
        job_id = first["job"]["id"]
        assert (await Job.objects.aget(pk=job_id)).notify_email == "ana@example.test"
        await ws.send_json_to({"action": "notify", "job": job_id, "email": False})
        *_, answer = await until(ws, lambda frame: frame["type"] == "notify")
        assert answer == {"type": "notify", "job": job_id, "email": False}
        refused = await ask(stranger, {"action": "notify", "job": job_id, "email": True})
        assert (refused["type"], refused["code"], refused["job"]) == ("error", "not_found", job_id)
        mine = await ask(
            stranger, {"action": "start", "kind": "demo.timer", "params": {"steps": 50}}
        )
        await stranger.send_json_to({"action": "notify", "job": mine["job"]["id"], "email": True})
        *_, own = await until(stranger, lambda frame: frame["type"] == "error")
        assert (own["type"], own["code"]) == ("error", "forbidden")
        assert (await Job.objects.aget(pk=job_id)).notify_email == ""
    finally:
        await ws.disconnect()
        await stranger.disconnect()


async def test_the_pages_offer_email_to_a_signed_in_user_with_an_address(user, runtime):
    client, token = await signed_in(user)
    progress = (await client.get("/progress/")).content.decode()
    assert 'id="lp-demo-email"' in progress
    emailing = (
        await post(
            client,
            "/api/jobs/",
            {"kind": "demo.timer", "params": {"steps": 50}, "notify": {"email": True}},
            token,
        )
    ).json()
    await post(client, "/api/jobs/", {"kind": "demo.timer", "params": {"steps": 50}}, token)
    jobs_page = await client.get("/jobs/")
    assert jobs_page.context["email"] == {"jobs": [emailing["id"]]}
    assert '<script id="lp-email" type="application/json">' in jobs_page.content.decode()
    visitor = AsyncClient()
    assert 'id="lp-demo-email"' not in (await visitor.get("/progress/")).content.decode()
    assert (await visitor.get("/jobs/")).context["email"] is None
