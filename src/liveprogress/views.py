"""The pages of liveprogress."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from .owner import request_owner


@ensure_csrf_cookie
async def progress_page(request: HttpRequest) -> HttpResponse:
    """The original example's page: a timed process whose bar fills live."""
    # The socket that the page opens needs the visitor's session to own jobs.
    await request_owner(request)
    return render(request, "liveprogress/progress.html")
