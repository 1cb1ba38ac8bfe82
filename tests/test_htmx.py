"""htmx's live bar: HTML rendered on the server, streamed, swapped by htmx's SSE extension.

The tags' HTML in-process; the fragment stream against a real Daphne (the same
guarantees as the JSON streams: the owner's only, the final state always, then
the event that closes it); and in Debian's headless Chromium, the demo's
``/htmx/`` page, which runs no script but htmx's, filling live.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from html import unescape
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.template import Context, Template
from django.test import AsyncClient
from django.utils import translation

from liveprogress import actions
from liveprogress.handles import JobHandle
from liveprogress.models import Job, Status
from liveprogress.owner import session_owner
from liveprogress.state import encode, job_state, state_frame

from .servers import DaphneServer, EventStream, Visitor, start_timer

WAIT_MS = 30_000


def render(source: str, **context: object) -> str:
    """``source`` rendered for the viewer ``session:x``, with a CSRF token, in English."""
    context.setdefault("liveprogress_viewer", "session:x")
    context.setdefault("csrf_token", "token123")
    with translation.override("en"):
        return Template("{% load liveprogress %}" + source).render(Context(context))


def attribute(html: str, name: str) -> str | None:
    found = re.search(rf'\s{name}="([^"]*)"', html)
    return None if found is None else unescape(found.group(1))


# -- the tags ------------------------------------------------------------------------


def test_the_htmx_bar_renders_the_bar_and_follows_the_job_s_fragment_stream(db):
    job = Job(
        kind="demo.timer",
        owner="session:x",
        status=Status.RUNNING,
        current=3,
        total=8,
        message="<b>step</b> & more",
    )
    html = render("{% liveprogress_htmx_bar job %}", job=job)
    assert attribute(html, "hx-ext") == "sse"
    assert attribute(html, "sse-connect") == f"/api/jobs/{job.id}/fragments/"
    assert attribute(html, "sse-swap") == "job" and attribute(html, "sse-close") == "end"
    # The Cancel button posts with the page's CSRF token.
    assert attribute(html, "hx-headers") == '{"X-CSRFToken": "token123"}'
    assert attribute(html, "hx-post") == f"/api/jobs/{job.id}/cancel/"
    # The bar itself: accessible, the job's message as text, never markup.
    assert 'role="progressbar"' in html and 'aria-valuenow="37"' in html
    assert 'data-status="running"' in html and ">Running<" in html
    assert "&lt;b&gt;step&lt;/b&gt; &amp; more" in html and "<b>step" not in html
    # Not the script's: its widgets leave a bar without data-lp-job alone.
    assert "data-lp-job" not in html
    # The outcome's live region stays outside the swapped bar, empty while it runs.
    assert re.search(r'<p class="lp-outcome" role="status" sse-swap="end"[^>]*></p>', html)

    # From a handle too; without Cancel the stream is asked for bars without it.
    html = render("{% liveprogress_htmx_bar handle cancel=False %}", handle=JobHandle.of(job))
    assert attribute(html, "sse-connect") == f"/api/jobs/{job.id}/fragments/?cancel=0"
    assert "hx-headers" not in html and "hx-post" not in html


def test_an_ended_job_s_htmx_bar_opens_no_stream_and_says_how_it_ended(db):
    job = Job(
        kind="demo.timer",
        owner="session:x",
        status=Status.FAILED,
        error="disk <full>",
        files=[{"name": "out.csv", "size": 2048, "content_type": "text/csv"}],
    )
    html = render("{% liveprogress_htmx_bar job %}", job=job)
    assert "sse-connect" not in html and "hx-post" not in html
    assert "Failed: disk &lt;full&gt;</p>" in html
    assert f'<a href="/api/jobs/{job.id}/files/out.csv" download>out.csv</a>' in html
    with translation.override("es"):
        html = Template("{% load liveprogress %}{% liveprogress_htmx_bar job %}").render(
            Context({"job": job, "liveprogress_viewer": "session:x"})
        )
    assert "Falló: disk &lt;full&gt;" in html


def test_the_htmx_bar_renders_nothing_of_a_stranger_s_job_and_says_what_it_needs(db):
    job = Job(kind="demo.timer", owner="session:x", message="secret plan")
    assert render("{% liveprogress_htmx_bar job %}", job=job, liveprogress_viewer="y") == ""
    with pytest.raises(TypeError, match=r"liveprogress_htmx_bar %\} takes a Job or a JobHandle"):
        render("{% liveprogress_htmx_bar None %}")
    with pytest.raises(ImproperlyConfigured, match="CSRF token"):
        Template("{% load liveprogress %}{% liveprogress_htmx_bar job %}").render(
            Context({"job": job, "liveprogress_viewer": "session:x"})
        )
    with pytest.raises(ImproperlyConfigured, match=r"liveprogress_htmx_bar %\} needs the request"):
        Template("{% load liveprogress %}{% liveprogress_htmx_bar job %}").render(
            Context({"job": job})
        )


def test_the_htmx_assets_are_the_stylesheet_htmx_and_its_sse_extension_served_here(db):
    html = render("{% liveprogress_htmx_assets %}")
    assert re.findall(r'(?:src|href)="([^"]+)"', html) == [
        "/static/liveprogress/liveprogress.css",
        "/static/django_htmx/htmx-2.min.js",
        "/static/django_htmx/ext/hx-sse-2.min.js",
    ]
    nonced = render("{% liveprogress_htmx_assets %}", csp_nonce="n0nce")
    assert nonced.count('nonce="n0nce"') == 2


def test_the_htmx_assets_say_what_django_htmx_they_need(db, settings, monkeypatch):
    from django_htmx import jinja

    # A django-htmx before 1.29 ships no SSE extension.
    with monkeypatch.context() as patched:
        patched.delattr(jinja, "EXTENSIONS")
        with pytest.raises(ImproperlyConfigured, match=r"pip install 'django-htmx>=1.29'"):
            render("{% liveprogress_htmx_assets %}")
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "django_htmx"]
    with pytest.raises(ImproperlyConfigured, match="add 'django_htmx' to INSTALLED_APPS"):
        render("{% liveprogress_htmx_assets %}")


def test_the_streams_of_a_job_share_one_rendering_of_each_state(db, monkeypatch):
    from liveprogress import events

    renders: list[str] = []

    def counted(state: Any, *, cancel: bool) -> str:
        renders.append(translation.get_language())
        return f"<p>{state['progress']}</p>"

    monkeypatch.setattr(events, "htmx_bar", counted)
    events._bar_event.cache_clear()
    job = Job(kind="demo.timer", owner="session:x", status=Status.RUNNING, current=1, total=4)
    # The hub hands every stream the same frame text.
    frame = encode(state_frame(job_state(job)))
    for stream in [events._Fragments("en", cancel=True) for _ in range(50)]:
        text, parsed = stream.event(frame)
        assert text == "event: job\ndata: <p>25</p>\n\n" and parsed["job"]["current"] == 1
    # Another language is its own rendering.
    events._Fragments("es", cancel=True).event(frame)
    assert renders == ["en", "es"]


# -- the fragment stream, over a real server -------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaphneServer]:
    db = tmp_path_factory.mktemp("htmx") / "htmx.sqlite3"
    with DaphneServer(db, liveprogress={"JOB_MODULES": ["tests.jobs"]}) as running:
        yield running


def visitor(server: DaphneServer, language: str = "en") -> Visitor:
    new = Visitor(server, language=language)
    assert new.visit() == 200
    return new


def fragments(who: Visitor, job_id: str, query: str = "") -> EventStream:
    return who.events(f"/api/jobs/{job_id}/fragments/{query}", parse=str)


def bar_value(html: str) -> int | None:
    value = attribute(html, "aria-valuenow")
    return None if value is None else int(value)


def read_to_end(stream: EventStream) -> list[dict[str, Any]]:
    events = []
    while (event := stream.next_event()) is not None:
        events.append(event)
    return events


@pytest.mark.integration
def test_the_fragment_stream_sends_a_bar_per_state_then_how_it_ended_then_ends(server):
    alice = visitor(server)
    job = start_timer(alice, steps=5, interval=0.1)
    with fragments(alice, job["id"]) as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert stream.headers["Cache-Control"] == "no-cache"
        events = read_to_end(stream)
    bars, (end,) = events[:-1], events[-1:]
    assert {event["event"] for event in bars} == {"job"}
    # Each bar is whole: the progress bar with its value, the status, the message.
    values = [bar_value(event["data"]) for event in bars]
    assert values == sorted(values) and values[-1] == 100
    for event in bars:
        assert 'role="progressbar"' in event["data"] and "lp-message" in event["data"]
    final = bars[-1]["data"]
    assert 'data-status="succeeded"' in final and ">Succeeded<" in final
    assert "Process completed!" in final and "lp-cancel" not in final
    assert 'data-status="running"' in bars[0]["data"] and "hx-post" in bars[0]["data"]
    # Then the end, which htmx's sse-close="end" waits for: how the job ended, in words.
    assert end == {"event": "end", "id": None, "data": "Completed."}
    # No ids: each event is the whole bar, a reconnect starts from the job's state.
    assert all(event["id"] is None for event in events)


@pytest.mark.integration
def test_an_ended_job_s_stream_still_sends_its_final_bar_and_the_end(server):
    bob = visitor(server, language="es")
    job = start_timer(bob, steps=1, interval=0)
    deadline = time.monotonic() + 10
    while bob.get(f"/api/jobs/{job['id']}/")[1]["status"] != "succeeded":
        assert time.monotonic() < deadline, "the job never ended"
        time.sleep(0.05)
    with fragments(bob, job["id"], "?cancel=0") as stream:
        events = read_to_end(stream)
    assert [event["event"] for event in events] == ["job", "end"]
    # In the language of the request that opened the stream.
    assert ">Completado<" in events[0]["data"] and "¡Proceso completado!" in events[0]["data"]
    assert events[1]["data"] == "Completado."


@pytest.mark.integration
def test_a_cancelled_job_s_stream_ends_saying_so(server):
    alice = visitor(server)
    job = start_timer(alice, steps=100, interval=0.1)
    with fragments(alice, job["id"]) as stream:
        first = stream.next_event()
        assert first is not None and "hx-post" in first["data"]
        status, _ = alice.post_json(f"/api/jobs/{job['id']}/cancel/")
        assert status in (200, 202)
        events = read_to_end(stream)
    assert 'data-status="cancelled"' in events[-2]["data"]
    assert events[-1]["event"] == "end"
    assert events[-1]["data"] == "Cancelled: it was stopped on request."


@pytest.mark.integration
def test_strangers_and_bad_requests_get_the_api_s_json_errors(server):
    alice, mallory = visitor(server), visitor(server)
    job = start_timer(alice, steps=20, interval=0.1)

    def refused(stream: EventStream, status: int, code: str) -> None:
        assert stream.status == status, stream.json
        assert stream.json["type"] == "error" and stream.json["code"] == code

    # Someone else's job and a job that doesn't exist answer the same.
    with fragments(mallory, job["id"]) as stream:
        refused(stream, 404, "not_found")
    with fragments(mallory, str(uuid.uuid4())) as stream:
        refused(stream, 404, "not_found")
    with fragments(Visitor(server), job["id"]) as stream:
        refused(stream, 404, "not_found")
    for malformed in ("not-a-uuid", "1" * 70):
        with fragments(alice, malformed) as stream:
            refused(stream, 400, "bad_request")
    for cancel in ("2", "yes", ""):
        with fragments(alice, job["id"], f"?cancel={cancel}") as stream:
            refused(stream, 400, "bad_request")
            assert stream.json["field"] == "cancel"
    status, body = alice.post_json(f"/api/jobs/{job['id']}/fragments/")
    assert status == 405 and body["code"] == "bad_request"
    alice.post_json(f"/api/jobs/{job['id']}/cancel/")


async def test_fragment_streams_count_toward_the_owner_s_stream_cap(runtime, settings):
    from liveprogress.events import _open_streams

    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "MAX_STREAMS_PER_OWNER": 2}
    client = AsyncClient()
    assert (await client.get("/jobs/")).status_code == 200
    owner = session_owner(client.cookies["sessionid"].value)
    short = await actions.start_job(owner, "demo.timer", {"steps": 2, "interval": 0.1})
    long = await actions.start_job(owner, "demo.timer", {"steps": 100, "interval": 0.1})
    opened = [
        await client.get(f"/api/jobs/{short.id}/fragments/"),
        await client.get("/api/jobs/events/"),
    ]
    chunks = [aiter(response.streaming_content) for response in opened]
    for chunk in chunks:
        await anext(chunk)  # the streams start
    assert _open_streams[owner] == 2
    refused = await client.get(f"/api/jobs/{long.id}/fragments/")
    assert refused.status_code == 429 and refused.json()["code"] == "limit"
    # Its job's end ends the fragment stream, which gives its place back.
    async with asyncio.timeout(10):
        async for _chunk in chunks[0]:
            pass
    assert _open_streams[owner] == 1
    assert (await client.get(f"/api/jobs/{long.id}/fragments/")).status_code == 200
    await actions.cancel_job(owner, str(long.id))


# -- the demo's page ------------------------------------------------------------------


async def test_the_demo_s_htmx_page_follows_the_visitor_s_timer_and_starts_another(runtime):
    client = AsyncClient(headers={"Accept-Language": "en"})
    page = (await client.get("/htmx/?steps=50&interval=0.1")).content.decode()
    followed = re.search(r'sse-connect="/api/jobs/([0-9a-f-]+)/fragments/"', page)
    assert followed is not None and 'name="steps" value="50"' in page
    # A reload follows the same job; it doesn't start another.
    assert (
        f"/api/jobs/{followed.group(1)}/fragments/" in (await client.get("/htmx/")).content.decode()
    )

    # The form posts: a new job, then the page (post, redirect, get) follows it.
    posted = await client.post("/htmx/", {"steps": "40", "interval": "0.1"})
    assert posted.status_code == 302 and posted["Location"] == "/htmx/"
    page = (await client.get("/htmx/")).content.decode()
    newer = re.search(r'sse-connect="/api/jobs/([0-9a-f-]+)/fragments/"', page)
    assert newer is not None and newer.group(1) != followed.group(1)
    owner = session_owner(client.cookies["sessionid"].value)
    assert (await actions.get_job(owner, newer.group(1))).total == 40
    # A value out of bounds is refused on the page, beside the job it follows.
    refused = await client.post("/htmx/", {"steps": "0", "interval": "0.1"})
    assert refused.status_code == 400
    assert re.search(r'<p class="lp-refused" role="alert">[^<]*steps', refused.content.decode())
    assert f"/api/jobs/{newer.group(1)}/fragments/" in refused.content.decode()
    for job_id in (followed.group(1), newer.group(1)):
        await actions.cancel_job(owner, job_id)


# -- the demo's page, in a browser -------------------------------------------------------

# Records every value the htmx bar shows, from the first one on (the test's own
# instrument: the page itself runs no script but htmx's).
RECORD_HTMX_BAR = """
window.__bar = [];
window.__streams = 0;
const RealEventSource = window.EventSource;
window.EventSource = function (...args) {
  window.__streams += 1;
  return new RealEventSource(...args);
};
Object.assign(window.EventSource, {CONNECTING: 0, OPEN: 1, CLOSED: 2});
document.addEventListener("DOMContentLoaded", () => {
  const root = document.querySelector(".lp-htmx");
  if (!root) return;
  const note = () => {
    const job = root.querySelector(".lp-job");
    const bar = root.querySelector(".lp-bar");
    window.__bar.push({status: job.dataset.status,
      value: bar.hasAttribute("aria-valuenow") ? Number(bar.getAttribute("aria-valuenow")) : null,
      message: root.querySelector(".lp-message").textContent});
  };
  note();
  new MutationObserver(note).observe(root, {childList: true, subtree: true});
});
"""


@pytest.mark.integration
@pytest.mark.browser
@pytest.mark.parametrize(
    ("locale", "progress_text", "done_text", "done_outcome", "nav_label"),
    [
        ("es-ES", r"Progreso: \d+%", "¡Proceso completado!", "Completado.", "Con htmx"),
        ("en-US", r"Progress: \d+%", "Process completed!", "Completed.", "With htmx"),
    ],
    ids=["es", "en"],
)
def test_a_page_of_htmx_attributes_only_fills_live_to_the_end(
    browser, server, locale, progress_text, done_text, done_outcome, nav_label
):
    pytest.importorskip("playwright.sync_api")
    context = browser.new_context(locale=locale, viewport={"width": 390, "height": 844})
    context.add_init_script(RECORD_HTMX_BAR)
    page = context.new_page()
    fragment_requests: list[str] = []
    page.on("request", lambda request: fragment_requests.append(request.url))
    page.goto(server.url("/htmx/?steps=6&interval=0.4"))
    assert page.get_attribute("html", "lang") == locale[:2]
    assert page.get_attribute('.lp-nav a[aria-current="page"]', "href") == "/htmx/"
    assert page.inner_text('.lp-nav a[aria-current="page"]') == nav_label
    # No script but htmx and its SSE extension, both served by the site.
    scripts = page.eval_on_selector_all("script", "nodes => nodes.map(n => n.src)")
    assert scripts == [
        server.url("/static/django_htmx/htmx-2.min.js"),
        server.url("/static/django_htmx/ext/hx-sse-2.min.js"),
    ]

    page.wait_for_selector('.lp-htmx .lp-job[data-status="succeeded"]', timeout=WAIT_MS)
    bar = page.locator(".lp-htmx .lp-bar")
    assert bar.get_attribute("role") == "progressbar"
    assert bar.get_attribute("aria-valuenow") == "100"
    assert page.inner_text(".lp-htmx .lp-message") == done_text
    assert page.inner_text(".lp-htmx .lp-outcome") == done_outcome
    assert not page.is_visible(".lp-htmx .lp-cancel")
    history = page.evaluate("window.__bar")
    values = [entry["value"] for entry in history if entry["value"] is not None]
    assert values == sorted(values), values
    # It arrived step by step, not only at the end.
    assert len({value for value in values if 0 < value < 100}) >= 2, history
    running = [e["message"] for e in history if e["status"] == "running" and e["value"]]
    assert running and all(re.fullmatch(progress_text, text) for text in running), running
    # sse-close: the end closed the stream, and nothing opens another.
    page.wait_for_timeout(1500)
    assert page.evaluate("window.__streams") == 1
    assert len([url for url in fragment_requests if "/fragments/" in url]) == 1
    context.close()


@pytest.mark.integration
@pytest.mark.browser
def test_the_htmx_bar_s_cancel_button_cancels_the_job(browser, server):
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    page.goto(server.url("/htmx/?steps=200&interval=0.2"))
    page.wait_for_function(
        "Number(document.querySelector('.lp-htmx .lp-bar').getAttribute('aria-valuenow')) > 0",
        timeout=WAIT_MS,
    )
    job_id = re.search(r"/api/jobs/([0-9a-f-]+)/", page.get_attribute(".lp-htmx", "sse-connect"))
    assert job_id is not None
    page.click(".lp-htmx .lp-cancel")
    page.wait_for_selector('.lp-htmx .lp-job[data-status="cancelled"]', timeout=WAIT_MS)
    assert page.inner_text(".lp-htmx .lp-outcome") == "Cancelled: it was stopped on request."
    response = context.request.get(server.url(f"/api/jobs/{job_id.group(1)}/"))
    assert response.json()["status"] == "cancelled"

    # The form starts another (post, redirect, get), which the page then follows.
    page.fill("input[name=steps]", "3")
    page.fill("input[name=interval]", "0.2")
    page.click("#lp-htmx-demo button[type=submit]")
    page.wait_for_selector('.lp-htmx .lp-job[data-status="succeeded"]', timeout=WAIT_MS)
    assert page.url == server.url("/htmx/")
    listed = context.request.get(server.url("/api/jobs/")).json()["jobs"]
    assert [(job["id"] == job_id.group(1), job["status"]) for job in listed] == [
        (False, "succeeded"),
        (True, "cancelled"),
    ]
    context.close()
