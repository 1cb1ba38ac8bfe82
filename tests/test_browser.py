"""The pages in a real browser: Debian's headless Chromium driven by Playwright,
against a real Daphne started here (and, for /progress/'s engine switch, a real
Celery worker, Redis and PostgreSQL: test_engines.py's EngineSite).

Each test's screenshots land in ``test-output/browser/`` (one per page state).
``make test`` installs Chromium with apt-get when it is missing; the browser is
never downloaded (no network at run time).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .servers import REPO_ROOT, DaphneServer, free_port
from .test_engines import EngineSite

# The browser fixture (Debian's chromium through Playwright) is in conftest.py.
pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.integration, pytest.mark.browser]

SHOTS = REPO_ROOT / "test-output" / "browser"
WAIT_MS = 30_000
TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")

# Records every value the demo card's bar shows, from the first one on.
RECORD_BAR = """
window.__bar = [];
document.addEventListener("DOMContentLoaded", () => {
  const card = document.getElementById("lp-demo");
  if (!card) return;
  const bar = card.querySelector(".lp-bar");
  const note = () => {
    if (!card.dataset.job) return;
    window.__bar.push({job: card.dataset.job, status: card.dataset.status,
      value: Number(bar.getAttribute("aria-valuenow")),
      message: card.querySelector(".lp-message").textContent});
  };
  new MutationObserver(note).observe(card, {attributes: true, subtree: true, childList: true,
    characterData: true});
});
"""


def refused_url(scheme: str) -> str:
    """A URL on this machine where nothing listens: a connection that fails."""
    return f"{scheme}://127.0.0.1:{free_port()}/blocked"


def block_websockets() -> str:
    # As a proxy that refuses the upgrade would: every WebSocket fails to connect.
    return f"""
    (() => {{
      const Real = window.WebSocket;
      window.WebSocket = function () {{ return new Real({json.dumps(refused_url("ws"))}); }};
      Object.assign(window.WebSocket, {{CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3}});
    }})();
    """


def block_event_source() -> str:
    return f"""
    (() => {{
      const Real = window.EventSource;
      window.EventSource = function () {{ return new Real({json.dumps(refused_url("http"))}); }};
      Object.assign(window.EventSource, {{CONNECTING: 0, OPEN: 1, CLOSED: 2}});
    }})();
    """


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaphneServer]:
    db = tmp_path_factory.mktemp("browser") / "browser.sqlite3"
    with DaphneServer(db, liveprogress={"JOB_MODULES": ["tests.jobs"]}) as running:
        yield running


class Shots:
    """Screenshots of one test, named in order: test-output/browser/<test>-<n>-<state>.png."""

    def __init__(self, name: str) -> None:
        self.name = re.sub(r"[^\w.-]+", "-", name)
        self.count = 0
        SHOTS.mkdir(parents=True, exist_ok=True)
        for old in SHOTS.glob(f"{self.name}-*.png"):
            old.unlink()

    def take(self, page: Any, state: str) -> Path:
        self.count += 1
        path = SHOTS / f"{self.name}-{self.count}-{state}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Shots:
    return Shots(request.node.name)


@pytest.fixture
def visitor(browser: Any) -> Iterator[Any]:
    """A new browser profile (its own session), English, phone-sized by default."""
    context = browser.new_context(locale="en-US", viewport={"width": 390, "height": 844})
    context.add_init_script(RECORD_BAR)
    yield context
    context.close()


def card_status(page: Any, status: str, timeout: float = WAIT_MS) -> None:
    page.wait_for_selector(f'#lp-demo[data-status="{status}"]', timeout=timeout)


def bar_history(page: Any) -> list[dict[str, Any]]:
    return page.evaluate("window.__bar")


def api(context: Any, server: DaphneServer, method: str, path: str, body: Any = None) -> Any:
    """The JSON API with the page's own cookies (session, CSRF token)."""
    if method == "GET":
        response = context.request.get(server.url(path))
    else:
        token = next(c["value"] for c in context.cookies() if c["name"] == "csrftoken")
        response = context.request.post(
            server.url(path),
            data=json.dumps(body or {}),
            headers={
                "Content-Type": "application/json",
                "X-CSRFToken": token,
                "Referer": server.url("/jobs/"),
            },
        )
    return response.status, response.json()


