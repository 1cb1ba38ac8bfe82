"""URL configuration for mysite: the reports app, and liveprogress's API, streams and pages."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("reports.urls")),
    path("", include("liveprogress.urls")),
]
