"""HTTP routes of liveprogress: include them at the site's root.

The JSON API and its event streams under ``api/jobs/`` (htmx's fragment stream
too), the ``/jobs/`` page and the scripts' translations. Nothing else: no demo, no
upload endpoint, no htmx page.
"""

from __future__ import annotations

from django.urls import path
from django.views.generic import RedirectView
from django.views.i18n import JavaScriptCatalog

from . import api, events, views

app_name = "liveprogress"

urlpatterns = [
    path("jobs/", views.jobs_page, name="jobs-page"),
    path(
        "jobs",
        RedirectView.as_view(
            pattern_name="liveprogress:jobs-page", permanent=True, query_string=True
        ),
    ),
    path("api/jobs/", api.jobs, name="jobs"),
    # Before <job_id>/, which would take "events" for an id.
    path("api/jobs/events/", events.owner_events, name="owner-events"),
    path("api/jobs/<str:job_id>/", api.job, name="job"),
    path("api/jobs/<str:job_id>/cancel/", api.cancel, name="cancel"),
    path("api/jobs/<str:job_id>/notify/", api.notify, name="notify"),
    path("api/jobs/<str:job_id>/events/", events.job_events, name="job-events"),
    path("api/jobs/<str:job_id>/fragments/", events.job_fragments, name="job-fragments"),
    path("api/jobs/<str:job_id>/logs/", api.job_logs, name="job-logs"),
    path("api/jobs/<str:job_id>/files/<str:name>", api.job_file, name="job-file"),
    # The translations of the pages' and the template tag's scripts.
    path(
        "liveprogress/jsi18n/",
        JavaScriptCatalog.as_view(packages=["liveprogress"]),
        name="jsi18n",
    ),
]
