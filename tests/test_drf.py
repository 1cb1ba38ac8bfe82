"""liveprogress.drf: a site built on Django REST framework lists, reads, starts and
cancels its callers' jobs with the states and ownership rules of the socket and
the JSON API, and starts its own kinds from its own DRF views.

Requests go through Django's ASGI handler (AsyncClient), the sync DRF views in
its threads as under a server; the last tests serve the site with a real Daphne.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import typing

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.middleware import SessionMiddleware
from django.test import AsyncClient, Client
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory, force_authenticate

import liveprogress
from liveprogress.drf import JobStateSerializer
from liveprogress.models import Job, Status
from liveprogress.owner import aexisting_owner_of, aowner_of, existing_owner_of
from liveprogress.runners import WSGI_REASON
from liveprogress.state import JobState, job_state
from proyecto.demo.jobs import timer

from .servers import REPO_ROOT, DaphneServer, Visitor, frames_until, is_terminal, send_json

JOBS = "/rest/jobs/"
PASSWORD = "a long enough password"  # noqa: S105 (a test user's)


def timer_start(steps: int = 1, interval: float = 0) -> dict[str, typing.Any]:
    return {"kind": "demo.timer", "params": {"steps": steps, "interval": interval}}


async def post(
    client: AsyncClient,
    path: str,
    body: typing.Any = None,
    headers: dict[str, str] | None = None,
):
    return await client.post(path, body or {}, content_type="application/json", headers=headers)


def basic(username: str) -> dict[str, str]:
    """The Authorization header of a client that signs in with its password."""
    pair = base64.b64encode(f"{username}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


async def ended(
    client: AsyncClient, job_id: str, headers: dict[str, str] | None = None
) -> dict[str, typing.Any]:
    """The job's state once it has ended, read over the viewset."""
    async with asyncio.timeout(10):
        while True:
            state = (await client.get(f"{JOBS}{job_id}/", headers=headers)).json()
            if state["status"] not in ("queued", "running"):
                return state
            await asyncio.sleep(0.02)


async def test_the_state_serializer_is_the_wire_state(runtime):
    handle = await timer.astart("system:x", steps=1, interval=0)
    await handle.await_end(timeout=10)
    job = await Job.objects.aget(pk=handle.id)
    serializer = JobStateSerializer(job)
    assert serializer.data == job_state(job) == handle.state
    assert JobStateSerializer(handle).data == handle.state
    # Field for field JobState's, every one read-only, typed as the wire types it.
    fields = serializer.fields
    assert list(fields) == list(typing.get_type_hints(JobState))
    assert all(field.read_only for field in fields.values())
    assert type(fields["seq"]).__name__ == "IntegerField" and not fields["seq"].allow_null
    assert type(fields["percent"]).__name__ == "FloatField" and fields["percent"].allow_null
    assert type(fields["stages"]).__name__ == "ListField"
    assert type(fields["result"]).__name__ == "JSONField"


@pytest.mark.urls("tests.drf_site")
async def test_a_visitor_starts_reads_lists_and_cancels_their_job(runtime):
    visitor = AsyncClient()
    response = await post(visitor, JOBS, timer_start(steps=1000, interval=1))
    assert response.status_code == 201, response.content
    state = response.json()
    assert list(state) == list(typing.get_type_hints(JobState))
    assert response["Location"].endswith(f"{JOBS}{state['id']}/")
    # Starting made the visitor a session, and the session owns the job.
    session_key = visitor.cookies["sessionid"].value
    assert (await Job.objects.aget(pk=state["id"])).owner == f"session:{session_key}"

    read = (await visitor.get(f"{JOBS}{state['id']}/")).json()
    assert read["id"] == state["id"] and read["seq"] >= state["seq"]
    listed = (await visitor.get(JOBS)).json()
    assert [each["id"] for each in listed] == [state["id"]]

    cancelled = await post(visitor, f"{JOBS}{state['id']}/cancel/")
    assert cancelled.status_code in (200, 202), cancelled.content
    assert cancelled.json()["status"] == "cancelled" or cancelled.json()["cancel_requested"]
    assert (await ended(visitor, state["id"]))["status"] == "cancelled"
    assert (await visitor.get(JOBS, {"status": "active"})).json() == []

    # OPTIONS describes the start (REST framework's metadata, from its serializer).
    described = (await visitor.options(JOBS)).json()["actions"]["POST"]
    assert list(described) == ["kind", "params", "run_after"]

    # Routed without a router, a start has no address to give: no Location.
    by_hand = await post(visitor, "/rest/by-hand/", timer_start())
    assert by_hand.status_code == 201 and "Location" not in by_hand
    assert (await ended(visitor, by_hand.json()["id"]))["status"] == "succeeded"


