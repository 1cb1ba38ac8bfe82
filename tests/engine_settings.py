"""The demo site's settings, with the engines' test tasks and a view to start them
(tests/test_engines.py runs its servers and workers with these)."""

from proyecto.settings import *  # noqa: F403

ROOT_URLCONF = "tests.engine_urls"
# Celery workers import the test tasks too.
CELERY_IMPORTS = ["tests.engine_tasks.celery"]
