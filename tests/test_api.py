"""The JSON API: same states and rules as the WebSocket, errors as JSON."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from django.test import AsyncClient

from liveprogress.models import Job

pytestmark = pytest.mark.asyncio


async def visit(language: str | None = None) -> tuple[AsyncClient, str]:
    """A browser-like client: CSRF enforced, cookies from a first page view."""
    client = AsyncClient(enforce_csrf_checks=True)
    # Per-request headers replace an AsyncClient's default ones, so keep it here.
    client.language_headers = {"Accept-Language": language} if language else {}
    response = await client.get("/progress/", headers=client.language_headers)
    assert response.status_code == 200
    assert "sessionid" in response.cookies
    return client, response.cookies["csrftoken"].value


async def post(client, path, body=None, token=None, content_type="application/json"):
    headers = {**client.language_headers, **({"X-CSRFToken": token} if token else {})}
    return await client.post(
        path, body if body is not None else {}, content_type=content_type, headers=headers
    )


async def wait_for_end(client, job_id, timeout=10):
    async with asyncio.timeout(timeout):
        while True:
            state = (await client.get(f"/api/jobs/{job_id}/")).json()
            if state["status"] not in ("queued", "running"):
                return state
            await asyncio.sleep(0.05)


async def test_create_get_list(runtime):
    client, token = await visit()
    response = await post(
        client,
        "/api/jobs/",
        {"kind": "demo.timer", "params": {"steps": 2, "interval": 0.05}},
        token,
    )
    assert response.status_code == 201
    state = response.json()
    assert response["Location"] == f"/api/jobs/{state['id']}/"
    assert state["status"] in ("queued", "running")
    final = await wait_for_end(client, state["id"])
    assert final["status"] == "succeeded"
    assert final["result"] == {"steps": 2}
    assert final["message"] == "¡Proceso completado!"
    listing = (await client.get("/api/jobs/")).json()
    assert [job["id"] for job in listing["jobs"]] == [state["id"]]
    assert (await client.get("/api/jobs/?status=active")).json() == {"jobs": []}


async def test_english_by_accept_language(runtime):
    client, token = await visit("en")
    state = (
        await post(
            client,
            "/api/jobs/",
            {"kind": "demo.timer", "params": {"steps": 1, "interval": 0}},
            token,
        )
    ).json()
    assert (await wait_for_end(client, state["id"]))["message"] == "Process completed!"


async def test_cancel(runtime):
    client, token = await visit()
    state = (
        await post(
            client,
            "/api/jobs/",
            {"kind": "demo.timer", "params": {"steps": 50, "interval": 0.05}},
            token,
        )
    ).json()
    response = await post(client, f"/api/jobs/{state['id']}/cancel/", token=token)
    assert response.status_code in (200, 202)
    assert response.json()["cancel_requested"]
    assert (await wait_for_end(client, state["id"]))["status"] == "cancelled"
    # Cancelling an ended job answers its state.
    again = await post(client, f"/api/jobs/{state['id']}/cancel/", token=token)
    assert again.status_code == 200
    assert again.json()["status"] == "cancelled"


async def test_without_csrf_nothing_is_created(runtime):
    client, _ = await visit()
    response = await post(client, "/api/jobs/", {"kind": "demo.timer"})
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert "CSRF" in response.json()["detail"]
    assert await Job.objects.acount() == 0


async def test_strangers_see_nothing(runtime):
    owner, token = await visit()
    state = (
        await post(
            owner,
            "/api/jobs/",
            {"kind": "demo.timer", "params": {"steps": 3, "interval": 0.1}},
            token,
        )
    ).json()
    stranger, stranger_token = await visit()
    unknown = str(uuid.uuid4())
    for path in ("/api/jobs/{}/",):
        foreign = await stranger.get(path.format(state["id"]))
        random = await stranger.get(path.format(unknown))
        assert foreign.status_code == random.status_code == 404
        assert foreign.json() == random.json()
    foreign = await post(stranger, f"/api/jobs/{state['id']}/cancel/", token=stranger_token)
    random = await post(stranger, f"/api/jobs/{unknown}/cancel/", token=stranger_token)
    assert foreign.status_code == random.status_code == 404
    assert (
        foreign.json()
        == random.json()
        == {"type": "error", "code": "not_found", "detail": "No such job", "field": "job"}
    )
    assert (await stranger.get("/api/jobs/")).json() == {"jobs": []}
    final = await wait_for_end(owner, state["id"])
    assert final["status"] == "succeeded"
    assert not final["cancel_requested"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "field"),
    [
        ("{not json", "application/json", 400, None),
        ("[1]", "application/json", 400, None),
        ('{"kind": "demo.timer", "params": {"steps": Infinity}}', "application/json", 400, None),
        ("kind=demo.timer", "application/x-www-form-urlencoded", 400, None),
        ('{"kind": "nope"}', "application/json", 400, "kind"),
        (
            '{"kind": "demo.timer", "params": {"steps": 20000}}',
            "application/json",
            400,
            "params.steps",
        ),
        (
            '{"kind": "demo.timer", "params": {"interval": -1}}',
            "application/json",
            400,
            "params.interval",
        ),
        (
            '{"kind": "demo.timer", "params": {"steps": 1, "x": 1}}',
            "application/json",
            400,
            "params.x",
        ),
        ('{"kind": "demo.timer", "pad": "' + "x" * 70_000 + '"}', "application/json", 413, None),
    ],
)
async def test_bad_bodies_are_json_errors(runtime, body, content_type, status, field):
    client, token = await visit()
    response = await post(client, "/api/jobs/", body, token, content_type=content_type)
    assert response.status_code == status
    error = response.json()
    assert error["type"] == "error"
    assert error["detail"]
    assert error.get("field") == field
    assert await Job.objects.acount() == 0


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("get", "/api/jobs/not-a-uuid/", 400),
        ("get", "/api/jobs/?limit=0", 400),
        ("get", "/api/jobs/?limit=abc", 400),
        ("get", "/api/jobs/?limit=%C2%B2", 400),
        ("get", "/api/jobs/?limit=" + "9" * 5000, 400),
        ("get", "/api/jobs/?status=weird", 400),
        ("delete", "/api/jobs/", 405),
        ("put", "/api/jobs/{unknown}/", 405),
        ("get", "/api/jobs/{unknown}/cancel/", 405),
    ],
)
async def test_bad_requests_are_json_errors(runtime, method, path, status):
    client, token = await visit()
    response = await getattr(client, method)(
        path.format(unknown=uuid.uuid4()), headers={"X-CSRFToken": token}
    )
    assert response.status_code == status
    assert response.json()["type"] == "error"


async def test_cap_is_429(runtime, settings):
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "MAX_ACTIVE_PER_OWNER": 1}
    client, token = await visit()
    body = {"kind": "demo.timer", "params": {"steps": 50, "interval": 0.05}}
    first = await post(client, "/api/jobs/", body, token)
    assert first.status_code == 201
    second = await post(client, "/api/jobs/", body, token)
    assert second.status_code == 429
    assert second.json()["code"] == "limit"
    await post(client, f"/api/jobs/{first.json()['id']}/cancel/", token=token)


async def test_visitors_without_a_session_own_nothing_and_get_none(runtime):
    client = AsyncClient()
    assert (await client.get("/api/jobs/")).json() == {"jobs": []}
    response = await client.get(f"/api/jobs/{uuid.uuid4()}/")
    assert response.status_code == 404
    assert "sessionid" not in response.cookies


async def test_progress_page_and_redirect(runtime):
    client = AsyncClient()
    redirect = await client.get("/progress")
    assert redirect.status_code == 301
    assert redirect["Location"] == "/progress/"
    page = await client.get("/progress/", headers={"Accept-Language": "en"})
    assert b'lang="en"' in page.content
    assert b"liveprogress-client.js" in page.content
    assert b"liveprogress-widgets.js" in page.content
    spanish = await client.get("/progress/", headers={"Accept-Language": "es"})
    assert b"Cancelar" in spanish.content
