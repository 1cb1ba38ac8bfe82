"""Settings of the engines benchmark's site (``bench/engines.py``): the demo site's,
with Celery's Redis result backend (celery-progress's recorder writes there and its
view reads there), the benchmark's tasks and ``bench/engine_urls.py``.

Environment, beside the demo's (``proyecto/settings.py``): CELERY_BROKER_URL,
REDIS_URL (the channel layer) and CELERY_RESULT_BACKEND, each required here.
"""

import os

from proyecto.settings import *  # noqa: F403

ROOT_URLCONF = "bench.engine_urls"
# The worker imports the benchmark's tasks too.
CELERY_IMPORTS = ["bench.engine_tasks"]
# Only celery-progress's tasks and the bare loop store results (ignore_result=False on
# each); liveprogress's keep the demo's CELERY_TASK_IGNORE_RESULT = True.
CELERY_RESULT_BACKEND = os.environ["CELERY_RESULT_BACKEND"]