@pytest.mark.urls("tests.drf_site")
async def test_another_visitor_is_told_the_job_does_not_exist(runtime):
    owner = AsyncClient()
    job_id = (await post(owner, JOBS, timer_start(steps=1000, interval=1))).json()["id"]
    stranger = AsyncClient()
    await post(stranger, JOBS, timer_start())  # a visitor with a session and jobs of their own
    missing = f"{JOBS}00000000-0000-0000-0000-000000000000/"
    for path in (f"{JOBS}{job_id}/", missing, f"{JOBS}not-a-job-id/"):
        response = await stranger.get(path)
        assert (response.status_code, response.json()) == (404, {"detail": "No such job"})
    refused = await post(stranger, f"{JOBS}{job_id}/cancel/")
    assert (refused.status_code, refused.json()) == (404, {"detail": "No such job"})
    assert job_id not in [each["id"] for each in (await stranger.get(JOBS)).json()]
    assert (await Job.objects.aget(pk=job_id)).status in (Status.QUEUED, Status.RUNNING)
    await post(owner, f"{JOBS}{job_id}/cancel/")


@pytest.mark.urls("tests.drf_site")
async def test_looking_makes_no_session_for_a_visitor_without_one(runtime):
    from django.contrib.sessions.models import Session

    job = await timer.astart("system:x", steps=1, interval=0)
    visitor = AsyncClient()
    assert (await visitor.get(JOBS)).json() == []
    assert (await visitor.get(f"{JOBS}{job.id}/")).status_code == 404
    assert (await post(visitor, f"{JOBS}{job.id}/cancel/")).status_code == 404
    assert "sessionid" not in visitor.cookies
    assert not await Session.objects.aexists()


@pytest.mark.urls("tests.drf_site")
async def test_a_refused_start_answers_400_naming_the_field(runtime):
    from django.contrib.sessions.models import Session

    visitor = AsyncClient()
    unknown = await post(visitor, JOBS, {"kind": "no.such"})
    assert (unknown.status_code, unknown.json()) == (400, {"kind": ["Unknown job kind 'no.such'"]})
    # A kind clients may not start is unknown to them, in the same words.
    private = (await post(visitor, JOBS, {"kind": "drf_site.export"})).json()
    assert private == {"kind": ["Unknown job kind 'drf_site.export'"]}
    assert list((await post(visitor, JOBS, {"params": {}})).json()) == ["kind"]
    bad_params = {
        json.dumps({"steps": 0}): {"steps": ["steps: Input should be greater than or equal to 1"]},
        json.dumps({"nope": 1}): {"nope": ["nope: unknown parameter"]},
        json.dumps({"steps": "5"}): {"steps": ["steps: Input should be a valid integer"]},
    }
    for params, errors in bad_params.items():
        response = await post(visitor, JOBS, {"kind": "demo.timer", "params": json.loads(params)})
        assert (response.status_code, response.json()) == (400, {"params": errors})
    listed = await post(visitor, JOBS, {"kind": "demo.timer", "params": [1]})
    assert listed.json() == {"params": ["params must be a JSON object"]}
    # Nothing was started, and nobody was given a session for it.
    assert not await Job.objects.aexists()
    assert "sessionid" not in visitor.cookies and not await Session.objects.aexists()


@pytest.mark.urls("tests.drf_site")
async def test_the_caps_answer_429_with_a_json_body(runtime, settings):
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "MAX_ACTIVE_PER_OWNER": 1}
    visitor = AsyncClient()
    assert (await post(visitor, JOBS, timer_start(steps=1000, interval=1))).status_code == 201
    refused = await post(visitor, JOBS, timer_start())
    assert refused.status_code == 429
    assert refused["Content-Type"] == "application/json"
    assert refused.json()["detail"].startswith("You already have 1 jobs queued or running")


