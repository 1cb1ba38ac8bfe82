"""Share links (shares.py), in one process: made, listed and revoked by the job's
owner only; a link opens its one job, read-only, as a stranger may see it; a dead,
malformed or foreign link is the same 404; nothing answers unless the site turned
``SHARE_LINKS`` on. (A real server, streams and their cut: test_shares_site.py.)"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.test import AsyncClient
from django.utils import timezone

from liveprogress import aget_job, conf
from liveprogress.access import ShareGrant, still_holds
from liveprogress.exceptions import BadRequest, JobNotFound, NotFound
from liveprogress.models import Job, Share
from liveprogress.shares import TOKEN, token_digest, viewer_frame, viewer_state
from liveprogress.state import encode, job_state
from tests.conftest import FAST
from tests.test_api import post, visit, wait_for_end


@pytest.fixture
def sharing(settings, runtime):
    settings.LIVEPROGRESS = {**FAST, "SHARE_LINKS": True, "MAX_SHARES_PER_JOB": 3}
    return runtime


async def owned_job(kind="tests.attach", params=None):
    """A browser that owns a job which ended with a result and a file; the job's state."""
    client, csrf = await visit()
    response = await post(client, "/api/jobs/", {"kind": kind, "params": params or {}}, csrf)
    assert response.status_code == 201, response.json()
    final = await wait_for_end(client, response.json()["id"])
    return client, csrf, final


def token_of(url: str) -> str:
    token = url.rstrip("/").rsplit("/", 1)[-1]
    assert TOKEN.match(token), url
    return token


async def test_share_links_are_off_unless_the_site_turns_them_on(runtime):
    client, csrf, state = await owned_job()
    made = await post(client, f"/api/jobs/{state['id']}/shares/", {}, csrf)
    assert made.status_code == 404 and made.json()["code"] == "not_found"
    assert (await client.get(f"/api/jobs/{state['id']}/shares/")).status_code == 404
    # A link made while they were on stops working when they are turned off.
    token = "A" * 43
    await Share.objects.acreate(
        job_id=state["id"],
        token_digest=token_digest(token),
        expires_at=timezone.now() + timedelta(days=1),
    )
    stranger = AsyncClient()
    assert (await stranger.get(f"/shared/{token}/")).status_code == 404
    assert (await stranger.get(f"/api/jobs/shared/{token}/{state['id']}/")).status_code == 404


async def test_the_owner_makes_lists_and_revokes_a_link_that_a_stranger_opens(sharing):
    client, csrf, state = await owned_job()
    assert state["result"] == 1 and state["files"]
    made = await post(client, f"/api/jobs/{state['id']}/shares/", {"lifetime": 600}, csrf)
    assert made.status_code == 201, made.json()
    link = made.json()
    assert link["job"] == state["id"] and link["revoked_at"] is None
    assert 599 <= link["expires_at"] - link["created_at"] <= 601
    assert link["url"].startswith("http://testserver/shared/")
    token = token_of(link["url"])

    # The database keeps the token's digest only.
    row = await Share.objects.aget(pk=link["id"])
    assert row.token_digest == hashlib.sha256(token.encode()).hexdigest()
    assert token not in row.token_digest

    listed = (await client.get(f"/api/jobs/{state['id']}/shares/")).json()["shares"]
    assert [each["id"] for each in listed] == [link["id"]]
    assert "url" not in listed[0]

    # A stranger: no cookies, no session, and none given.
    stranger = AsyncClient()
    page = await stranger.get(f"/shared/{token}/")
    assert page.status_code == 200
    assert "sessionid" not in page.cookies and "csrftoken" not in page.cookies
    assert page["Referrer-Policy"] == "no-referrer"
    assert "noindex" in page["X-Robots-Tag"] and page["Cache-Control"] == "no-store"
    html = page.content.decode()
    assert "lp-cancel" not in html and "lp-pause" not in html
    assert state["files"][0]["url"] not in html
    seen = await stranger.get(f"/api/jobs/shared/{token}/{state['id']}/")
    assert seen.status_code == 200 and "sessionid" not in seen.cookies
    shown = seen.json()
    assert shown["status"] == "succeeded" and shown["percent"] == state["percent"]
    assert shown["result"] is None and shown["files"] == [] and shown["log_seq"] == 0

    # The link opens its own job only, and never writes.
    _, _, other = await owned_job()
    for path in (
        f"/api/jobs/shared/{token}/{other['id']}/",
        f"/api/jobs/shared/{token}/{other['id']}/events/",
        f"/api/jobs/shared/{token}/not-a-job/",
    ):
        answer = await stranger.get(path)
        assert answer.status_code in (400, 404), path
    refused = await stranger.post(f"/api/jobs/shared/{token}/{state['id']}/", {})
    assert refused.status_code == 405
    for path in ("cancel/", "pause/", "shares/", "notify/"):
        answer = await stranger.post(f"/api/jobs/shared/{token}/{state['id']}/{path}", {})
        assert answer.status_code == 404, path
        assert answer.json()["code"] == "not_found"
    # The job's own endpoints still don't know the stranger.
    assert (await stranger.get(f"/api/jobs/{state['id']}/")).status_code == 404

    revoked = await post(client, f"/api/jobs/{state['id']}/shares/{link['id']}/revoke/", {}, csrf)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert (await client.get(f"/api/jobs/{state['id']}/shares/")).json()["shares"] == []
    gone_page = await stranger.get(f"/shared/{token}/")
    gone_api = await stranger.get(f"/api/jobs/shared/{token}/{state['id']}/")
    assert gone_page.status_code == 404 and gone_api.status_code == 404
    # Revoked, expired, never made, malformed: the same answer.
    never = await stranger.get(f"/api/jobs/shared/{'B' * 43}/{state['id']}/")
    malformed = await stranger.get(f"/api/jobs/shared/short/{state['id']}/")
    assert gone_api.json() == never.json() == malformed.json()
    assert not await asyncio.to_thread(still_holds, ShareGrant(link["id"]))


