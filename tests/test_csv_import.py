"""The CSV import demo: ``POST /api/imports/``, the ``demo.csv_import`` job, its log,
its cleaned file, and the ``/import/`` page in a real browser.

Most tests go through Django's AsyncClient with a real runtime (the job runs in
this process, its files in the test's temporary MEDIA_ROOT); the last one drives
headless Chromium against a real Daphne, like test_browser.py.
"""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import AsyncClient

from liveprogress import files
from liveprogress.models import Job
from proyecto.demo.jobs import UPLOADS

from .servers import DaphneServer

#: Excel's "CSV UTF-8": a byte-order mark, CRLF line ends. Rows 3, 5, 6 and 8 are
#: bad (a bad email, every value empty, too few values, markup for an email);
#: line 7 is blank, which is no row at all but still a line of the file.
GOOD_WITH_BAD_ROWS = (
    "\ufeffname, email ,city\r\n"
    "Ana,ana@example.com,Sevilla\r\n"
    "Bob,not-an-email,Madrid\r\n"
    "  Carla  ,carla@example.com,  Cádiz \r\n"
    ",,\r\n"
    "Dan,dan@example.com\r\n"
    "\r\n"
    "Eve,<b>bold</b>,Lugo\r\n"
    'Fran,fran@example.com,"Vigo, Pontevedra"\r\n'
).encode()
GOOD_ROWS = [
    ["name", "email", "city"],
    ["Ana", "ana@example.com", "Sevilla"],
    ["Carla", "carla@example.com", "Cádiz"],
    ["Fran", "fran@example.com", "Vigo, Pontevedra"],
]
BAD_ROW_WARNINGS = [
    "Row 3 skipped: “not-an-email” is not an email address (column email)",
    "Row 5 skipped: every value is empty",
    "Row 6 skipped: 2 values for 3 columns",
    "Row 8 skipped: “<b>bold</b>” is not an email address (column email)",
]

# (An AsyncClient's default headers don't reach ASGI requests: given per request.)
ENGLISH = {"Accept-Language": "en"}
#: Seconds a job may take to end.
JOB_TIMEOUT = 20


async def visit(*, enforce_csrf_checks: bool = False) -> tuple[AsyncClient, str]:
    """An English visitor that has loaded /import/: its session and CSRF token."""
    client = AsyncClient(enforce_csrf_checks=enforce_csrf_checks)
    response = await client.get("/import/", headers=ENGLISH)
    assert response.status_code == 200
    return client, client.cookies["csrftoken"].value


async def upload(
    client: AsyncClient,
    token: str,
    content: bytes,
    name: str = "people.csv",
    accept: str = "application/json",
) -> Any:
    return await client.post(
        "/api/imports/",
        {"file": SimpleUploadedFile(name, content, "text/csv")},
        headers={**ENGLISH, "X-CSRFToken": token, "Accept": accept},
    )


async def wait_for_end(client: AsyncClient, job_id: str) -> dict[str, Any]:
    async with asyncio.timeout(JOB_TIMEOUT):
        while True:
            state = (await client.get(f"/api/jobs/{job_id}/")).json()
            if state["status"] not in ("queued", "running"):
                return state
            await asyncio.sleep(0.05)


async def import_file(content: bytes, name: str = "people.csv") -> tuple[AsyncClient, dict]:
    """Upload ``content`` as a new visitor and wait for its import to end."""
    client, token = await visit()
    response = await upload(client, token, content, name)
    assert response.status_code == 201, response.content
    started = response.json()
    assert started["kind"] == "demo.csv_import"
    assert response["Location"] == f"/api/jobs/{started['id']}/"
    return client, await wait_for_end(client, started["id"])


async def upload_is_gone(job_id: str) -> bool:
    """Whether the job's upload is gone: it goes once the job has ended (its
    ``job_finished`` receiver, an instant after the final state)."""
    job = await Job.objects.aget(pk=job_id)
    storage = files.storage()
    for _ in range(100):
        if not storage.exists(job.params["upload"]) and not storage.listdir(UPLOADS)[1]:
            return True
        await asyncio.sleep(0.02)
    return False


async def read_body(response: Any) -> bytes:
    return b"".join([chunk async for chunk in response.streaming_content])


