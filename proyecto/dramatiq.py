"""The demo's Dramatiq broker (when DRAMATIQ_REDIS_URL is set), and its workers'
entry: ``dramatiq proyecto.dramatiq proyecto.demo.engines.dramatiq_tasks``.

A worker process imports this module first: Django is set up here, before any
actor's module imports a model. The server has set Django up already; its actors'
modules import this one for the broker.
"""

import os

import django
import dramatiq
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from dramatiq.brokers.redis import RedisBroker

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proyecto.settings")
if not apps.ready:
    django.setup()

if not getattr(settings, "DRAMATIQ_REDIS_URL", ""):
    raise ImproperlyConfigured("Set DRAMATIQ_REDIS_URL to run the demo's Dramatiq actors")
broker = RedisBroker(url=settings.DRAMATIQ_REDIS_URL)
dramatiq.set_broker(broker)