@pytest.mark.urls("tests.drf_site")
async def test_a_body_over_the_frame_limit_is_refused_unread(runtime, settings):
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "MAX_FRAME_BYTES": 1024}
    body = {"kind": "demo.timer", "params": {"padding": "x" * 2000}}
    response = await post(AsyncClient(), JOBS, body)
    assert response.status_code == 413
    assert response.json() == {"detail": "Bodies may be at most 1024 bytes"}


@pytest.mark.urls("tests.drf_site")
async def test_the_list_is_the_newest_jobs_and_filters_the_active_ones(runtime, settings):
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "RECENT_JOBS": 2}
    visitor = AsyncClient()
    started = [(await post(visitor, JOBS, timer_start())).json()["id"] for _ in range(3)]
    for job_id in started:
        await ended(visitor, job_id)
    running = (await post(visitor, JOBS, timer_start(steps=1000, interval=1))).json()["id"]
    # Unpaginated (the site's settings name no pagination): the newest RECENT_JOBS.
    assert [each["id"] for each in (await visitor.get(JOBS)).json()] == [running, started[2]]
    assert [each["id"] for each in (await visitor.get(JOBS, {"status": "active"})).json()] == [
        running
    ]
    wrong = await visitor.get(JOBS, {"status": "ended"})
    assert (wrong.status_code, wrong.json()) == (
        400,
        {"status": ["status must be 'active' or left out"]},
    )
    await post(visitor, f"{JOBS}{running}/cancel/")


@pytest.mark.urls("tests.drf_site")
async def test_a_client_signed_in_with_its_password_owns_its_jobs_without_a_session(runtime):
    user = await get_user_model().objects.acreate_user("api", password=PASSWORD)
    # CSRF is checked here as in production: a password sent in a header needs no token.
    client = AsyncClient(enforce_csrf_checks=True)
    response = await post(client, JOBS, timer_start(), basic("api"))
    assert response.status_code == 201, response.content
    job_id = response.json()["id"]
    assert "sessionid" not in client.cookies
    assert (await Job.objects.aget(pk=job_id)).owner == f"user:{user.pk}"
    assert (await ended(client, job_id, basic("api")))["status"] == "succeeded"
    # The user's job, wherever the user signs in: in a browser's session too.
    browser = AsyncClient()
    await browser.aforce_login(user)
    assert [each["id"] for each in (await browser.get(JOBS)).json()] == [job_id]
    assert (await liveprogress.aget_job(user, job_id)).status == "succeeded"
    # Without the password the same client is a stranger.
    assert (await client.get(f"{JOBS}{job_id}/")).status_code == 404
    wrong = {"Authorization": "Basic " + base64.b64encode(b"api:wrong").decode()}
    assert (await client.get(f"{JOBS}{job_id}/", headers=wrong)).status_code in (401, 403)


@pytest.mark.urls("tests.drf_site")
async def test_writes_through_a_session_cookie_need_the_csrf_token(runtime):
    visitor = AsyncClient(enforce_csrf_checks=True)
    for path, body in ((JOBS, timer_start()), ("/rest/exports/", {"rows": 1})):
        refused = await post(visitor, path, body)
        assert refused.status_code == 403
        assert refused.json()["detail"].startswith("CSRF Failed")
    assert not await Job.objects.aexists()
    await visitor.get("/jobs/")  # a page of the site: the CSRF cookie
    with_token = {"X-CSRFToken": visitor.cookies["csrftoken"].value}
    started = await post(visitor, JOBS, timer_start(steps=1000, interval=1), with_token)
    assert started.status_code == 201, started.content
    job_id = started.json()["id"]
    assert (await post(visitor, f"{JOBS}{job_id}/cancel/")).status_code == 403
    cancelled = await post(visitor, f"{JOBS}{job_id}/cancel/", headers=with_token)
    assert cancelled.status_code in (200, 202), cancelled.content
    # A signed-in user's session is checked by REST framework's SessionAuthentication.
    user = await get_user_model().objects.acreate_user("ana")
    await visitor.aforce_login(user)
    assert (await post(visitor, JOBS, timer_start())).status_code == 403


