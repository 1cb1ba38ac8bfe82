"""Start a count, then watch it: the page's bar follows the job live."""

import liveprogress
from django import forms
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from .jobs import count_rows


class CountForm(forms.Form):
    n = forms.IntegerField(min_value=1, max_value=10_000, initial=50)


async def index(request: HttpRequest) -> HttpResponse:
    return render(request, "reports/index.html", {"form": CountForm()})


@require_POST
async def start(request: HttpRequest) -> HttpResponse:
    form = CountForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest(form.errors.as_text())
    # The request owns the job: its user, else its session (created if needed).
    handle = await count_rows.astart(request, n=form.cleaned_data["n"], delay=0.05)
    return redirect("reports:report", job_id=handle.id)


async def report(request: HttpRequest, job_id: str) -> HttpResponse:
    try:
        handle = await liveprogress.aget_job(request, str(job_id))
    except liveprogress.JobNotFound:
        raise Http404("No such job") from None
    # The bar shows a job only to its owner; an async view names the viewer (the
    # request's user can't be read from async code).
    viewer = await liveprogress.aowner_of(request)
    return render(request, "reports/report.html", {"handle": handle, "liveprogress_viewer": viewer})