def assert_never_went_back(history: list[dict[str, Any]]) -> None:
    values = [entry["value"] for entry in history]
    assert values == sorted(values), values


@pytest.mark.parametrize(
    ("locale", "query", "progress_text", "done_text", "done_outcome"),
    [
        # The example as it was: 10 steps of 1 s, in Spanish.
        ("es-ES", "", r"Progreso: \d+%", "¡Proceso completado!", "Completado."),
        ("en-US", "?steps=4&interval=0.3", r"Progress: \d+%", "Process completed!", "Completed."),
    ],
    ids=["es", "en"],
)
def test_progress_fills_to_100_and_says_so_in_the_browser_s_language(
    browser, server, shots, locale, query, progress_text, done_text, done_outcome
):
    context = browser.new_context(locale=locale, viewport={"width": 1024, "height": 768})
    context.add_init_script(RECORD_BAR)
    page = context.new_page()
    page.goto(server.url("/progress" + query))  # without the slash: redirected
    assert page.url == server.url("/progress/" + query)
    # The timed process starts by itself, no click.
    card_status(page, "running", timeout=10_000)
    assert page.get_attribute("html", "lang") == locale[:2]
    assert page.get_attribute("html", "data-lp-transport") == "websocket"
    page.wait_for_function(
        "Number(document.querySelector('#lp-demo .lp-bar').getAttribute('aria-valuenow')) > 0",
        timeout=WAIT_MS,
    )
    shots.take(page, "running")
    assert re.fullmatch(progress_text, page.inner_text("#lp-demo .lp-message"))

    card_status(page, "succeeded")
    shots.take(page, "succeeded")
    bar = page.locator("#lp-demo .lp-bar")
    assert bar.get_attribute("role") == "progressbar"
    assert bar.get_attribute("aria-valuenow") == "100"
    assert page.inner_text("#lp-demo .lp-percent") == "100%"
    assert page.inner_text("#lp-demo .lp-message") == done_text
    assert page.inner_text("#lp-demo .lp-outcome") == done_outcome
    assert page.is_visible("#lp-demo-form .lp-again")
    assert not page.is_visible("#lp-demo .lp-cancel")
    history = bar_history(page)
    assert len({entry["job"] for entry in history}) == 1
    assert_never_went_back(history)
    running = [e["message"] for e in history if e["status"] == "running" and e["value"] < 100]
    assert running and all(re.fullmatch(progress_text, text) for text in running), running
    context.close()


def test_the_timed_process_pauses_and_goes_on_from_its_step(browser, server, shots):
    context = browser.new_context(locale="es-ES")
    context.add_init_script(RECORD_BAR)
    page = context.new_page()
    page.goto(server.url("/progress/?steps=40&interval=0.15"))
    page.wait_for_function(
        "Number(document.querySelector('#lp-demo .lp-bar').getAttribute('aria-valuenow')) >= 10",
        timeout=WAIT_MS,
    )
    page.click("#lp-demo .lp-pause")
    card_status(page, "paused")
    assert page.text_content("#lp-demo .lp-badge") == "En pausa"
    assert page.inner_text("#lp-demo .lp-outcome").startswith("En pausa: reanúdalo")
    job_id = page.get_attribute("#lp-demo", "data-job")
    step = api(context, server, "GET", f"/api/jobs/{job_id}/")[1]["current"]
    shots.take(page, "paused")
    page.click("#lp-demo .lp-resume")
    page.wait_for_selector(
        f"#lp-demo .lp-outcome:has-text('Reanudado desde {step}.')", timeout=WAIT_MS
    )
    card_status(page, "succeeded")
    assert page.inner_text("#lp-demo .lp-message") == "¡Proceso completado!"
    # One job throughout, its bar never lower than it was.
    history = bar_history(page)
    assert {entry["job"] for entry in history} == {job_id}
    assert_never_went_back(history)
    final = api(context, server, "GET", f"/api/jobs/{job_id}/")[1]
    assert (final["resumed_from"], final["attempt"], final["current"]) == (step, 1, 40)
    context.close()


