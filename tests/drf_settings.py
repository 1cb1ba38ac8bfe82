"""The demo site's settings with the REST framework site of tests/drf_site.py
routed, paginated by the site's settings, and API clients signing in with a token
(a Daphne server of tests/test_drf.py)."""

from proyecto.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "rest_framework", "rest_framework.authtoken"]  # noqa: F405
ROOT_URLCONF = "tests.drf_site"
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 2,
}