# -- a good file -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cleaned"),
    [
        ("!!!.csv", "cleaned-data.csv"),
        (".hidden.csv", "cleaned-hidden.csv"),
        ("..csv", "cleaned-data.csv"),
        ("x" * 150 + ".csv", "cleaned-" + "x" * 60 + ".csv"),
        ("mi archivo (1).csv", "cleaned-mi_archivo_1.csv"),
    ],
)
async def test_any_file_name_gives_a_usable_cleaned_file(runtime, name, cleaned):
    """A valid file is never refused for its name after its rows were imported."""
    _client, final = await import_file(b"name,email\nAna,ana@example.com\n", name)
    assert final["status"] == "succeeded", final["error"]
    assert [entry["name"] for entry in final["files"]] == [cleaned]


async def test_a_good_file_is_imported_without_its_bad_rows(runtime):
    client, final = await import_file(GOOD_WITH_BAD_ROWS)
    job_id = final["id"]

    assert final["status"] == "succeeded", final["error"]
    assert final["result"] == {
        "file": "people.csv",
        "rows": 7,
        "imported": 3,
        "skipped": 4,
        "columns": ["name", "email", "city"],
    }
    assert final["message"] == "3 of 7 rows imported, 4 skipped."
    assert [(stage["name"], stage["status"]) for stage in final["stages"]] == [
        ("Validate", "done"),
        ("Import", "done"),
        ("Summarise", "done"),
    ]
    assert final["percent"] == 100.0
    assert await upload_is_gone(job_id)

    # The cleaned file: the header and the good rows, trimmed, nothing else.
    [entry] = final["files"]
    assert entry["name"] == "cleaned-people.csv"
    assert entry["url"] == f"/api/jobs/{job_id}/files/cleaned-people.csv"
    response = await client.get(entry["url"])
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="cleaned-people.csv"'
    body = await read_body(response)
    assert int(response["Content-Length"]) == len(body) == entry["size"]
    assert list(csv.reader(io.StringIO(body.decode("utf-8"), newline=""))) == GOOD_ROWS

    # The log: what was read, each bad row by its line in the file, the summary; in order.
    response = await client.get(f"/api/jobs/{job_id}/logs/")
    assert response.status_code == 200
    log = response.json()
    assert [(line["level"], line["text"]) for line in log["lines"]] == [
        ("info", "7 rows, columns: name, email, city"),
        *[("warning", text) for text in BAD_ROW_WARNINGS],
        ("info", "3 of 7 rows imported, 4 skipped."),
    ]
    assert [line["seq"] for line in log["lines"]] == [1, 2, 3, 4, 5, 6]
    assert log["log_seq"] == final["log_seq"] == 6
    assert log["dropped_through"] == 0
    times = [line["at"] for line in log["lines"]]
    assert times == sorted(times)
    later = (await client.get(f"/api/jobs/{job_id}/logs/?after=4")).json()
    assert [line["seq"] for line in later["lines"]] == [5, 6]


async def test_a_retried_import_imports_each_row_once_and_says_why_it_went_again(
    runtime, monkeypatch
):
    from django.db import DatabaseError

    from proyecto.demo.models import ImportedRow

    rows = ImportedRow.objects
    create = rows.get_or_create
    calls = []

    def fails_once(**kwargs):
        calls.append(kwargs["line"])
        if len(calls) == 2:  # the second good row, once
            raise DatabaseError("disk I/O error")
        return create(**kwargs)

    monkeypatch.setattr(rows, "get_or_create", fails_once)
    client, final = await import_file(GOOD_WITH_BAD_ROWS)
    assert (final["status"], final["attempt"]) == ("succeeded", 2), final["error"]
    assert (final["result"]["imported"], final["result"]["skipped"]) == (3, 4)
    log = (await client.get(f"/api/jobs/{final['id']}/logs/")).json()
    texts = [line["text"] for line in log["lines"]]
    # The file's header once (the resumed attempt read it again, and said nothing),
    # where the first attempt ended and why, and the summary last.
    assert texts.count("7 rows, columns: name, email, city") == 1
    assert [text for text in texts if text.endswith(": disk I/O error")] == [
        "Failed; retrying in 1 s (attempt 2 of 3): disk I/O error"
    ]
    assert texts[-1] == "3 of 7 rows imported, 4 skipped."


