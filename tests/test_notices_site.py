"""Email me when it ends, end to end: a signed-in user ticks the pages' checkbox in
Chromium, a real Daphne server runs the job and emails once through its console
backend (read from the server's output); a visitor is offered nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from email import message_from_string, policy
from email.message import EmailMessage
from typing import Any

import pytest

from .servers import REPO_ROOT, DaphneServer
from .test_browser import api, card_status

pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.integration, pytest.mark.browser]

SITE = "https://example.test"
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaphneServer]:
    db = tmp_path_factory.mktemp("notices") / "notices.sqlite3"
    settings = {"JOB_MODULES": ["tests.jobs"], "EMAIL_NOTICES": True, "SITE_URL": SITE}
    env = {"DJANGO_EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}
    with DaphneServer(db, env, liveprogress=settings) as running:
        create = (
            "from django.contrib.auth.models import User; "
            # Staff: the demo's only sign-in is the admin's.
            "User.objects.create_user('ana', 'ana@example.test', 'pw-Secret-1', is_staff=True)"
        )
        manage = [sys.executable, str(REPO_ROOT / "manage.py"), "shell", "-c", create]
        subprocess.run(manage, env=running.env, check=True, timeout=60, capture_output=True)  # noqa: S603
        yield running


def signed_in(browser: Any, server: DaphneServer) -> Any:
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    page.goto(server.url("/admin/login/?next=/jobs/"))
    page.fill("#id_username", "ana")
    page.fill("#id_password", "pw-Secret-1")
    page.click("input[type=submit]")
    page.wait_for_url(server.url("/jobs/"))
    return context


def printed_emails(server: DaphneServer) -> list[EmailMessage]:
    """The emails the server's console backend printed so far, parsed."""
    found = []
    for chunk in server.log_text().split("-" * 79):
        start = chunk.find("Content-Type: ")
        if start != -1 and "\nTo: " in chunk:
            found.append(message_from_string(chunk[start:].lstrip(), policy=policy.default))
    return found  # type: ignore[return-value]


def emails_linking(server: DaphneServer, link: str, timeout: float = 20) -> list[EmailMessage]:
    """The printed emails whose body links to ``link``, once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [
            email
            for email in printed_emails(server)
            if link in email.get_body().get_content()  # type: ignore[union-attr]
        ]
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no email with {link}:\n{server.log_text()[-3000:]}")


def test_the_progress_page_emails_once_when_asked(browser, server):
    context = signed_in(browser, server)
    try:
        page = context.new_page()
        page.goto(server.url("/progress/?steps=30&interval=0.1"))
        card_status(page, "running")
        job_id = page.get_attribute("#lp-demo", "data-job")
        page.check("#lp-demo-email")
        page.wait_for_selector("#lp-demo-email:checked:not([disabled])", timeout=WAIT_MS)
        assert api(context, server, "GET", f"/api/jobs/{job_id}/notify/")[1]["email"] is True
        card_status(page, "succeeded")
        link = f"{SITE}/jobs/#job-{job_id}"
        [email] = emails_linking(server, link)
        assert email["To"] == "ana@example.test"
        assert email["Subject"] == "“Timed process”: succeeded"
        assert "Your job “Timed process” has ended.\n\nCompleted." in email.get_body().get_content()
        time.sleep(2.5)  # another look of every courier: still one
        assert len(emails_linking(server, link)) == 1
    finally:
        context.close()


def test_the_jobs_page_asks_for_a_running_job_and_takes_it_back(browser, server):
    context = signed_in(browser, server)
    try:
        status, state = api(
            context, server, "POST", "/api/jobs/", {"kind": "demo.timer", "params": {"steps": 600}}
        )
        assert status == 201, state
        page = context.new_page()
        page.goto(server.url("/jobs/"))
        box = f'[data-lp-job="{state["id"]}"] .lp-email input'
        page.check(box)
        page.wait_for_selector(f"{box}:checked:not([disabled])", timeout=WAIT_MS)
        assert api(context, server, "GET", f"/api/jobs/{state['id']}/notify/")[1]["email"] is True
        page.uncheck(box)
        page.wait_for_selector(f"{box}:not(:checked):not([disabled])", timeout=WAIT_MS)
        assert api(context, server, "GET", f"/api/jobs/{state['id']}/notify/")[1]["email"] is False
        page.check(box)
        page.wait_for_selector(f"{box}:checked:not([disabled])", timeout=WAIT_MS)
        api(context, server, "POST", f"/api/jobs/{state['id']}/cancel/")
        # Ended: the box goes, and the email says how.
        page.wait_for_selector(
            f'[data-lp-job="{state["id"]}"] .lp-email[hidden]', state="attached", timeout=WAIT_MS
        )
        [email] = emails_linking(server, f"{SITE}/jobs/#job-{state['id']}")
        # In the job's language: its start (an API call, no Accept-Language) was Spanish.
        assert email["Subject"] == "«Proceso temporizado»: cancelado"
        assert "Cancelado: se detuvo a petición." in email.get_body().get_content()
    finally:
        context.close()


def test_a_visitor_is_offered_no_email(browser, server):
    context = browser.new_context(locale="en-US")
    try:
        page = context.new_page()
        page.goto(server.url("/progress/?steps=2&interval=0.1"))
        card_status(page, "succeeded")
        assert page.query_selector("#lp-demo-email") is None
        page.goto(server.url("/jobs/"))
        page.wait_for_selector("[data-lp-job]", timeout=WAIT_MS)
        assert page.query_selector(".lp-email") is None
    finally:
        context.close()
