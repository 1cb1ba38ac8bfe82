"""The demo's pages and its upload endpoint."""

from __future__ import annotations

from django.urls import path
from django.views.generic import RedirectView

from . import engine_views, uploads, views

app_name = "demo"

urlpatterns = [
    path("progress/", views.progress_page, name="progress"),
    # The original example's address, without the slash.
    path(
        "progress",
        RedirectView.as_view(pattern_name="demo:progress", permanent=True, query_string=True),
    ),
    path("htmx/", views.htmx_page, name="htmx"),
    path("import/", views.import_page, name="import"),
    path("api/imports/", uploads.csv_import_upload, name="csv-import"),
    path("api/engines/<str:engine>/", engine_views.start_on_engine, name="engine-start"),
]