async def test_a_plain_form_post_is_redirected_to_the_import_page(runtime):
    client, token = await visit()
    response = await upload(client, token, b"a,b\n1,2\n", accept="text/html")
    assert response.status_code == 302
    job = await Job.objects.aget()
    assert response["Location"] == f"/import/?job={job.id}"
    assert (await wait_for_end(client, str(job.id)))["status"] == "succeeded"


async def test_semicolons_and_tabs_separate_columns_too(runtime):
    for separator in (";", "\t"):
        content = separator.join(["name", "email"]) + "\n" + separator.join(["Ana", "a@b.es"])
        _, final = await import_file(content.encode())
        assert final["status"] == "succeeded", final["error"]
        assert final["result"]["columns"] == ["name", "email"]
        assert final["result"]["imported"] == 1


# -- bad files -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (
            "name,city\nJosé,café\n".encode("latin-1"),
            "The file is not UTF-8 text (byte 0xe9 at position 13). "
            "Save it as “CSV UTF-8” and upload it again.",
        ),
        (b"", "The file is empty."),
        (b" \r\n\n\t\n", "The file is empty."),
        (b"name,city\nAna,\x00\x00\x01\x02\n", "The file is binary, not CSV text."),
        (
            b"Dear all,\nplease find the figures below\n",
            "The first row must name at least two columns, each once and none empty.",
        ),
        (
            b"just some text\nwith no separator at all\n",
            "This is not CSV: no column separator (comma, semicolon or tab) was found.",
        ),
        (
            b"name,,city\nAna,x,Lugo\n",
            "The first row must name at least two columns, each once and none empty.",
        ),
        (
            b"name,city,Name,city\nAna,Lugo,x,y\n",
            "The first row must name at least two columns, each once and none empty.",
        ),
        (b"name,city\n", "The file has a header and no rows."),
    ],
    ids=[
        "latin-1",
        "empty",
        "blank",
        "binary",
        "prose",
        "no-separator",
        "empty-column-name",
        "duplicate-column",
        "header-only",
    ],
)
async def test_a_bad_file_fails_the_job_saying_why(runtime, content, reason):
    _, final = await import_file(content)

    assert final["status"] == "failed"
    assert final["error"] == reason
    assert final["result"] is None and final["files"] == []
    assert await upload_is_gone(final["id"])


async def test_a_file_over_the_limit_fails_naming_its_size_and_the_limit(runtime, settings):
    settings.DEMO_CSV_MAX_BYTES = 100
    content = b"name,email\n" + b"Ana,ana@example.com\n" * 20  # 411 bytes
    assert len(content) == 411

    _, final = await import_file(content)

    assert final["status"] == "failed"
    assert final["error"].replace("\xa0", " ") == (
        "The file is 411 bytes; this import takes at most 100 bytes."
    )
    assert await upload_is_gone(final["id"])


# -- the endpoint's errors -------------------------------------------------------


