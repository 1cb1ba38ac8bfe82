"""The demo site's settings with Django's own sign-in and sign-out pages
(tests/staff_urls.py), for the servers of tests/test_staff.py and
tests/test_session_end.py: real logins, real logouts."""

from proyecto.settings import *  # noqa: F403

ROOT_URLCONF = "tests.staff_urls"
TEMPLATES = [{**TEMPLATES[0], "DIRS": [BASE_DIR / "tests" / "templates"]}]  # noqa: F405
LOGIN_REDIRECT_URL = LOGOUT_REDIRECT_URL = "/jobs/"
