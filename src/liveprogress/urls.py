"""HTTP routes of liveprogress: include them at the site's root."""

from __future__ import annotations

from django.urls import path
from django.views.generic import RedirectView

from . import api, views

app_name = "liveprogress"

urlpatterns = [
    path("progress/", views.progress_page, name="progress"),
    path("progress", RedirectView.as_view(pattern_name="liveprogress:progress", permanent=True)),
    path("api/jobs/", api.jobs, name="jobs"),
    path("api/jobs/<str:job_id>/", api.job, name="job"),
    path("api/jobs/<str:job_id>/cancel/", api.cancel, name="cancel"),
]
