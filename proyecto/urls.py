from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="demo:progress")),
    path("admin/", admin.site.urls),
    path("", include("proyecto.demo.urls")),
    path("", include("liveprogress.urls")),
]

# JSON errors under /api/, Django's pages elsewhere.
handler400 = "liveprogress.api.bad_request"
handler404 = "liveprogress.api.not_found"
