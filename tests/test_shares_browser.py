"""Share links in a real browser (Debian's headless Chromium through Playwright), in
English and in Spanish: the owner's Share button on ``/jobs/`` and on ``/progress/``
makes a link; a second browser (another context: no cookies of the owner's)
opens it and sees the bar move, with no Cancel, and is told when the owner
revokes it. Screenshots land in ``test-output/browser/``."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.servers import DaphneServer
from tests.test_browser import Shots, api

pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.integration, pytest.mark.browser]

WAIT_MS = 15_000

TEXTS = {
    "en-US": {
        "share": "Share",
        "made": "Link made",
        "heading": "A job shared with you",
        "live": "Live (Server-Sent Events)",
        "ended": "This link no longer works",
        "revoked": "Link revoked",
        "done": "Completed.",
        "not_live": "Not live any more",
    },
    "es-ES": {
        "share": "Compartir",
        "made": "Enlace creado",
        "heading": "Un trabajo compartido contigo",
        "live": "En vivo (Server-Sent Events)",
        "ended": "Este enlace ya no funciona",
        "revoked": "Enlace revocado",
        "done": "Completado.",
        "not_live": "Ya no está en vivo",
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaphneServer]:
    db = tmp_path_factory.mktemp("shares-browser") / "shares.sqlite3"
    settings = {"SESSION_CHECK_INTERVAL": 1.0, "RECONCILE_INTERVAL": 0.5}
    with DaphneServer(db, liveprogress=settings) as running:
        yield running


def make_link(page: Any, bar: str, texts: dict[str, str]) -> str:
    """Open ``bar``'s share panel, make a link; the link."""
    toggle = page.locator(f"{bar} .lp-share-toggle")
    toggle.wait_for(state="visible", timeout=WAIT_MS)
    assert toggle.inner_text().startswith(texts["share"])
    assert toggle.get_attribute("aria-expanded") == "false"
    toggle.click()
    assert toggle.get_attribute("aria-expanded") == "true"
    panel = page.locator(f"{bar} .lp-share-panel")
    assert panel.is_visible()
    page.click(f"{bar} .lp-share-make")
    page.wait_for_function(
        f"() => document.querySelector('{bar} .lp-share-url').value.includes('/shared/')",
        timeout=WAIT_MS,
    )
    assert page.locator(f"{bar} .lp-share-status").inner_text().startswith(texts["made"])
    page.wait_for_selector(f"{bar} .lp-share-list li .lp-share-revoke", timeout=WAIT_MS)
    return page.locator(f"{bar} .lp-share-url").input_value()


def share_a_running_job(
    owner: Any, server: DaphneServer, texts: dict[str, str]
) -> tuple[Any, dict[str, Any], str, str]:
    """On the owner's /jobs/ page: a long timed job started and a link made to it;
    the page, the job, its bar's selector and the link."""
    page = owner.new_page()
    page.goto(server.url("/jobs/"))
    status, job = api(
        owner,
        server,
        "POST",
        "/api/jobs/",
        {"kind": "demo.timer", "params": {"steps": 400, "interval": 0.05}},
    )
    assert status == 201, job
    bar = f'.lp-job[data-lp-job="{job["id"]}"]'
    page.wait_for_selector(bar, timeout=WAIT_MS)
    return page, job, bar, make_link(page, bar, texts)


def watch(stranger: Any, link: str, texts: dict[str, str]) -> Any:
    """The link opened in the stranger's browser, its bar seen moving."""
    page = stranger.new_page()
    page.goto(link)
    assert page.locator("h1").inner_text() == texts["heading"]
    bar = "#lp-shared .lp-job"
    assert page.locator(f"{bar} .lp-cancel").count() == 0
    assert page.locator(f"{bar} .lp-pause").count() == 0
    assert page.locator(".lp-share-toggle").count() == 0
    page.wait_for_function(
        "() => document.querySelector('[data-lp-connection]').dataset.state === 'live'",
        timeout=WAIT_MS,
    )
    assert page.locator("[data-lp-connection]").inner_text() == texts["live"]
    start = int(page.get_attribute(f"{bar} .lp-bar", "aria-valuenow") or 0)
    page.wait_for_function(
        f"() => Number(document.querySelector('{bar} .lp-bar')"
        f".getAttribute('aria-valuenow')) > {start}",
        timeout=WAIT_MS,
    )
    return page


@pytest.mark.parametrize("locale", ["en-US", "es-ES"], ids=["en", "es"])
def test_a_link_made_on_the_jobs_page_shows_the_bar_live_until_it_is_revoked(
    browser: Any, server: DaphneServer, locale: str, request: pytest.FixtureRequest
) -> None:
    texts = TEXTS[locale]
    shots = Shots(request.node.name)
    owner = browser.new_context(locale=locale, viewport={"width": 1024, "height": 900})
    page, job, bar, link = share_a_running_job(owner, server, texts)
    shots.take(page, "link-made")

    stranger = browser.new_context(locale=locale, viewport={"width": 390, "height": 844})
    shared = watch(stranger, link, texts)
    # The stranger has no session, and was given none.
    assert stranger.cookies() == []
    shots.take(shared, "watching")

    page.click(f"{bar} .lp-share-revoke")
    page.wait_for_function(
        f"() => document.querySelector('{bar} .lp-share-status').textContent"
        f".startsWith({texts['revoked']!r})",
        timeout=WAIT_MS,
    )
    shared.wait_for_selector(".lp-shared-ended", state="visible", timeout=WAIT_MS)
    assert shared.locator(".lp-shared-ended").inner_text().startswith(texts["ended"])
    assert shared.locator("[data-lp-connection]").get_attribute("data-state") == "down"
    assert shared.locator("[data-lp-connection]").inner_text() == texts["not_live"]
    shots.take(shared, "revoked")
    assert api(owner, server, "GET", f"/api/jobs/{job['id']}/")[1]["status"] == "running"
    api(owner, server, "POST", f"/api/jobs/{job['id']}/cancel/")
    stranger.close()
    owner.close()


