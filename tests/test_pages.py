"""The pages, the template tag, the translations and the admin, over Django's test client.

What a browser does with them is in test_browser.py; here: what the server
renders, that it is the visitor's own, escaped, self-hosted and translated.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore
from django.core.exceptions import ImproperlyConfigured
from django.template import Context, Template
from django.test import AsyncClient
from django.utils import translation

from liveprogress import actions
from liveprogress.handles import JobHandle
from liveprogress.models import Job, Status
from liveprogress.owner import display_owner, session_owner
from liveprogress.state import job_state

ROOT = Path(__file__).resolve().parent.parent
#: The library's catalogs, and the demo site's own.
CATALOGS = [
    ROOT / "src" / "liveprogress" / "locale" / "es" / "LC_MESSAGES" / "django.po",
    ROOT / "src" / "liveprogress" / "locale" / "es" / "LC_MESSAGES" / "djangojs.po",
    ROOT / "proyecto" / "demo" / "locale" / "es" / "LC_MESSAGES" / "django.po",
]


async def visitor() -> tuple[AsyncClient, str]:
    """A new visitor (the site's default language, Spanish) and its owner key."""
    client = AsyncClient()
    response = await client.get("/jobs/")
    assert response.status_code == 200
    return client, session_owner(client.cookies["sessionid"].value)


def render(source: str, **context: object) -> str:
    """``source`` rendered for the viewer ``session:x`` unless the context says otherwise."""
    context.setdefault("liveprogress_viewer", "session:x")
    with translation.override("en"):
        return Template("{% load liveprogress %}" + source).render(Context(context))


def job_ids(html: str) -> list[str]:
    return re.findall(r'data-lp-job="([0-9a-f-]+)"', html)


async def wait_until_ended(job: Job) -> None:
    async with asyncio.timeout(10):
        while (await Job.objects.aget(pk=job.pk)).is_active:
            await asyncio.sleep(0.02)


async def test_the_jobs_page_lists_the_visitor_s_jobs_newest_first_and_nobody_else_s(runtime):
    alice, alice_owner = await visitor()
    mallory, mallory_owner = await visitor()
    first = await actions.start_job(alice_owner, "tests.sync_steps", {"steps": 1})
    second = await actions.start_job(alice_owner, "tests.fail")
    theirs = await actions.start_job(mallory_owner, "tests.sync_steps", {"steps": 1})
    for job in (first, second, theirs):
        await wait_until_ended(job)

    page = (await alice.get("/jobs/")).content.decode()
    assert job_ids(page) == [str(second.id), str(first.id)]
    assert 'data-status="failed"' in page and 'data-status="succeeded"' in page
    assert str(theirs.id) not in page
    # The row template for jobs that start later, and the titles it needs.
    assert '<template id="lp-job-template">' in page
    assert '"demo.timer": "Proceso temporizado"' in page
    assert job_ids((await mallory.get("/jobs/")).content.decode()) == [str(theirs.id)]
    # A first visit has no jobs, and says so.
    newcomer = (await AsyncClient().get("/jobs/")).content.decode()
    assert job_ids(newcomer) == [] and 'class="lp-empty">' in newcomer
    redirect = await alice.get("/jobs?x=1")
    assert redirect.status_code == 301 and redirect["Location"] == "/jobs/?x=1"


async def test_the_progress_page_takes_its_parameters_from_the_query_when_valid(runtime):
    client = AsyncClient()
    page = (await client.get("/progress/?steps=3&interval=0.5")).content.decode()
    assert re.search(r'name="steps" value="3"', page)
    assert re.search(r'name="interval" value="0.5"', page)
    # Bounds come from the job's signature.
    assert 'min="1"' in page and 'max="10000"' in page and 'max="60"' in page
    # Out of bounds or not a number: the defaults, never an error page.
    page = (await client.get("/progress/?steps=0&interval=abc")).content.decode()
    assert 'name="steps" value="10"' in page and 'name="interval" value="1.0"' in page
    # Spanish numbers stay machine-readable in the inputs (no decimal comma).
    page = await client.get("/progress/?interval=0.5", headers={"Accept-Language": "es"})
    assert 'name="interval" value="0.5"' in page.content.decode()
    redirect = await client.get("/progress?steps=3")
    assert redirect.status_code == 301 and redirect["Location"] == "/progress/?steps=3"


async def test_with_no_engine_set_up_the_progress_page_has_no_engine_switch(runtime, settings):
    settings.DEMO_ENGINES = []
    page = (await AsyncClient().get("/progress/?engine=celery")).content.decode()
    assert "<select" not in page and 'name="engine"' not in page
    assert "/api/engines/" not in page and "celery" not in page.lower()


async def test_the_progress_page_offers_each_engine_set_up_beside_its_own_runner(runtime, settings):
    settings.DEMO_ENGINES = ["celery"]
    client = AsyncClient()
    page = (await client.get("/progress/", headers={"Accept-Language": "en"})).content.decode()
    switch = re.search(r"<label>Run it on\s*<select name=\"engine\">(.*?)</select>", page, re.S)
    assert switch, page
    options = re.findall(r"<option ([^>]*)>([^<]*)</option>", switch[1])
    # liveprogress's own runner first, chosen: the page starts as it always did.
    assert [label for _, label in options] == ["liveprogress's own runner", "Celery"]
    assert options[0][0] == 'value=""'
    assert 'data-kind="celery:demo.timer"' in options[1][0]
    assert 'data-url="/api/engines/celery/"' in options[1][0]
    assert "selected" not in switch[1]
    # The bar's title says which engine runs the job, in the page's language.
    assert '"celery:demo.timer": "Timed process on Celery"' in page
    spanish = (await client.get("/progress/", headers={"Accept-Language": "es"})).content.decode()
    assert "Ejecutarlo en" in spanish and "Ejecutor propio de liveprogress" in spanish
    assert '"celery:demo.timer": "Proceso temporizado en Celery"' in spanish
    # ?engine= chooses one set up on this site, and nothing else.
    chosen = (await client.get("/progress/?engine=celery")).content.decode()
    assert re.search(r'<option value="celery"[^>]* selected>', chosen)
    unknown = (await client.get("/progress/?engine=rq")).content.decode()
    assert " selected>" not in unknown


def test_the_bar_tag_renders_an_accessible_bar_for_a_job(db):
    job = Job(
        kind="demo.timer",
        owner="session:x",
        status=Status.RUNNING,
        current=3,
        total=8,
        message="<b>step</b> & more",
    )
    html = render("{% liveprogress_bar job %}", job=job)
    assert f'data-lp-job="{job.id}"' in html and 'data-status="running"' in html
    assert 'role="progressbar"' in html
    assert 'aria-valuemin="0"' in html and 'aria-valuemax="100"' in html
    assert 'aria-valuenow="37"' in html  # 37.5 %, rounded down like the script
    assert "width: 37.5%" in html
    assert 'aria-label="Timed process"' in html
    # A job's message is text, never markup.
    assert "&lt;b&gt;step&lt;/b&gt; &amp; more" in html and "<b>step" not in html
    assert "lp-cancel" in html and "hidden" not in html.split("lp-cancel")[1].split(">")[0]

    # From its handle too; an unknown total is an indeterminate bar without a value.
    job.total = None
    html = render("{% liveprogress_bar handle cancel=False %}", handle=JobHandle.of(job))
    assert "lp-indeterminate" in html and "aria-valuenow" not in html
    assert "lp-cancel" not in html
    # An ended job's Cancel is hidden, its status named.
    job.status = Status.INTERRUPTED
    html = render("{% liveprogress_bar job %}", job=job)
    assert 'data-status="interrupted"' in html and ">Interrupted<" in html
    assert re.search(r'class="lp-cancel" hidden', html)


def test_the_bar_tag_renders_nothing_of_a_stranger_s_job(db, rf):
    job = Job(kind="demo.timer", owner="session:x", message="secret plan")
    assert render("{% liveprogress_bar job %}", job=job, liveprogress_viewer="session:y") == ""
    assert render("{% liveprogress_bar job %}", job=job, liveprogress_viewer=None) == ""
    # The viewer from the request: its user, else its session (none is made up).
    request = rf.get("/")
    request.user = AnonymousUser()
    request.session = SessionStore()
    bar = Template("{% load liveprogress %}{% liveprogress_bar job %}")

    def seen() -> str:
        return bar.render(Context({"request": request, "job": job}))

    assert seen() == ""
    request.session = SessionStore(session_key="x" * 32)
    job.owner = f"session:{'x' * 32}"
    assert "secret plan" in seen()
    user = get_user_model().objects.create_user("viewer")
    request.user = user
    assert seen() == ""
    job.owner = f"user:{user.pk}"
    assert "secret plan" in seen()


def test_the_bar_tag_says_what_it_needs(db):
    job = Job(kind="demo.timer", owner="session:x")
    with translation.override("en"), pytest.raises(ImproperlyConfigured, match="request"):
        Template("{% load liveprogress %}{% liveprogress_bar job %}").render(Context({"job": job}))
    with pytest.raises(TypeError, match="Job or a JobHandle"):
        render("{% liveprogress_bar state %}", state=job_state(job))


def test_the_assets_tag_serves_everything_from_the_site_itself(db):
    html = render("{% liveprogress_assets %}")
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls == [
        "/static/liveprogress/liveprogress.css",
        "/liveprogress/jsi18n/",
        "/static/liveprogress/liveprogress-client.js",
        "/static/liveprogress/liveprogress-widgets.js",
    ]
    # The client first (it defines LiveProgress), then the widgets, which autowire.
    assert re.search(r'liveprogress-widgets\.js" data-autowire>', html)
    assert html.count("data-autowire") == 1
    assert "data-autowire" not in render("{% liveprogress_assets autowire=False %}")
    assert re.search(r'<meta name="liveprogress-now" content="\d+\.\d+">', html)


@pytest.mark.parametrize("path", ["/progress/", "/htmx/", "/jobs/"])
async def test_pages_load_nothing_from_elsewhere(runtime, path):
    page = (await AsyncClient().get(path)).content.decode()
    for url in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert url.startswith(("/", "#", "data:")) and not url.startswith("//"), url
    assert "<script>" not in page.replace('<script id="lp-titles"', "")


async def test_the_script_translations_follow_the_browser_s_language(runtime):
    spanish = await AsyncClient().get("/liveprogress/jsi18n/", headers={"Accept-Language": "es"})
    assert spanish.status_code == 200
    text = spanish.content.decode()
    for translated in ("Reconectando", "quedan unos %(time)s", "Interrumpido"):
        assert translated in text
    english = await AsyncClient().get("/liveprogress/jsi18n/", headers={"Accept-Language": "en"})
    assert "Reconectando" not in english.content.decode()


@pytest.mark.parametrize("po", CATALOGS, ids=lambda po: str(po.relative_to(ROOT)))
def test_the_spanish_catalogs_are_complete_and_compiled(po):
    msgfmt = shutil.which("msgfmt")
    if msgfmt is None:
        pytest.skip("msgfmt (gettext) is not installed")
    checked = subprocess.run(
        [msgfmt, "--check", "--statistics", "-o", "-", str(po)],
        capture_output=True,
        check=True,
    )
    statistics = checked.stderr.decode()
    assert "untranslated" not in statistics and "fuzzy" not in statistics, statistics
    # The committed .mo is what the .po compiles to.
    assert po.with_suffix(".mo").read_bytes() == checked.stdout


async def test_the_admin_lists_jobs_and_cancels_the_selected_ones(runtime):
    admin = await get_user_model().objects.acreate_superuser("root", "root@example.com")
    client = AsyncClient()
    await client.aforce_login(admin)
    running = await actions.start_job("session:a", "tests.ignores_cancel_checks", {"steps": 10**6})
    done = await actions.start_job("session:b", "tests.sync_steps", {"steps": 1})
    await wait_until_ended(done)

    listing = (await client.get("/admin/liveprogress/job/?status__exact=running")).content.decode()
    assert str(running.id) in listing and str(done.id) not in listing
    for column in ("column-kind", "column-owner_shown", "column-status", "column-progress"):
        assert column in listing
    # A session key is a live cookie: staff see a digest that tells sessions apart.
    assert "session:a" not in listing and display_owner("session:a") in listing
    detail = await client.get(f"/admin/liveprogress/job/{running.pk}/change/")
    assert "session:a" not in detail.content.decode()
    assert display_owner("session:a") in detail.content.decode()

    response = await client.post(
        "/admin/liveprogress/job/",
        {"action": "cancel_jobs", "_selected_action": [str(running.id), str(done.id)]},
        follow=True,
        headers={"Accept-Language": "en"},
    )
    assert response.status_code == 200
    text = response.content.decode()
    assert "Cancel requested for 1 job." in text
    assert "1 job had already ended." in text
    await wait_until_ended(running)
    assert (await Job.objects.aget(pk=running.pk)).status == Status.CANCELLED
    assert (await Job.objects.aget(pk=done.pk)).status == Status.SUCCEEDED

    # A job's page shows its kept log lines.
    logged = await actions.start_job("session:a", "tests.logger", {"lines": 2})
    await wait_until_ended(logged)
    change = await client.get(f"/admin/liveprogress/job/{logged.id}/change/")
    assert change.status_code == 200
    assert "line 1" in change.content.decode() and "line 2" in change.content.decode()

    # Not for someone without the permission to change jobs.
    staff = await get_user_model().objects.acreate_user("staff", is_staff=True)
    await client.aforce_login(staff)
    assert (await client.get("/admin/liveprogress/job/")).status_code == 403


def test_the_bar_tag_shows_stages_and_files(db):
    job = Job(
        kind="demo.timer",
        owner="session:x",
        status=Status.SUCCEEDED,
        stages=[
            {"name": "Read", "weight": 1.0, "status": "done", "fraction": 1.0},
            {"name": "<Work>", "weight": 3.0, "status": "running", "fraction": 0.5},
        ],
        files=[{"name": "out.csv", "size": 2048, "content_type": "text/csv"}],
    )
    html = render("{% liveprogress_bar job %}", job=job)
    assert re.search(r'<li data-status="done">Read</li>', html)
    assert '<li data-status="running" aria-current="step">&lt;Work&gt;</li>' in html
    assert f'<a href="/api/jobs/{job.id}/files/out.csv" download>out.csv</a>' in html
    assert "2.0\xa0KB" in html
    # Without stages or files, their lists are there (for the script) but hidden.
    html = render("{% liveprogress_bar job %}", job=Job(kind="demo.timer", owner="session:x"))
    assert re.search(r'class="lp-stages"[^>]*hidden', html)
    assert re.search(r'class="lp-files"[^>]*hidden', html)


async def test_the_import_page_offers_the_upload_form(runtime):
    page = (await AsyncClient().get("/import/", headers={"Accept-Language": "en"})).content.decode()
    assert 'action="/api/imports/"' in page and 'enctype="multipart/form-data"' in page
    assert 'name="csrfmiddlewaretoken"' in page and 'type="file" name="file"' in page
    assert "at most 2.0\xa0MB" in page
    assert 'id="lp-import-log"' in page