async def test_a_link_s_grant_holds_while_it_works_and_sharing_is_on(sharing, settings):
    client, csrf, state = await owned_job()
    link = (await post(client, f"/api/jobs/{state['id']}/shares/", {}, csrf)).json()
    grant = ShareGrant(link["id"])
    assert await asyncio.to_thread(still_holds, grant)
    settings.LIVEPROGRESS = {**FAST, "SHARE_LINKS": False}
    assert not await asyncio.to_thread(still_holds, grant)


async def test_nobody_but_the_owner_makes_lists_or_revokes_links(sharing):
    client, csrf, state = await owned_job()
    link = (await post(client, f"/api/jobs/{state['id']}/shares/", {}, csrf)).json()
    other, other_csrf = await visit()
    paths = [
        f"/api/jobs/{state['id']}/shares/",
        f"/api/jobs/{state['id']}/shares/{link['id']}/revoke/",
    ]
    for path in paths:
        answer = await post(other, path, {}, other_csrf)
        assert answer.status_code == 404 and answer.json()["code"] == "not_found", path
    assert (await other.get(paths[0])).status_code == 404
    # A link of another job, named under the owner's own job: no such link.
    _, _, own = await owned_job()
    answer = await post(client, f"/api/jobs/{own['id']}/shares/{link['id']}/revoke/", {}, csrf)
    assert answer.status_code == 404
    assert await Share.objects.alive().filter(pk=link["id"]).aexists()
    # Writes need the CSRF token like any other.
    assert (await post(client, paths[0], {})).status_code == 403


async def test_lifetimes_and_the_cap_are_kept(sharing):
    client, csrf, state = await owned_job()
    path = f"/api/jobs/{state['id']}/shares/"
    most = int(conf.get("SHARE_MAX_LIFETIME"))
    for bad in (0, -5, most + 1, 1.5, "60", True):
        answer = await post(client, path, {"lifetime": bad}, csrf)
        assert answer.status_code == 400 and answer.json()["field"] == "lifetime", bad
    default = (await post(client, path, {}, csrf)).json()
    assert default["expires_at"] - default["created_at"] == pytest.approx(24 * 3600, abs=1)
    assert (await post(client, path, {"lifetime": most}, csrf)).status_code == 201
    assert (await post(client, path, {"lifetime": 60}, csrf)).status_code == 201
    full = await post(client, path, {}, csrf)
    assert full.status_code == 429 and full.json()["code"] == "limit"
    # A revoked link makes room again, and goes when the next one is made: making and
    # revoking in a loop leaves no more rows than the cap.
    await post(client, f"{path}{default['id']}/revoke/", {}, csrf)
    for _ in range(5):
        link = (await post(client, path, {}, csrf)).json()
        await post(client, f"{path}{link['id']}/revoke/", {}, csrf)
    assert await Share.objects.filter(job_id=state["id"]).acount() == 3
    assert (await post(client, path, {}, csrf)).status_code == 201