def test_a_reload_in_the_middle_resumes_the_same_job_never_lower(visitor, server, shots):
    page = visitor.new_page()
    page.goto(server.url("/progress/?steps=25&interval=0.2"))
    page.wait_for_function(
        "Number(document.querySelector('#lp-demo .lp-bar').getAttribute('aria-valuenow')) >= 20",
        timeout=WAIT_MS,
    )
    job_id = page.get_attribute("#lp-demo", "data-job")
    before = bar_history(page)[-1]["value"]
    shots.take(page, "before-reload")

    page.reload()
    page.wait_for_selector("#lp-demo[data-job]", timeout=10_000)
    assert page.get_attribute("#lp-demo", "data-job") == job_id
    after = bar_history(page)
    assert after[0]["job"] == job_id
    # The first value shown after the reload is no lower than the last one before.
    assert after[0]["value"] >= before, (before, after[:3])
    shots.take(page, "after-reload")
    card_status(page, "succeeded")
    assert_never_went_back(bar_history(page))
    # One timed process in all: the reload didn't start another.
    status, listed = api(visitor, server, "GET", "/api/jobs/")
    assert status == 200
    assert [job["id"] for job in listed["jobs"] if job["kind"] == "demo.timer"] == [job_id]


def test_cancel_ends_the_job_cancelled_on_the_page_and_on_the_server(visitor, server, shots):
    page = visitor.new_page()
    page.goto(server.url("/progress/?steps=100&interval=0.2"))
    card_status(page, "running", timeout=10_000)
    job_id = page.get_attribute("#lp-demo", "data-job")
    # Keyboard: the Cancel button takes the focus and shows it.
    cancel = page.locator("#lp-demo .lp-cancel")
    cancel.focus()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.classList.contains('lp-cancel')")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none"), outline
    shots.take(page, "running-focused")

    page.keyboard.press("Enter")
    card_status(page, "cancelled")
    shots.take(page, "cancelled")
    assert page.inner_text("#lp-demo .lp-outcome") == "Cancelled: it was stopped on request."
    assert page.inner_text("#lp-demo .lp-badge").lower() == "cancelled"
    status, stored = api(visitor, server, "GET", f"/api/jobs/{job_id}/")
    assert status == 200 and stored["status"] == "cancelled"
    assert stored["current"] < 100

    # Run again: a new job, followed from its start.
    page.fill("#lp-demo-form input[name=steps]", "3")
    page.fill("#lp-demo-form input[name=interval]", "0.2")
    page.click("#lp-demo-form .lp-again")
    page.wait_for_function(
        f"document.querySelector('#lp-demo').dataset.job !== {json.dumps(job_id)}",
        timeout=10_000,
    )
    card_status(page, "succeeded")
    new_id = page.get_attribute("#lp-demo", "data-job")
    status, stored = api(visitor, server, "GET", f"/api/jobs/{new_id}/")
    assert stored["status"] == "succeeded"
    assert stored["total"] == 3


@pytest.mark.parametrize(
    ("transport", "blocked"),
    [("sse", [block_websockets()]), ("polling", [block_websockets(), block_event_source()])],
    ids=["sse", "polling"],
)
def test_without_websockets_progress_still_arrives(visitor, server, shots, transport, blocked):
    for script in blocked:
        visitor.add_init_script(script)
    page = visitor.new_page()
    page.goto(server.url("/progress/?steps=6&interval=0.6"))
    card_status(page, "running", timeout=15_000)
    assert page.get_attribute("html", "data-lp-transport") == transport
    page.wait_for_selector('[data-lp-connection][data-state="live"]', timeout=10_000)
    shots.take(page, "running")
    card_status(page, "succeeded")
    history = bar_history(page)
    assert_never_went_back(history)
    # It arrived step by step, not only at the end.
    assert len({e["value"] for e in history if 0 < e["value"] < 100}) >= 2, history
    assert page.inner_text("#lp-demo .lp-message") == "Process completed!"

    # Start and cancel go over HTTP on this transport.
    first = page.get_attribute("#lp-demo", "data-job")
    page.fill("#lp-demo-form input[name=steps]", "100")
    page.click("#lp-demo-form .lp-again")
    page.wait_for_function(
        f"document.querySelector('#lp-demo').dataset.job !== {json.dumps(first)}",
        timeout=10_000,
    )
    card_status(page, "running")
    page.click("#lp-demo .lp-cancel")
    card_status(page, "cancelled")
    shots.take(page, "cancelled")
    second = page.get_attribute("#lp-demo", "data-job")
    assert api(visitor, server, "GET", f"/api/jobs/{second}/")[1]["status"] == "cancelled"