@pytest.mark.urls("tests.drf_site")
async def test_a_site_s_own_drf_view_starts_its_private_kind_with_the_public_api(runtime, settings):
    """``export.start(request, ...)`` in a sync APIView, served over ASGI: the job runs,
    and is the user's that DRF authenticated, or the visitor's session's."""
    user = await get_user_model().objects.acreate_user("api", password=PASSWORD)
    client = AsyncClient()
    response = await post(client, "/rest/exports/", {"rows": 2}, basic("api"))
    assert response.status_code == 201, response.content
    job_id = response.json()["id"]
    assert (await Job.objects.aget(pk=job_id)).owner == f"user:{user.pk}"
    final = await ended(client, job_id, basic("api"))
    assert (final["status"], final["result"]) == ("succeeded", {"rows": 2})

    visitor = AsyncClient()
    job_id = (await post(visitor, "/rest/exports/", {"rows": 1})).json()["id"]
    session_key = visitor.cookies["sessionid"].value
    assert (await Job.objects.aget(pk=job_id)).owner == f"session:{session_key}"
    assert (await ended(visitor, job_id))["status"] == "succeeded"

    # Its refusals answer as the viewset's do.
    bad = await post(visitor, "/rest/exports/", {"rows": 0})
    assert (bad.status_code, bad.json()) == (
        400,
        {"params": {"rows": ["rows: Input should be greater than or equal to 1"]}},
    )
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "MAX_ACTIVE_PER_OWNER": 1}
    running = await post(visitor, "/rest/exports/", {"rows": 1000, "interval": 1})
    assert running.status_code == 201
    refused = await post(visitor, "/rest/exports/", {"rows": 1})
    assert refused.status_code == 429 and "already have 1 job" in refused.json()["detail"]
    await post(visitor, f"{JOBS}{running.json()['id']}/cancel/")


@pytest.mark.urls("tests.drf_site")
def test_a_drf_start_served_by_wsgi_fails_saying_why(transactional_db, fast):
    """Django's sync test Client is WSGI, as a DRF site served by gunicorn's sync
    workers: the request inside DRF's is seen, and the job ends failed at once."""
    client = Client()
    response = client.post(JOBS, timer_start(), content_type="application/json")
    assert response.status_code == 201
    assert (response.json()["status"], response.json()["error"]) == ("failed", WSGI_REASON)


async def test_the_owner_of_a_drf_request_is_its_authenticated_user(runtime):
    """The public API's owner functions, given a DRF request directly."""
    user = await get_user_model().objects.acreate_user("ana")
    factory = APIRequestFactory()

    def drf_request(user=None) -> Request:
        http_request = factory.get("/")
        SessionMiddleware(lambda request: None).process_request(http_request)
        if user is not None:
            force_authenticate(http_request, user)
        return Request(http_request)

    assert await aexisting_owner_of(drf_request(user)) == f"user:{user.pk}"
    assert await aowner_of(drf_request(user)) == f"user:{user.pk}"
    anonymous = drf_request()
    assert await aexisting_owner_of(anonymous) is None
    owner = await aowner_of(anonymous)
    assert owner == f"session:{anonymous.session.session_key}"
    assert await aexisting_owner_of(anonymous) == owner
    assert existing_owner_of(drf_request(user)) == f"user:{user.pk}"


def test_the_library_needs_rest_framework_only_for_liveprogress_drf():
    """Without DRF installed every other module imports, and liveprogress.drf says
    which extra to install."""
    code = """
import pkgutil, sys
sys.modules["rest_framework"] = None  # as if it were not installed
import django
django.setup()
import liveprogress
for module in pkgutil.walk_packages(liveprogress.__path__, "liveprogress."):
    if module.name != "liveprogress.drf":
        __import__(module.name)
try:
    import liveprogress.drf
except ImportError as error:
    print(error)
"""
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert 'pip install "django-liveprogress[drf]"' in done.stdout, done.stderr