async def test_an_expired_link_is_dead(sharing):
    client, csrf, state = await owned_job()
    link = (await post(client, f"/api/jobs/{state['id']}/shares/", {"lifetime": 1}, csrf)).json()
    token = token_of(link["url"])
    stranger = AsyncClient()
    assert (await stranger.get(f"/shared/{token}/")).status_code == 200
    await asyncio.sleep(1.1)
    assert (await stranger.get(f"/shared/{token}/")).status_code == 404
    assert (await stranger.get(f"/api/jobs/shared/{token}/{state['id']}/")).status_code == 404
    assert not await asyncio.to_thread(still_holds, ShareGrant(link["id"]))
    # Listed no more: the owner sees the links that work.
    assert (await client.get(f"/api/jobs/{state['id']}/shares/")).json()["shares"] == []


async def test_the_python_api_shares_lists_and_revokes(sharing):
    client, _, state = await owned_job()
    handle = await aget_job(f"session:{client.cookies['sessionid'].value}", state["id"])
    link = await handle.ashare(120)
    assert link.token is not None and link.path == f"/shared/{link.token}/"
    assert [each.id for each in await handle.ashares()] == [link.id]
    assert (await handle.ashares())[0].token is None
    revoked = await handle.arevoke_share(link.id)
    assert revoked.revoked_at is not None
    assert await handle.ashares() == []
    with pytest.raises(BadRequest):
        await handle.arevoke_share("nope")
    stranger = await aget_job(f"session:{client.cookies['sessionid'].value}", state["id"])
    stranger.owner = "user:999"
    with pytest.raises(JobNotFound):
        await stranger.ashare()
    with pytest.raises(NotFound):
        await handle.arevoke_share(str(uuid.uuid4()))


async def test_a_viewer_sees_progress_not_output(sharing):
    _, _, state = await owned_job()
    job = await Job.objects.aget(pk=state["id"])
    job.error, job.parent_id = "row 3: alice@example.com is taken", None
    full = job_state(job)
    shown = viewer_state(full)
    kept = ("id", "kind", "status", "percent", "message", "stages", "seq", "eta_s", "finished_at")
    assert all(shown[name] == full[name] for name in kept)  # type: ignore[literal-required]
    assert shown["error"] == "" and shown["result"] is None and shown["files"] == []
    frame = encode({"type": "job", "job": full})
    assert "alice@example.com" not in viewer_frame(frame)
    assert viewer_frame(encode({"type": "log", "job": state["id"], "lines": []})) == ""


def test_a_default_lifetime_past_the_maximum_is_refused(settings):
    settings.LIVEPROGRESS = {"SHARE_LIFETIME": 10, "SHARE_MAX_LIFETIME": 5}
    with pytest.raises(ImproperlyConfigured, match="SHARE_LIFETIME"):
        conf.get("SHARE_LINKS")


@pytest.mark.parametrize(
    "token",
    [
        "x",
        "A" * 42,
        "A" * 44,
        "A" * 42 + "=",
        "A" * 42 + "%C3%A9",
        "%2E%2E",
        "' OR 1=1 --",
        "é" * 43,
    ],
)
async def test_a_malformed_link_answers_the_404_of_a_missing_one(sharing, token):
    _, _, state = await owned_job()
    stranger = AsyncClient()
    for path in (
        f"/api/jobs/shared/{token}/{state['id']}/",
        f"/api/jobs/shared/{token}/{state['id']}/events/",
    ):
        answer = await stranger.get(path)
        assert answer.status_code == 404, (path, answer.content)
        assert answer.json()["code"] == "not_found"
    assert (await stranger.get(f"/shared/{token}/")).status_code == 404
    assert "sessionid" not in stranger.cookies


async def test_staff_revoke_links_in_the_admin(sharing):
    client, csrf, state = await owned_job()
    link = (await post(client, f"/api/jobs/{state['id']}/shares/", {}, csrf)).json()
    admin_user = await get_user_model().objects.acreate_superuser("root", "root@example.com")
    staff = AsyncClient()
    await staff.aforce_login(admin_user)
    listing = (await staff.get("/admin/liveprogress/share/")).content.decode()
    assert link["id"] in listing
    row = await Share.objects.aget(pk=link["id"])
    assert row.token_digest not in listing
    response = await staff.post(
        "/admin/liveprogress/share/",
        {"action": "revoke_links", "_selected_action": [link["id"]]},
    )
    assert response.status_code == 302
    assert not await Share.objects.alive().filter(pk=link["id"]).aexists()
    token = link["url"].rstrip("/").rsplit("/", 1)[-1]
    assert (await AsyncClient().get(f"/shared/{token}/")).status_code == 404