# Lets a test put the tab in the background (document.hidden) and records the
# notifications the page shows (then shows them for real).
BACKGROUND_TAB = """
window.__hidden = false;
window.__notes = [];
Object.defineProperty(document, "hidden", {configurable: true, get: () => window.__hidden});
const RealNotification = window.Notification;
window.Notification = function (title, options) {
  window.__notes.push([title, options && options.body]);
  return new RealNotification(title, options);
};
window.Notification.requestPermission = () => RealNotification.requestPermission();
Object.defineProperty(window.Notification, "permission", {get: () => RealNotification.permission});
"""


def test_a_job_ending_in_a_background_tab_says_so_in_the_title_and_a_notification(
    browser, server, shots
):
    context = browser.new_context(locale="en-US")
    context.grant_permissions(["notifications"], origin=server.origin)
    context.add_init_script(BACKGROUND_TAB)
    page = context.new_page()
    page.goto(server.url("/progress/?steps=8&interval=0.3"))
    card_status(page, "running", timeout=10_000)
    original = page.title()
    # The visitor opts in with the header's button (the browser asks once).
    page.click("[data-lp-notify]")
    page.wait_for_selector('[data-lp-notify][aria-pressed="true"]', timeout=5_000)
    # While it runs: the rate beside the ETA.
    page.wait_for_function(
        "document.querySelector('#lp-demo .lp-rate').textContent.endsWith('a second')",
        timeout=WAIT_MS,
    )
    shots.take(page, "running-with-rate")
    page.evaluate("window.__hidden = true")
    card_status(page, "succeeded")
    assert page.title() == f"\u2713 Succeeded \u00b7 {original}"
    assert page.evaluate("window.__notes") == [["Succeeded", "Completed. Process completed!"]]
    # Looking at the tab again restores its title.
    page.evaluate("window.__hidden = false; document.dispatchEvent(new Event('visibilitychange'))")
    assert page.title() == original
    context.close()