# -- served by Daphne -----------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """The REST framework site of tests/drf_site.py, paginated two states a page by
    its settings (tests/drf_settings.py), with a user ``api``."""
    db = tmp_path_factory.mktemp("drf") / "drf.sqlite3"
    env = {"DJANGO_SETTINGS_MODULE": "tests.drf_settings"}
    with DaphneServer(db, env, liveprogress={"MAX_ACTIVE_PER_ADDRESS": 50}) as running:
        subprocess.run(  # noqa: S603
            [
                sys.executable,
                "manage.py",
                "createsuperuser",
                "--noinput",
                "--username",
                "api",
                "--email",
                "api@example.org",
            ],
            cwd=REPO_ROOT,
            env={**running.env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD},
            capture_output=True,
            timeout=60,
            check=True,
        )
        yield running


@pytest.fixture(scope="module")
def api_token(server: DaphneServer) -> str:
    """The token the user ``api`` signs in with, made by REST framework's command."""
    created = subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "drf_create_token", "api"],
        cwd=REPO_ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return created.stdout.split()[2]  # "Generated token KEY for user api"


@pytest.mark.integration
async def test_over_daphne_a_drf_start_is_followed_on_the_socket(server):
    visitor = Visitor(server)
    visitor.visit()
    status, state = await asyncio.to_thread(visitor.post_json, JOBS, timer_start(5, 0.05))
    assert status == 201, state
    async with visitor.ws() as ws:
        await send_json(ws, {"action": "subscribe", "job": state["id"]})
        frames = await frames_until(ws, lambda frame: is_terminal(frame, state["id"]))
    final = frames[-1]["job"]
    assert final["status"] == "succeeded"
    # The viewset and the socket agree on the state, field for field.
    status, read = await asyncio.to_thread(visitor.get, f"{JOBS}{state['id']}/")
    assert (status, read) == (200, final)

    # The site's own view, its private kind, the same socket.
    status, export = await asyncio.to_thread(visitor.post_json, "/rest/exports/", {"rows": 3})
    assert status == 201, export
    async with visitor.ws() as ws:
        await send_json(ws, {"action": "subscribe", "job": export["id"]})
        frames = await frames_until(ws, lambda frame: is_terminal(frame, export["id"]))
    assert frames[-1]["job"]["result"] == {"rows": 3}

    # Another visitor: no such job.
    stranger = Visitor(server)
    status, body = await asyncio.to_thread(stranger.get, f"{JOBS}{state['id']}/")
    assert (status, body) == (404, {"detail": "No such job"})


@pytest.mark.integration
def test_over_daphne_the_list_pages_as_the_site_s_settings_say(server, api_token):
    visitor = Visitor(server)
    visitor.visit()
    started = [visitor.post_json(JOBS, timer_start())[1]["id"] for _ in range(3)]
    status, first = visitor.get(JOBS)
    assert status == 200
    assert first["count"] == 3 and first["next"].endswith(f"{JOBS}?page=2")
    assert [each["id"] for each in first["results"]] == [started[2], started[1]]
    status, second = visitor.get(f"{JOBS}?page=2")
    assert [each["id"] for each in second["results"]] == [started[0]]

    # A client that signs in with a token: no cookie, no CSRF token, its user's jobs.
    client = Visitor(server)
    token = {"Authorization": f"Token {api_token}"}
    body, as_json = json.dumps(timer_start()).encode(), {"Content-Type": "application/json"}
    status, state = client.request("POST", JOBS, body, {**token, **as_json})
    assert status == 201, state
    assert client.cookie("sessionid") is None
    status, mine = client.get(JOBS, headers=token)
    assert [each["id"] for each in mine["results"]] == [state["id"]]
    status, cancelled = client.request("POST", f"{JOBS}{state['id']}/cancel/", None, token)
    assert status in (200, 202), cancelled
    assert visitor.get(f"{JOBS}{state['id']}/")[0] == 404

    # REST framework's browsable API offers the start's form.
    status, _ = visitor.get(JOBS, headers={"Accept": "text/html"})
    assert status == 200 and 'name="kind"' in visitor.last_text
