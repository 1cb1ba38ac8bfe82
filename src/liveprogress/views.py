"""The page of liveprogress: ``/jobs/``, every job of the visitor, live."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from . import actions, emails
from .owner import request_owner
from .registry import kinds
from .templatetags.liveprogress import VIEWER

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
    context = {"jobs": jobs, "titles": kind_titles(), "email": email, VIEWER: owner}
    return render(request, "liveprogress/jobs.html", context)