def test_the_jobs_page_shows_jobs_started_elsewhere_live(browser, visitor, server, shots):
    page = visitor.new_page()
    page.goto(server.url("/jobs"))
    assert page.url == server.url("/jobs/")
    assert page.is_visible(".lp-empty")
    page.wait_for_selector('[data-lp-connection][data-state="live"]', timeout=10_000)

    # Started through the API while the page is open: each appears without a reload.
    status, done = api(
        visitor,
        server,
        "POST",
        "/api/jobs/",
        {"kind": "demo.timer", "params": {"steps": 3, "interval": 0.2}},
    )
    assert status == 201
    status, failing = api(visitor, server, "POST", "/api/jobs/", {"kind": "tests.fail"})
    assert status == 201
    status, long = api(
        visitor,
        server,
        "POST",
        "/api/jobs/",
        {"kind": "demo.timer", "params": {"steps": 100, "interval": 0.3}},
    )
    assert status == 201
    for job in (done, failing, long):
        page.wait_for_selector(f'[data-lp-job="{job["id"]}"]', timeout=10_000)
    assert not page.is_visible(".lp-empty")
    row = f'[data-lp-job="{long["id"]}"]'
    page.wait_for_selector(f'{row}[data-status="running"]', timeout=10_000)
    shots.take(page, "running")
    page.click(f"{row} .lp-cancel")
    page.wait_for_selector(f'{row}[data-status="cancelled"]', timeout=WAIT_MS)
    page.wait_for_selector(
        f'[data-lp-job="{done["id"]}"][data-status="succeeded"]', timeout=WAIT_MS
    )
    page.wait_for_selector(
        f'[data-lp-job="{failing["id"]}"][data-status="failed"]', timeout=WAIT_MS
    )
    assert page.inner_text(f'[data-lp-job="{failing["id"]}"] .lp-outcome').startswith("Failed: ")
    assert page.inner_text(f'[data-lp-job="{done["id"]}"] .lp-title') == "Timed process"
    shots.take(page, "ended")
    # Newest first.
    order = page.eval_on_selector_all(
        "#lp-jobs [data-lp-job]", "rows => rows.map(r => r.dataset.lpJob)"
    )
    assert order == [long["id"], failing["id"], done["id"]]
    # A reload renders the same rows, server-side, in the same order.
    page.reload()
    assert (
        page.eval_on_selector_all(
            "#lp-jobs [data-lp-job]", "rows => rows.map(r => r.dataset.lpJob)"
        )
        == order
    )
    # Readable on a phone: nothing wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shots.take(page, "reloaded")

    # Another visitor sees none of them.
    stranger = browser.new_context(locale="en-US")
    other = stranger.new_page()
    other.goto(server.url("/jobs/"))
    assert other.is_visible(".lp-empty")
    assert other.locator("#lp-jobs [data-lp-job]").count() == 0
    stranger.close()


@pytest.mark.parametrize(
    ("locale", "starts", "in_line"),
    [
        ("en-US", "starts at ", "number 1 in line"),
        ("es-ES", "empieza a las ", "número 1 en la cola"),
    ],
)
def test_waiting_jobs_say_what_they_wait_for(browser, server, shots, locale, starts, in_line):
    context = browser.new_context(locale=locale)
    page = context.new_page()
    page.goto(server.url("/jobs/"))
    page.wait_for_selector('[data-lp-connection][data-state="live"]', timeout=10_000)
    later = time.time() + 120
    status, scheduled = api(
        context, server, "POST", "/api/jobs/", {"kind": "demo.timer", "run_after": later}
    )
    assert (status, scheduled["status"]) == (201, "queued")
    assert abs(scheduled["run_after"] - later) < 0.001
    line = []
    for label in ("first", "second"):
        status, state = api(
            context,
            server,
            "POST",
            "/api/jobs/",
            {"kind": "tests.one_at_a_time", "params": {"label": label, "seconds": 4}},
        )
        assert status == 201
        line.append(state)
    row = f'[data-lp-job="{scheduled["id"]}"]'
    page.wait_for_selector(f"{row} .lp-elapsed:has-text('{starts}')", timeout=10_000)
    second = f'[data-lp-job="{line[1]["id"]}"]'
    page.wait_for_selector(f"{second} .lp-elapsed:has-text('{in_line}')", timeout=10_000)
    assert page.get_attribute(second, "data-status") == "queued"
    shots.take(page, "waiting")
    # The line moves: the first ends, the second runs.
    page.wait_for_selector(f'{second}[data-status="running"]', timeout=15_000)
    for job in (scheduled, *line):
        api(context, server, "POST", f"/api/jobs/{job['id']}/cancel/")
    context.close()


