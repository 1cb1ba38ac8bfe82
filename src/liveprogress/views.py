"""The pages of liveprogress: ``/progress/`` (the original example's) and ``/jobs/``."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.utils.translation import gettext_lazy as _
from django.views.decorators.csrf import ensure_csrf_cookie

from . import actions, conf
from .exceptions import RequestError
from .owner import request_owner
from .registry import JobKind, get_kind, kinds

#: The most jobs ``/jobs/`` renders; newer ones arrive live.
JOBS_PAGE_LIMIT = 50
DEMO_KIND = "demo.timer"
#: Labels of the demo's parameters in the page's form.
DEMO_FIELD_LABELS = {"steps": _("Steps"), "interval": _("Seconds per step")}


def _demo_kind(name: str) -> JobKind:
    """A demo's kind, or 404 when the demo jobs are turned off (DEMO_JOBS)."""
    try:
        return get_kind(name)
    except RequestError:
        raise Http404("The demo jobs are turned off (DEMO_JOBS)") from None


def _titles() -> dict[str, str]:
    """Kind -> title in the request's language, for rows the page's script adds."""
    return {name: str(kind.title) for name, kind in kinds().items()}


def _form_fields(kind: JobKind, query: QueryDict) -> list[dict[str, Any]]:
    """The demo's parameters with their bounds and defaults, read from its signature.

    Values in the query string (``/progress/?steps=3&interval=0.5``) replace the
    defaults when they are valid: the page starts its process with them.
    """
    schema = kind.params_model.model_json_schema()["properties"]
    chosen: dict[str, Any] = {}
    given = {name: query[name] for name in schema if name in query}
    if given:
        try:
            chosen = kind.validate(given, from_strings=True)
        except RequestError:
            chosen = {}
    return [
        {
            "name": name,
            "label": DEMO_FIELD_LABELS.get(name, name),
            "default": chosen.get(name, spec.get("default", "")),
            "minimum": spec.get("minimum"),
            "maximum": spec.get("maximum"),
            "step": 1 if spec.get("type") == "integer" else "any",
        }
        for name, spec in schema.items()
    ]


@ensure_csrf_cookie
async def progress_page(request: HttpRequest) -> HttpResponse:
    """The original example's page: a timed process whose bar fills live.

    The page's script resumes the visitor's running timed process, or starts one.
    """
    demo = _demo_kind(DEMO_KIND)
    # The socket that the page opens needs the visitor's session to own jobs.
    await request_owner(request)
    context = {"kind": demo, "fields": _form_fields(demo, request.GET), "titles": _titles()}
    return render(request, "liveprogress/progress.html", context)


@ensure_csrf_cookie
async def import_page(request: HttpRequest) -> HttpResponse:
    """The CSV import demo: upload a file, watch it validated, imported, summarised."""
    _demo_kind("demo.csv_import")
    await request_owner(request)
    context = {"titles": _titles(), "limit": conf.get("CSV_IMPORT_MAX_BYTES")}
    return render(request, "liveprogress/import.html", context)


@ensure_csrf_cookie
async def jobs_page(request: HttpRequest) -> HttpResponse:
    """Every job of the visitor, newest first, each bar live; new ones appear."""
    owner = await request_owner(request)
    jobs = await actions.list_jobs(owner, limit=JOBS_PAGE_LIMIT) if owner else []
    return render(request, "liveprogress/jobs.html", {"jobs": jobs, "titles": _titles()})