@pytest.mark.parametrize("locale", ["en-US", "es-ES"], ids=["en", "es"])
def test_a_link_made_on_the_progress_page_follows_the_timed_process_to_its_end(
    browser: Any, server: DaphneServer, locale: str, request: pytest.FixtureRequest
) -> None:
    texts = TEXTS[locale]
    shots = Shots(request.node.name)
    owner = browser.new_context(locale=locale, viewport={"width": 1024, "height": 900})
    page = owner.new_page()
    page.goto(server.url("/progress/?steps=40&interval=0.2"))
    page.wait_for_selector("#lp-demo[data-job]", timeout=WAIT_MS)
    link = make_link(page, "#lp-demo .lp-job", texts)
    shots.take(page, "link-made")

    stranger = browser.new_context(locale=locale, viewport={"width": 390, "height": 844})
    shared = watch(stranger, link, texts)
    shared.wait_for_selector(
        '#lp-shared .lp-job[data-status="succeeded"]', timeout=WAIT_MS + 10_000
    )
    assert shared.locator("#lp-shared .lp-outcome").inner_text() == texts["done"]
    assert shared.get_attribute("#lp-shared .lp-bar", "aria-valuenow") == "100"
    # What the job made stays the owner's.
    assert shared.locator("#lp-shared .lp-files li").count() == 0
    assert stranger.cookies() == []
    shots.take(shared, "ended")
    stranger.close()
    owner.close()


def test_a_link_made_on_the_import_page_shows_its_stages_but_not_its_file_or_log(
    browser: Any, server: DaphneServer, request: pytest.FixtureRequest
) -> None:
    texts = TEXTS["en-US"]
    shots = Shots(request.node.name)
    owner = browser.new_context(locale="en-US", viewport={"width": 1024, "height": 900})
    page = owner.new_page()
    page.goto(server.url("/import/"))
    rows = b"name,email,city\r\n" + b"".join(
        f"Row{n},row{n}@example.com,Lugo\r\n".encode() for n in range(500)
    )
    page.set_input_files(
        "#lp-upload input[type=file]",
        files=[{"name": "people.csv", "mimeType": "text/csv", "buffer": rows}],
    )
    page.click("#lp-upload button[type=submit]")
    page.wait_for_selector("#lp-import[data-job]", timeout=WAIT_MS)
    link = make_link(page, "#lp-import .lp-job", texts)

    stranger = browser.new_context(locale="en-US", viewport={"width": 390, "height": 844})
    shared = watch(stranger, link, texts)
    assert shared.locator("#lp-shared .lp-stages li").all_inner_texts() == [
        "Validate",
        "Import",
        "Summarise",
    ]
    shared.wait_for_selector(
        '#lp-shared .lp-job[data-status="succeeded"]', timeout=WAIT_MS + 10_000
    )
    # The owner's page offers the cleaned file; the shared one neither it nor the log.
    page.wait_for_selector("#lp-import .lp-files li a", timeout=WAIT_MS)
    assert shared.locator("#lp-shared .lp-files li").count() == 0
    assert shared.locator(".lp-log").count() == 0
    shots.take(shared, "imported")
    stranger.close()
    owner.close()


def test_a_link_revoked_while_the_viewer_is_away_ends_when_it_comes_back(
    browser: Any, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    """The revoke's broadcast finds no stream to end when the viewer's is away (a
    server restart, a network blip): the stream that comes back is refused, and the
    page asks the job why rather than go on reconnecting for ever while it shows
    "Live"."""
    texts = TEXTS["en-US"]
    shots = Shots(request.node.name)
    db = tmp_path / "away.sqlite3"
    with DaphneServer(db) as server:
        owner = browser.new_context(locale="en-US")
        _page, job, _bar, link = share_a_running_job(owner, server, texts)
        stranger = browser.new_context(locale="en-US")
        shared = watch(stranger, link, texts)

        # The server goes away with the stream; while it is away the link is revoked.
        server.kill()
        revoked_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        with closing(sqlite3.connect(db, timeout=10)) as connection, connection:
            changed = connection.execute(
                "UPDATE liveprogress_share SET revoked_at = ? WHERE job_id = ?",
                (revoked_at, job["id"].replace("-", "")),
            ).rowcount
        assert changed == 1
        server.requested_port = server.port  # back where the page looks for it
        server.start()

        shared.wait_for_selector(".lp-shared-ended", state="visible", timeout=WAIT_MS)
        assert shared.locator("[data-lp-connection]").get_attribute("data-state") == "down"
        assert shared.locator("[data-lp-connection]").inner_text() == texts["not_live"]
        shots.take(shared, "revoked-while-away")
        stranger.close()
        owner.close()
