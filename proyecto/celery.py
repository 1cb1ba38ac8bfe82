"""The demo's Celery app (when CELERY_BROKER_URL is set): ``celery -A proyecto worker``.

Celery reads its settings from Django's, the CELERY_ ones; the demo's tasks are
in ``proyecto/demo/engines/celery_tasks.py``.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proyecto.settings")

app = Celery("proyecto", include=["proyecto.demo.engines.celery_tasks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
