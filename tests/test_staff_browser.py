"""The staff view in a real browser (Debian's headless Chromium through Playwright),
in English and in Spanish: a staff member signs in through the login page, sees
another user's jobs live, a new one appear, cancels one, and is told when the
session ends. Screenshots land in ``test-output/browser/``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.accounts import PASSWORD, manage, sign_in
from tests.servers import DaphneServer, Visitor, start_timer
from tests.test_browser import Shots

pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.integration, pytest.mark.browser]

WAIT_MS = 15_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaphneServer]:
    db = tmp_path_factory.mktemp("staff-browser") / "staff.sqlite3"
    env = {"DJANGO_SETTINGS_MODULE": "tests.staff_settings"}
    settings = {"RECONCILE_INTERVAL": 0.5, "SESSION_CHECK_INTERVAL": 1.0}
    with DaphneServer(db, env, liveprogress=settings) as running:
        users = {
            "root": {
                "password": PASSWORD,
                "permissions": ["liveprogress.view_all_jobs", "liveprogress.cancel_any_job"],
            },
            "alice": {"password": PASSWORD},
        }
        manage(running, {"users": users})
        yield running


@pytest.mark.parametrize(
    ("locale", "heading", "cancelled", "live", "ended"),
    [
        ("en-US", "Every job", "Cancelled", "Live (Server-Sent Events)", "Your session has ended"),
        ("es-ES", "Todos los trabajos", "Cancelado", "En vivo (Server-Sent Events)", "Tu sesión"),
    ],
    ids=["en", "es"],
)
def test_the_staff_page_follows_other_users_jobs_live_and_cancels_one(
    browser: Any,
    server: DaphneServer,
    locale: str,
    heading: str,
    cancelled: str,
    live: str,
    ended: str,
    request: pytest.FixtureRequest,
) -> None:
    shots = Shots(request.node.name)
    alice = Visitor(server)
    sign_in(alice, "alice")
    first = start_timer(alice, 2000, 0.05)

    context = browser.new_context(locale=locale, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(server.url("/accounts/login/?next=/jobs/staff/%3Fstatus%3Dactive"))
    page.fill("input[name=username]", "root")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/jobs/staff/?status=active")
    assert page.locator("h1").inner_text() == heading
    assert page.get_attribute("html", "lang") == locale[:2]
    # The filter form says what it shows, and the navigation leads here.
    assert page.locator("select[name=status]").input_value() == "active"
    assert page.locator('nav a[aria-current="page"]').inner_text() == heading

    row = f'tr[data-job="{first["id"]}"]'
    page.wait_for_selector(row)
    page.wait_for_function(
        "() => document.querySelector('[data-lp-connection]').dataset.state === 'live'",
        timeout=WAIT_MS,
    )
    assert page.locator("[data-lp-connection]").inner_text() == live
    seq = int(page.get_attribute(row, "data-seq") or 0)
    page.wait_for_function(
        f"() => Number(document.querySelector('{row}').dataset.seq) > {seq}", timeout=WAIT_MS
    )
    shots.take(page, "live")

    # A job started now appears without a reload.
    second = start_timer(alice, 2000, 0.05)
    page.wait_for_selector(f'tr[data-job="{second["id"]}"]', timeout=WAIT_MS)

    page.click(f"{row} .lp-staff-cancel")
    page.wait_for_function(
        f"() => document.querySelector('{row}').dataset.status === 'cancelled'", timeout=WAIT_MS
    )
    assert page.locator(f"{row} .lp-staff-status").inner_text() == cancelled
    assert page.locator(f"{row} .lp-staff-cancelled").inner_text().startswith("staff:")
    assert page.locator(f"{row} .lp-staff-cancel").is_hidden()
    assert alice.get(f"/api/jobs/{first['id']}/")[1]["status"] == "cancelled"
    shots.take(page, "cancelled")

    # Signing out elsewhere (another tab of the same browser) ends the feed here.
    other = context.new_page()
    other.goto(server.url("/jobs/"))
    other.evaluate(
        """() => fetch("/accounts/logout/", {method: "POST", headers: {"X-CSRFToken":
        document.cookie.split("; ").find((c) => c.startsWith("csrftoken=")).split("=")[1]}})"""
    )
    page.wait_for_function(
        f"() => document.querySelector('.lp-staff-notice').textContent.startsWith({ended!r})",
        timeout=WAIT_MS,
    )
    assert page.locator("[data-lp-connection]").get_attribute("data-state") == "down"
    shots.take(page, "signed-out")
    context.close()
    alice.post_json(f"/api/jobs/{second['id']}/cancel/")


def test_someone_without_the_permission_finds_no_staff_page(browser: Any, server: DaphneServer):
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    alice = Visitor(server)
    sign_in(alice, "alice")
    context.add_cookies(
        [{"name": "sessionid", "value": alice.cookie("sessionid") or "", "url": server.origin}]
    )
    response = page.goto(server.url("/jobs/staff/"))
    assert response is not None and response.status == 404
    page.goto(server.url("/jobs/"))
    assert page.locator("nav a", has_text="Every job").count() == 0
    context.close()
