"""HTTP routes of liveprogress: include them at the site's root.

The JSON API and its event streams under ``api/jobs/`` (htmx's fragment stream
too), the ``/jobs/`` page, the staff view's ``/jobs/staff/``, a share link's
``/shared/<token>/`` (404 unless the site turns ``SHARE_LINKS`` on), the scripts'
translations and the Prometheus endpoint (404 unless the site turns ``METRICS``
on). Nothing else: no demo, no upload endpoint, no htmx page.
"""

from __future__ import annotations

from django.urls import path
from django.views.generic import RedirectView
from django.views.i18n import JavaScriptCatalog

from . import api, events, views
from .metrics_endpoint import metrics_view

app_name = "liveprogress"

urlpatterns = [
    path("jobs/", views.jobs_page, name="jobs-page"),
    path("jobs/staff/", views.staff_page, name="staff-page"),
    # Share links (off unless SHARE_LINKS): the page a link opens, and its feeds.
    path("shared/<str:token>/", views.shared_page, name="shared-page"),
    path(
        "jobs",
        RedirectView.as_view(
            pattern_name="liveprogress:jobs-page", permanent=True, query_string=True
        ),
    ),
    path("api/jobs/", api.jobs, name="jobs"),
    # Before <job_id>/, which would take "events" or "staff" for an id.
    path("api/jobs/events/", events.owner_events, name="owner-events"),
    path("api/jobs/staff/", api.staff_jobs, name="staff-jobs"),
    path("api/jobs/staff/events/", events.staff_events, name="staff-events"),
    path("api/jobs/staff/<str:job_id>/cancel/", api.staff_cancel, name="staff-cancel"),
    path("api/jobs/shared/<str:token>/<str:job_id>/", api.shared_job, name="shared-job"),
    path(
        "api/jobs/shared/<str:token>/<str:job_id>/events/",
        events.shared_events,
        name="shared-events",
    ),
    path("api/jobs/<str:job_id>/", api.job, name="job"),
    path("api/jobs/<str:job_id>/cancel/", api.cancel, name="cancel"),
    path("api/jobs/<str:job_id>/pause/", api.pause, name="pause"),
    path("api/jobs/<str:job_id>/resume/", api.resume, name="resume"),
    path("api/jobs/<str:job_id>/notify/", api.notify, name="notify"),
    path("api/jobs/<str:job_id>/shares/", api.job_shares, name="job-shares"),
    path(
        "api/jobs/<str:job_id>/shares/<str:share_id>/revoke/",
        api.revoke_share,
        name="revoke-share",
    ),
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
    # Answers only when the site set METRICS (docs/metrics.md); staff or token.
    path("liveprogress/metrics/", metrics_view, name="metrics"),
]
