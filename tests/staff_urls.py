"""The demo site's routes with Django's sign-in and sign-out views at /accounts/."""

from django.urls import include, path

from proyecto.urls import handler400, handler404
from proyecto.urls import urlpatterns as site_urlpatterns

urlpatterns = [path("accounts/", include("django.contrib.auth.urls")), *site_urlpatterns]

__all__ = ["handler400", "handler404", "urlpatterns"]