@pytest.mark.parametrize(
    ("locale", "paused", "resumed"),
    [("en-US", "Paused", "Resumed from "), ("es-ES", "En pausa", "Reanudado desde ")],
)
def test_pause_and_resume_from_the_jobs_page(browser, server, shots, locale, paused, resumed):
    context = browser.new_context(locale=locale)
    page = context.new_page()
    page.goto(server.url("/jobs/"))
    page.wait_for_selector('[data-lp-connection][data-state="live"]', timeout=10_000)
    status, state = api(
        context,
        server,
        "POST",
        "/api/jobs/",
        {"kind": "tests.rows", "params": {"key": locale, "count": 400, "delay": 0.03}},
    )
    assert status == 201
    row = f'[data-lp-job="{state["id"]}"]'
    page.wait_for_selector(f'{row}[data-status="running"]', timeout=10_000)
    page.click(f"{row} .lp-pause")
    page.wait_for_selector(f'{row}[data-status="paused"]', timeout=WAIT_MS)
    assert page.text_content(f"{row} .lp-badge") == paused
    assert page.is_visible(f"{row} .lp-resume") and not page.is_visible(f"{row} .lp-pause")
    shots.take(page, "paused")
    at = api(context, server, "GET", f"/api/jobs/{state['id']}/")[1]["current"]
    page.click(f"{row} .lp-resume")
    page.wait_for_selector(f'{row}[data-status="running"]', timeout=WAIT_MS)
    page.wait_for_selector(f"{row} .lp-outcome:has-text('{resumed}{at}')", timeout=WAIT_MS)
    shots.take(page, "resumed")
    page.click(f"{row} .lp-cancel")
    page.wait_for_selector(f'{row}[data-status="cancelled"]', timeout=WAIT_MS)
    context.close()


@pytest.mark.parametrize(
    ("locale", "past", "starts", "takes"),
    [
        ("en-US", "(from past runs)", "number 1 in line, starts in about ", "takes about "),
        (
            "es-ES",
            "(según ejecuciones anteriores)",
            "número 1 en la cola, empieza en aprox. ",
            "tarda unos ",
        ),
    ],
    ids=["en", "es"],
)
def test_estimates_say_where_they_come_from_and_when_a_waiting_job_starts(
    browser, server, shots, locale, past, starts, takes
):
    context = browser.new_context(locale=locale)
    page = context.new_page()
    page.goto(server.url("/jobs/"))
    page.wait_for_selector('[data-lp-connection][data-state="live"]', timeout=10_000)

    def start(params: dict[str, Any]) -> str:
        status, state = api(
            context, server, "POST", "/api/jobs/", {"kind": "tests.paced", "params": params}
        )
        assert status == 201
        return f'[data-lp-job="{state["id"]}"]'

    # One run of 2 items in 1 s teaches `tests.paced` (one at a time) its pace.
    learned = start({"steps": 2, "interval": 0.5})
    page.wait_for_selector(f'{learned}[data-status="succeeded"]', timeout=15_000)
    # 60 items after 20 s of setup: about 30 s by past runs, before its first item.
    ahead = start({"steps": 60, "interval": 0.5, "warmup": 20})
    waiting = start({"steps": 2, "interval": 0.5})
    page.wait_for_selector(f'{ahead}[data-status="running"] .lp-eta[data-source="history"]')
    assert past in page.inner_text(f"{ahead} .lp-eta")
    # The job behind it: its place, when it should start, how long it should take.
    page.wait_for_selector(f"{waiting} .lp-elapsed:has-text('{starts}')", timeout=10_000)
    assert takes in page.inner_text(f"{waiting} .lp-eta")
    assert past in page.inner_text(f"{waiting} .lp-eta")
    shots.take(page, "estimates")
    for row in (waiting, ahead):
        job_id = page.get_attribute(row, "data-lp-job")
        api(context, server, "POST", f"/api/jobs/{job_id}/cancel/")
    context.close()


def test_a_server_crash_shows_interrupted_after_the_page_reconnects(browser, tmp_path, shots):
    port = free_port()
    db = tmp_path / "crash.sqlite3"
    first = DaphneServer(db, port=port)
    first.start()
    context = browser.new_context(locale="en-US")
    context.add_init_script(RECORD_BAR)
    page = context.new_page()
    try:
        page.goto(first.url("/progress/?steps=200&interval=0.5"))
        card_status(page, "running", timeout=10_000)
        job_id = page.get_attribute("#lp-demo", "data-job")
        first.kill()
        page.wait_for_selector('[data-lp-connection][data-state="down"]', timeout=10_000)
        shots.take(page, "server-down")
        with DaphneServer(db, port=port):
            # The restarted server finds the dead process's job and ends it.
            card_status(page, "interrupted")
            assert page.get_attribute("#lp-demo", "data-job") == job_id
            assert page.inner_text("#lp-demo .lp-outcome") == (
                "Interrupted: the server stopped while it ran."
            )
            shots.take(page, "interrupted")
    finally:
        first.stop()
        context.close()


