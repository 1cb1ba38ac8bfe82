"""The demo's pages: ``/progress/`` (the original example's) and ``/import/``."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.utils.translation import gettext_lazy as _
from django.views.decorators.csrf import ensure_csrf_cookie

from liveprogress import JobDefinition, aowner_of
from liveprogress.exceptions import RequestError
from liveprogress.views import kind_titles

from .jobs import csv_max_bytes, timer

#: Labels of the timed process's parameters in the page's form.
FIELD_LABELS = {"steps": _("Steps"), "interval": _("Seconds per step")}


def _form_fields(definition: JobDefinition, query: QueryDict) -> list[dict[str, Any]]:
    """The timed process's parameters with their bounds and defaults, read from its
    signature.

    Values in the query string (``/progress/?steps=3&interval=0.5``) replace the
    defaults when they are valid: the page starts its process with them.
    """
    kind = definition.kind
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
            "label": FIELD_LABELS.get(name, name),
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
    # The socket that the page opens needs the visitor's session to own jobs.
    await aowner_of(request)
    context = {
        "kind": timer.kind,
        "fields": _form_fields(timer, request.GET),
        "titles": kind_titles(),
    }
    return render(request, "demo/progress.html", context)


@ensure_csrf_cookie
async def import_page(request: HttpRequest) -> HttpResponse:
    """The CSV import demo: upload a file, watch it validated, imported, summarised."""
    await aowner_of(request)
    context = {"titles": kind_titles(), "limit": csv_max_bytes()}
    return render(request, "demo/import.html", context)
