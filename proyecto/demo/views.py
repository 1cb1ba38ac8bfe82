"""The demo's pages: ``/progress/`` (the original example's), ``/htmx/`` (the same
with htmx, no script of its own) and ``/import/``."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_http_methods

from liveprogress import JobDefinition, JobHandle, aget_job, aowner_of
from liveprogress.emails import can_email
from liveprogress.exceptions import RequestError
from liveprogress.models import ACTIVE_STATUSES, Job
from liveprogress.templatetags.liveprogress import VIEWER
from liveprogress.views import kind_titles

from .engines import ENGINES, engines, timer_kind
from .jobs import csv_max_bytes, timer

#: Labels of the timed process's parameters in the page's form.
FIELD_LABELS = {"steps": _("Steps"), "interval": _("Seconds per step")}


def _form_fields(definition: JobDefinition, query: QueryDict) -> list[dict[str, Any]]:
    """The timed process's parameters with their bounds and defaults, read from its
    signature.

    Values in the query string (``/progress/?steps=3&interval=0.5``) replace the
    defaults when they are valid: the page starts its process with them.
    """
    schema = definition.kind.params_model.model_json_schema()["properties"]
    chosen = _chosen(definition, query)
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


def _engine_choices(query: QueryDict) -> list[dict[str, Any]]:
    """The engines set up on this site that the page offers the timed process on, after
    liveprogress's own runner: each one's name, label, job kind and start URL, the one
    named in the query (``/progress/?engine=celery``) chosen."""
    return [
        {
            "name": name,
            "label": ENGINES[name][0],
            "kind": timer_kind(name),
            "url": reverse("demo:engine-start", args=[name]),
            "chosen": query.get("engine") == name,
        }
        for name in engines()
    ]


def _given(definition: JobDefinition, query: QueryDict) -> dict[str, str]:
    """The job's parameters that ``query`` names, as text."""
    schema = definition.kind.params_model.model_json_schema()["properties"]
    return {name: query[name] for name in schema if name in query}


def _chosen(definition: JobDefinition, query: QueryDict) -> dict[str, Any]:
    """The parameters ``query`` gives, validated; none when any is invalid."""
    given = _given(definition, query)
    try:
        return definition.kind.validate(given, from_strings=True) if given else {}
    except RequestError:
        return {}


@ensure_csrf_cookie
async def progress_page(request: HttpRequest) -> HttpResponse:
    """The original example's page: a timed process whose bar fills live.

    The page's script resumes the visitor's running timed process, or starts one:
    with liveprogress's own runner, or on the engine chosen when the site has any.
    """
    # The socket that the page opens needs the visitor's session to own jobs.
    owner = await aowner_of(request)
    choices = _engine_choices(request.GET)
    titles = kind_titles()
    for engine in choices:
        # The bar's title says which engine runs the job.
        titles[engine["kind"]] = gettext("%(process)s on %(engine)s") % {
            "process": timer.kind.title,
            "engine": engine["label"],
        }
    context = {
        "kind": timer.kind,
        "fields": _form_fields(timer, request.GET),
        "engines": choices,
        "titles": titles,
        # "Email me when it ends": for a signed-in user with an address only.
        "can_email": await can_email(owner),
    }
    return render(request, "demo/progress.html", context)


@ensure_csrf_cookie
async def import_page(request: HttpRequest) -> HttpResponse:
    """The CSV import demo: upload a file, watch it validated, imported, summarised."""
    await aowner_of(request)
    context = {"titles": kind_titles(), "limit": csv_max_bytes()}
    return render(request, "demo/import.html", context)


@require_http_methods(["GET", "POST"])
async def htmx_page(request: HttpRequest) -> HttpResponse:
    """The timed process kept live by htmx alone: the server renders the bar, and
    htmx's SSE extension swaps in each new one. No script of the demo's or of
    liveprogress's.

    Like ``/progress/``, it shows the visitor's running timed process, or starts
    one (with the query's steps and interval when valid); the form posts to start
    another.
    """
    owner = await aowner_of(request)
    try:
        if request.method == "POST":
            params = timer.kind.validate(_given(timer, request.POST), from_strings=True)
            await timer.astart(request, **params)
            # Post, redirect, get: a reload shows the new job, it doesn't start another.
            return redirect("demo:htmx")
        handle = await _running_timer(owner) or await timer.astart(
            request, **_chosen(timer, request.GET)
        )
    except RequestError as error:
        # Refused (a bad value, a limit reached): said on the page, beside the running job.
        handle, refused = await _running_timer(owner), error
    else:
        refused = None
    context = {
        "kind": timer.kind,
        "job": handle,
        "fields": _form_fields(timer, request.POST if refused else request.GET),
        "refused": refused,
        # An async view names the viewer: the bar renders for its owner only.
        VIEWER: owner,
    }
    status = refused.http_status if refused else 200
    return render(request, "demo/htmx.html", context, status=status)


async def _running_timer(owner: str) -> JobHandle | None:
    """The visitor's newest timed process that still runs."""
    running = (
        await Job.objects.filter(owner=owner, kind=timer.name, status__in=ACTIVE_STATUSES)
        .order_by("-created_at")
        .afirst()
    )
    return None if running is None else await aget_job(owner, running.id)
