"""The demo's job kinds (this app's `jobs` module: liveprogress imports it at start-up).

- ``demo.timer``: the original example's fictitious timed process.
- ``demo.csv_import``: a real one: validate an uploaded CSV file, import it row
  by row (bad rows are logged and left out), and offer the cleaned file. Started
  by the ``/import/`` page's upload view only (not public: its parameter names
  a stored upload).
- ``demo.batch``: a parent job that runs timed processes as its children and
  reports their combined progress.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import time
from typing import Annotated, Any

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.db import DatabaseError
from django.template.defaultfilters import filesizeformat
from django.utils.text import get_valid_filename
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from pydantic import Field

from liveprogress import Progress, job
from liveprogress.files import clean_name, storage

from .models import ImportedRow

#: Where the upload view stores uploads (the import deletes each when it ends).
UPLOADS = "demo/uploads/"
#: The largest file the import takes, unless settings.DEMO_CSV_MAX_BYTES says otherwise.
DEFAULT_CSV_MAX_BYTES = 2 * 1024 * 1024


def csv_max_bytes() -> int:
    """The largest file the CSV import takes (a larger one fails the job, saying so)."""
    return int(getattr(settings, "DEMO_CSV_MAX_BYTES", DEFAULT_CSV_MAX_BYTES))


@job("demo.timer", title=gettext_lazy("Timed process"))
async def timer(
    progress: Progress,
    steps: Annotated[int, Field(ge=1, le=10_000)] = 10,
    interval: Annotated[float, Field(ge=0, le=60)] = 1.0,
) -> dict[str, int]:
    """Count ``steps`` steps of ``interval`` seconds, saying the percent at each.

    Each step is a checkpoint: paused (or retried), it goes on from the step it
    reached.
    """
    progress.start(total=steps, message=_("Progress: %(percent)d%%") % {"percent": 0})
    done = (progress.checkpoint_data or {}).get("step", 0)
    if done:
        progress.set(done, message=_("Progress: %(percent)d%%") % {"percent": done * 100 // steps})
    for step in range(done + 1, steps + 1):
        await asyncio.sleep(interval)
        progress.advance(message=_("Progress: %(percent)d%%") % {"percent": step * 100 // steps})
        progress.checkpoint({"step": step})
    progress.message(_("Process completed!"))
    return {"steps": steps}


@job("demo.batch", title=gettext_lazy("Batch of timed processes"))
async def batch(
    progress: Progress,
    parts: Annotated[int, Field(ge=1, le=5)] = 3,
    steps: Annotated[int, Field(ge=1, le=1000)] = 5,
    interval: Annotated[float, Field(ge=0, le=10)] = 0.5,
) -> dict[str, int]:
    """Run ``parts`` timed processes as child jobs; its bar is theirs combined."""
    progress.message(_("Starting %(parts)d timed processes") % {"parts": parts})
    for _part in range(parts):
        await progress.spawn("demo.timer", {"steps": steps, "interval": interval})
    progress.message(_("Waiting for the timed processes"))
    children = await progress.wait_children()
    succeeded = sum(child["status"] == "succeeded" for child in children)
    progress.message(
        _("%(done)d of %(parts)d timed processes succeeded") % {"done": succeeded, "parts": parts}
    )
    return {"parts": parts, "succeeded": succeeded}


# -- the CSV import ----------------------------------------------------------------

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ImportRefused(ValueError):
    """The file can't be imported; the message says why (the job's error)."""


@job(
    "demo.csv_import",
    title=gettext_lazy("CSV import"),
    public=False,
    # Safe to run again: a next attempt goes on from the row its checkpoint names
    # (progress.track), and a row met twice is imported once (ImportedRow).
    max_attempts=3,
    backoff=1.0,
    retry_on=(DatabaseError, OSError),
)
def csv_import(
    progress: Progress,
    upload: Annotated[str, Field(pattern=r"^demo/uploads/[0-9a-f]{32}\.csv$")],
    name: Annotated[str, Field(max_length=200)] = "data.csv",
    size: Annotated[int, Field(ge=0)] = 0,
    row_delay: Annotated[float, Field(ge=0, le=1)] = 0.02,
) -> dict[str, Any]:
    """Validate the stored upload, import it row by row, attach the cleaned CSV.

    Its upload and imported rows go when the job ends, however it ends (a
    ``job_finished`` receiver: apps.py), not when an attempt stops: a paused or
    retried import goes on from its checkpoint and needs them.
    """
    validate, load, summarise = _("Validate"), _("Import"), _("Summarise")
    progress.plan({validate: 1, load: 8, summarise: 1})
    with progress.stage(validate):
        header, rows = _read_csv(progress, storage(), upload, size)
    with progress.stage(load):
        checks = [_EMAIL if "mail" in column.lower() else None for column in header]
        # Each row's place in the file's rows (a resumed import starts mid-way).
        places = {line: place for place, (line, _row) in enumerate(rows, start=1)}
        for line, row in progress.track(rows):
            problem = _problem(row, header, checks)
            if problem:
                progress.log(
                    _("Row %(row)d skipped: %(problem)s") % {"row": line, "problem": problem},
                    level="warning",
                )
            else:
                # Keyed by job and line: a row imported before a crash, and met again
                # after the checkpoint, stays one row.
                ImportedRow.objects.get_or_create(
                    job_id=progress.job_id,
                    line=line,
                    defaults={"values": [cell.strip() for cell in row]},
                )
            progress.message(
                _("%(done)d of %(total)d rows") % {"done": places[line], "total": len(rows)}
            )
            if row_delay:
                time.sleep(row_delay)
    with progress.stage(summarise):
        kept = list(
            ImportedRow.objects.filter(job_id=progress.job_id)
            .order_by("line")
            .values_list("values", flat=True)
        )
        bad = len(rows) - len(kept)
        output = io.StringIO()
        writer = csv.writer(output)
        writer.writerow(header)
        writer.writerows(kept)
        cleaned = cleaned_name(name)
        progress.attach(cleaned, output.getvalue(), "text/csv")
        summary = _("%(kept)d of %(total)d rows imported, %(bad)d skipped.") % {
            "kept": len(kept),
            "total": len(rows),
            "bad": bad,
        }
        progress.log(summary)
        progress.message(summary)
    return {
        "file": name,
        "rows": len(rows),
        "imported": len(kept),
        "skipped": bad,
        "columns": header,
    }


def cleaned_name(uploaded: str) -> str:
    """The cleaned file's name: ``cleaned-<the upload's name>.csv``, made safe, or
    ``cleaned-data.csv`` when nothing of the name is usable (``!!!.csv``, ``..csv``)."""
    stem = _valid_or_empty(uploaded.rsplit("/", 1)[-1].rsplit(".", 1)[0])
    return clean_name(f"cleaned-{stem.strip('._-')[:60] or 'data'}.csv")


def _valid_or_empty(name: str) -> str:
    try:
        return get_valid_filename(name)
    except SuspiciousFileOperation:
        return ""


def _read_csv(
    progress: Progress, store: Any, upload: str, size: int
) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the rows, each with the line of the file it starts on (what a
    spreadsheet calls its row: blank lines count, though they are no rows)."""
    limit = csv_max_bytes()
    if size > limit:
        raise ImportRefused(
            _("The file is %(size)s; this import takes at most %(limit)s.")
            % {"size": filesizeformat(size), "limit": filesizeformat(limit)}
        )
    progress.message(_("Checking the file"))
    with store.open(upload, "rb") as handle:
        raw = handle.read(limit + 1)
    if not raw.strip():
        raise ImportRefused(_("The file is empty."))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportRefused(
            _(
                "The file is not UTF-8 text (byte 0x%(byte)02x at position %(position)d). "
                "Save it as “CSV UTF-8” and upload it again."
            )
            % {"byte": raw[exc.start], "position": exc.start}
        ) from None
    if "\x00" in text:
        raise ImportRefused(_("The file is binary, not CSV text."))
    # The separator is the one the header row uses most (the sniffer in the csv
    # module guesses from every row, and bad rows, which this demo expects, fool it).
    first_line = text.lstrip().split("\n", 1)[0]
    delimiter = max(",;\t", key=first_line.count)
    if first_line.count(delimiter) == 0:
        raise ImportRefused(
            _("This is not CSV: no column separator (comma, semicolon or tab) was found.")
        )
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    table, line = [], 1
    try:
        for row in reader:
            if row:
                table.append((line, row))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise ImportRefused(_("This is not valid CSV: %(error)s") % {"error": exc}) from None
    header = [cell.strip() for cell in table[0][1]]
    if len(header) < 2 or any(not cell for cell in header) or len(set(header)) < len(header):
        raise ImportRefused(
            _("The first row must name at least two columns, each once and none empty.")
        )
    if len(table) < 2:
        raise ImportRefused(_("The file has a header and no rows."))
    if not progress.resumed:
        # Said once: a resumed attempt reads the file again, and its log already has it.
        progress.log(
            _("%(rows)d rows, columns: %(columns)s")
            % {"rows": len(table) - 1, "columns": ", ".join(header)}
        )
    return header, table[1:]


def _problem(row: list[str], header: list[str], checks: list[re.Pattern[str] | None]) -> str:
    """Why the row can't be imported, or an empty string."""
    if len(row) != len(header):
        return _("%(found)d values for %(expected)d columns") % {
            "found": len(row),
            "expected": len(header),
        }
    if not any(cell.strip() for cell in row):
        return _("every value is empty")
    for column, cell, check in zip(header, row, checks, strict=True):
        if check is not None and cell.strip() and not check.match(cell.strip()):
            return _("“%(value)s” is not an email address (column %(column)s)") % {
                "value": cell.strip()[:80],
                "column": column,
            }
    return ""