async def test_the_upload_endpoint_refuses_what_is_not_an_upload(runtime):
    client, token = await visit()

    response = await client.post("/api/imports/", {"other": "x"}, headers={"X-CSRFToken": token})
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "code": "bad_request",
        "detail": "Choose a CSV file to upload",
        "field": "file",
    }

    response = await client.post(
        "/api/imports/",
        {"file": "a,b"},
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"
    assert "multipart/form-data" in response.json()["detail"]

    response = await client.get("/api/imports/")
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json()["code"] == "bad_request"

    # Refused by its declared length, before the body is looked at.
    response = await client.generic(
        "POST",
        "/api/imports/",
        b"",
        headers={
            "X-CSRFToken": token,
            "Content-Type": "multipart/form-data; boundary=x",
            "Content-Length": str(64 * 1024 * 1024 + 1),
        },
    )
    assert response.status_code == 413
    assert response.json() == {
        "type": "error",
        "code": "too_large",
        "detail": "Uploads may be at most 64 MB",
    }
    assert not await Job.objects.aexists()
    assert not files.storage().exists(UPLOADS)


async def test_an_upload_without_the_csrf_token_is_forbidden(runtime):
    client, token = await visit(enforce_csrf_checks=True)

    response = await client.post(
        "/api/imports/",
        {"file": SimpleUploadedFile("people.csv", b"a,b\n1,2\n")},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 403
    error = response.json()
    assert (error["type"], error["code"]) == ("error", "forbidden")
    assert error["detail"].startswith("CSRF check failed")
    assert not await Job.objects.aexists()

    # With it, the same upload goes through.
    response = await upload(client, token, b"a,b\n1,2\n")
    assert response.status_code == 201


async def test_clients_can_t_start_the_import_job_themselves(runtime):
    client, token = await visit()
    params = {"upload": f"demo/uploads/{uuid.uuid4().hex}.csv"}

    response = await client.post(
        "/api/jobs/",
        {"kind": "demo.csv_import", "params": params},
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert response.status_code == 400
    error = response.json()
    assert (error["code"], error["field"]) == ("bad_request", "kind")
    assert error["detail"] == "Unknown job kind 'demo.csv_import'"
    assert not await Job.objects.aexists()


async def test_a_stranger_can_t_download_the_cleaned_file_or_read_the_log(runtime):
    owner, final = await import_file(GOOD_WITH_BAD_ROWS)
    assert final["status"] == "succeeded"
    file_url = final["files"][0]["url"]
    log_url = f"/api/jobs/{final['id']}/logs/"
    stranger, _ = await visit()

    nobody = str(uuid.uuid4())
    for client in (stranger, AsyncClient()):
        for url in (file_url, log_url):
            response = await client.get(url)
            assert response.status_code == 404, url
            # Exactly what a job that doesn't exist answers.
            unknown = await client.get(url.replace(final["id"], nobody))
            assert (
                response.json()
                == unknown.json()
                == {
                    "type": "error",
                    "code": "not_found",
                    "detail": "No such job",
                    "field": "job",
                }
            )
    # A file the job does not have is not found either, for its owner.
    response = await owner.get(f"/api/jobs/{final['id']}/files/people.csv")
    assert response.status_code == 404
    assert response.json()["field"] == "name"
    assert (await owner.get(file_url)).status_code == 200


# -- in a real browser -------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaphneServer]:
    db = tmp_path_factory.mktemp("csv-import") / "import.sqlite3"
    with DaphneServer(db) as running:
        yield running


def choose_and_import(page: Any, name: str, content: bytes) -> None:
    page.set_input_files(
        "#lp-upload input[type=file]",
        files=[{"name": name, "mimeType": "text/csv", "buffer": content}],
    )
    page.click("#lp-upload button[type=submit]")


@pytest.mark.integration
@pytest.mark.browser
@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_the_import_page_shows_a_failure_then_an_import_live(browser, server, request, transport):
    """Over the WebSocket, and over Server-Sent Events when WebSockets are blocked
    (the log then comes through the job's event stream)."""
    from .test_browser import WAIT_MS, Shots, block_websockets

    shots = Shots(request.node.name)
    context = browser.new_context(locale="en-US", viewport={"width": 390, "height": 844})
    if transport == "sse":
        context.add_init_script(block_websockets())
    page = context.new_page()
    try:
        page.goto(server.url("/import/"))
        assert page.is_hidden("#lp-import")

        # A file that is not UTF-8: the job fails, and the page says why.
        choose_and_import(page, "ventas.csv", "name,city\nJosé,café\n".encode("latin-1"))
        page.wait_for_selector('#lp-import[data-status="failed"]', timeout=WAIT_MS)
        first = page.get_attribute("#lp-import", "data-job")
        assert page.url == server.url(f"/import/?job={first}")
        outcome = page.inner_text("#lp-import .lp-outcome")
        assert outcome.startswith("Failed: The file is not UTF-8 text (byte 0xe9"), outcome
        assert page.inner_text("#lp-upload-error") == ""
        # The stage it failed in says so, and is no longer the current one.
        failed_stage = page.locator("#lp-import .lp-stages li").first
        assert failed_stage.get_attribute("data-status") == "failed"
        assert failed_stage.get_attribute("aria-current") is None
        assert page.get_attribute("html", "data-lp-transport") == transport
        shots.take(page, "not-utf8-failed")

        # A good file with bad rows, long enough to watch it run.
        rows = GOOD_WITH_BAD_ROWS + b"".join(
            f"Row{n},row{n}@example.com,Lugo\r\n".encode() for n in range(150)
        )
        choose_and_import(page, "people.csv", rows)
        page.wait_for_function(
            f"document.querySelector('#lp-import').dataset.job !== '{first}'", timeout=WAIT_MS
        )
        job_id = page.get_attribute("#lp-import", "data-job")
        current = '#lp-import .lp-stages li[aria-current="step"]'
        page.wait_for_selector(f"{current}:text-is('Import')", timeout=WAIT_MS)
        stages = page.locator("#lp-import .lp-stages li")
        assert stages.all_inner_texts() == ["Validate", "Import", "Summarise"]
        assert [stages.nth(n).get_attribute("data-status") for n in range(3)] == [
            "done",
            "running",
            "pending",
        ]
        assert page.locator(current).count() == 1
        assert page.get_attribute("#lp-import", "data-status") == "running"
        shots.take(page, "importing")

        page.wait_for_selector('#lp-import[data-status="succeeded"]', timeout=WAIT_MS)
        assert [stages.nth(n).get_attribute("data-status") for n in range(3)] == ["done"] * 3
        assert page.locator(current).count() == 0
        assert page.inner_text("#lp-import .lp-outcome") == "Completed."
        assert page.inner_text("#lp-import .lp-percent") == "100%"

        # The log: only this import's lines, the bad rows as warnings, markup as text.
        log = page.locator("#lp-import-log li")
        page.wait_for_function(
            "document.querySelectorAll('#lp-import-log li').length >= 6", timeout=WAIT_MS
        )
        warnings = page.locator('#lp-import-log li[data-level="warning"]')
        texts = [text.removeprefix("warning") for text in warnings.all_text_contents()]
        assert texts == BAD_ROW_WARNINGS
        assert log.first.text_content() == "info157 rows, columns: name, email, city"
        assert page.locator("#lp-import-log b").count() == 0
        assert "“<b>bold</b>” is not an email address" in warnings.last.inner_text()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        shots.take(page, "succeeded")

        # The download link's file is the cleaned one.
        link = page.locator("#lp-import .lp-files a")
        assert link.inner_text() == "cleaned-people.csv"
        href = link.get_attribute("href")
        assert href == f"/api/jobs/{job_id}/files/cleaned-people.csv"
        response = context.request.get(server.url(href))
        assert response.status == 200
        cleaned = list(csv.reader(io.StringIO(response.text(), newline="")))
        expected = GOOD_ROWS + [[f"Row{n}", f"row{n}@example.com", "Lugo"] for n in range(150)]
        assert cleaned == expected
        # Another visitor can't have it.
        stranger = browser.new_context(locale="en-US")
        assert stranger.request.get(server.url(href)).status == 404
        stranger.close()
    finally:
        context.close()


def test_an_import_paused_on_its_page_goes_on_from_the_row_it_reached(browser, server, request):
    from .test_browser import WAIT_MS, Shots

    shots = Shots(request.node.name)
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    try:
        page.goto(server.url("/import/"))
        rows = b"name,email,city\r\n" + b"".join(
            f"Row{n},row{n}@example.com,Lugo\r\n".encode() for n in range(400)
        )
        choose_and_import(page, "many.csv", rows)
        current = '#lp-import .lp-stages li[aria-current="step"]'
        page.wait_for_selector(f"{current}:text-is('Import')", timeout=WAIT_MS)
        page.click("#lp-import .lp-pause")
        page.wait_for_selector('#lp-import[data-status="paused"]', timeout=WAIT_MS)
        job_id = page.get_attribute("#lp-import", "data-job")
        paused = context.request.get(server.url(f"/api/jobs/{job_id}/")).json()
        assert paused["status"] == "paused"
        at = paused["current"]
        assert 0 < at < 400
        shots.take(page, "paused")
        page.click("#lp-import .lp-resume")
        page.wait_for_selector(
            f"#lp-import .lp-outcome:has-text('Resumed from {at}.')", timeout=WAIT_MS
        )
        page.wait_for_selector('#lp-import[data-status="succeeded"]', timeout=30_000)
        final = context.request.get(server.url(f"/api/jobs/{job_id}/")).json()
        assert (final["resumed_from"], final["result"]["imported"]) == (at, 400)
        # Every row once: none lost at the pause, none imported twice after it.
        href = page.locator("#lp-import .lp-files a").get_attribute("href")
        cleaned = list(csv.reader(io.StringIO(context.request.get(server.url(href)).text())))
        assert cleaned[1:] == [[f"Row{n}", f"row{n}@example.com", "Lugo"] for n in range(400)]
        shots.take(page, "succeeded")
    finally:
        context.close()
