"""The pages of liveprogress: ``/jobs/``, every job of the visitor, live; the
staff view ``/jobs/staff/``, every job, live (staff.py says who may see it); and
``/shared/<token>/``, one job through a share link (shares.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from django.views.decorators.csrf import ensure_csrf_cookie

from . import actions, emails, shares, staff
from .exceptions import RequestError
from .fragments import bar_context
from .models import ACTIVE_STATUSES, Status
from .owner import request_owner
from .registry import kinds
from .state import job_state
from .templatetags.liveprogress import VIEWER

#: The context variable that shows the staff view's link in the pages' navigation
#: (a template can't ask for a permission in an async view: that reads the database).
STAFF_LINK = "liveprogress_staff"
#: The most jobs ``/jobs/`` renders; newer ones arrive live.
JOBS_PAGE_LIMIT = 50


def kind_titles() -> dict[str, str]:
    """Kind -> title in the request's language, for rows a page's script adds."""
    return {name: str(kind.title) for name, kind in kinds().items()}


@ensure_csrf_cookie
async def jobs_page(request: HttpRequest) -> HttpResponse:
    """Every job of the visitor, newest first, each bar live; new ones appear. A
    signed-in user with an address may ask to be emailed when a running one ends."""
    owner = await request_owner(request)
    jobs = await actions.list_jobs(owner, limit=JOBS_PAGE_LIMIT) if owner else []
    # The jobs that will email (null: the visitor can't ask for email).
    email = None
    if owner is not None and await emails.can_email(owner):
        email = {"jobs": await actions.emailing_jobs(owner)}
    context = {
        "jobs": jobs,
        "titles": kind_titles(),
        "email": email,
        VIEWER: owner,
        STAFF_LINK: await staff.may_watch_all(request),
    }
    return render(request, "liveprogress/jobs.html", context)


@ensure_csrf_cookie
async def staff_page(request: HttpRequest) -> HttpResponse:
    """Every job the filters select (``?kind=&status=&owner=``), newest first, live;
    Cancel for staff who may. A page that does not exist for everyone else."""
    try:
        user = await staff.staff_viewer(request)
    except RequestError:
        raise Http404("No such page") from None
    try:
        jobs_filter = await staff.JobFilter.from_query(request.GET)
    except RequestError as error:
        jobs_filter, problem = staff.JobFilter(), error.detail
    else:
        problem = ""
    rows = [] if problem else await staff.list_rows(jobs_filter.jobs(), staff.STAFF_LIST_LIMIT)
    titles = kind_titles()
    query = jobs_filter.query_string()
    context = {
        "rows": [_shown(row, titles) for row in rows],
        "filter": jobs_filter,
        "problem": problem,
        "limit": staff.STAFF_LIST_LIMIT,
        "kinds": sorted(titles.items(), key=lambda item: str(item[1])),
        "statuses": [("active", _("Queued or running")), *Status.choices],
        "can_cancel": await user.ahas_perm(staff.CANCEL_PERMISSION),
        # No live feed for filters that select nothing valid.
        "events_url": ""
        if problem
        else reverse("liveprogress:staff-events") + (f"?{query}" if query else ""),
        "titles": titles,
        STAFF_LINK: True,
    }
    return render(request, "liveprogress/staff.html", context)


def _shown(row: dict[str, Any], titles: dict[str, str]) -> dict[str, Any]:
    """A staff row with what its template shows in words and dates."""
    state = row["job"]
    return {
        **row,
        "title": titles.get(state["kind"], state["kind"]),
        "status_label": Status(state["status"]).label,
        "active": state["status"] in ACTIVE_STATUSES,
        "created": datetime.fromtimestamp(state["created_at"], tz=UTC),
        "cancelled": None
        if row["cancelled_at"] is None
        else datetime.fromtimestamp(row["cancelled_at"], tz=UTC),
    }


async def shared_page(request: HttpRequest, token: str) -> HttpResponse:
    """One job through a share link: its bar, live and read-only (no Cancel, no
    result, files or log). A page that does not exist for a malformed, unknown,
    revoked or expired link. The visitor needs no session and is given none."""
    try:
        share = await shares.find_shared(token)
    except RequestError:
        raise Http404("No such page") from None
    [job] = await actions.live_jobs([share.job])
    state = shares.viewer_state(job_state(job))
    feed = reverse("liveprogress:shared-job", args=[token, state["id"]])
    context = {
        "state": state,
        "bar": render_to_string("liveprogress/bar.html", bar_context(state, cancel=False)),
        "expires_at": share.expires_at,
        # The client's apiPath: it adds "<job id>/" (and "events/") itself.
        "api_path": feed.removesuffix(f"{state['id']}/"),
        "titles": kind_titles(),
    }
    response = render(request, "liveprogress/shared.html", context)
    # The token is the key: no Referer carries it away, no search engine keeps it,
    # no cache stores the page.
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Cache-Control"] = "no-store"
    return response
