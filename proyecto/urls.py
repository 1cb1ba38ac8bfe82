from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="liveprogress:progress")),
    path("admin/", admin.site.urls),
    path("", include("liveprogress.urls")),
]
# The demo serves its own assets (no CDN); a production site puts them behind its
# web server or WhiteNoise after `collectstatic`.
urlpatterns += staticfiles_urlpatterns()