@pytest.fixture(scope="module")
def celery_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineSite]:
    """The demo with Celery set up on a Daphne, a Celery worker, Redis, PostgreSQL."""
    site = EngineSite(tmp_path_factory.mktemp("celery-page"), "celery")
    try:
        site.start()
        yield site
    finally:
        site.stop()


@pytest.mark.parametrize(
    ("locale", "switch", "again", "title", "progress_text", "done_text"),
    [
        (
            "es-ES",
            "Ejecutarlo en",
            "Ejecutar de nuevo",
            "Proceso temporizado en Celery",
            r"Progreso: \d+%",
            "¡Proceso completado!",
        ),
        (
            "en-US",
            "Run it on",
            "Run again",
            "Timed process on Celery",
            r"Progress: \d+%",
            "Process completed!",
        ),
    ],
    ids=["es", "en"],
)
def test_the_timed_process_chosen_on_celery_runs_on_a_worker_and_its_bar_fills(
    browser, celery_site, shots, locale, switch, again, title, progress_text, done_text
):
    context = browser.new_context(locale=locale, viewport={"width": 1024, "height": 768})
    context.add_init_script(RECORD_BAR)
    page = context.new_page()
    page.goto(celery_site.server.url("/progress/?steps=2&interval=0.1"))
    # The page starts as it always did, on liveprogress's own runner.
    card_status(page, "succeeded")
    assert page.get_attribute("#lp-demo .lp-job", "data-kind") == "demo.timer"
    assert page.get_by_label(switch).input_value() == ""
    shots.take(page, "own-runner")

    page.get_by_label(switch).select_option(label="Celery")
    page.fill('#lp-demo-form input[name="steps"]', "8")
    page.fill('#lp-demo-form input[name="interval"]', "0.3")
    page.get_by_role("button", name=again).click()
    on_celery = '#lp-demo .lp-job[data-kind="celery:demo.timer"]'
    page.wait_for_selector(f'{on_celery}[data-status="running"]', timeout=WAIT_MS)
    page.wait_for_function(
        "Number(document.querySelector('#lp-demo .lp-bar').getAttribute('aria-valuenow')) > 0",
        timeout=WAIT_MS,
    )
    job_id = page.get_attribute("#lp-demo", "data-job")
    assert page.inner_text("#lp-demo .lp-title") == title
    assert re.fullmatch(progress_text, page.inner_text("#lp-demo .lp-message"))
    shots.take(page, "celery-running")

    # A reload in the middle resumes the Celery job, and the switch says where it runs.
    page.reload()
    page.wait_for_selector(f'#lp-demo[data-job="{job_id}"]', timeout=10_000)
    assert page.get_by_label(switch).input_value() == "celery"

    page.wait_for_selector(f'{on_celery}[data-status="succeeded"]', timeout=WAIT_MS)
    shots.take(page, "celery-succeeded")
    assert page.get_attribute("#lp-demo", "data-job") == job_id
    assert page.get_attribute("#lp-demo .lp-bar", "aria-valuenow") == "100"
    assert page.inner_text("#lp-demo .lp-message") == done_text
    assert page.inner_text("#lp-demo .lp-title") == title
    history = [entry for entry in bar_history(page) if entry["job"] == job_id]
    # (The resumed bar starts from the job's stored state, which may be a little behind
    # what the page showed before the reload: another process runs the job and writes
    # its progress behind it, PERSIST_INTERVAL. From there it never goes back.)
    assert_never_went_back(history)
    running = [e["message"] for e in history if e["status"] == "running" and e["value"] < 100]
    assert all(re.fullmatch(progress_text, text) for text in running), running
    # Celery's worker ran it: the job is its task, and its row says it succeeded.
    row = celery_site.row(job_id)
    assert (row["kind"], row["status"]) == ("celery:demo.timer", "succeeded")
    assert f"demo.timer[{job_id}] succeeded" in celery_site.worker.log_text()
    context.close()
