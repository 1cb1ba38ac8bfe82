"""System checks: ``manage.py check`` names a setting that would break live progress.

Each check reads the settings only (and, for W007, imports the ASGI application,
as ``runserver`` does), so it is cheap enough to run before every command. The
ids, what they mean and what to do are listed in ``docs/checks.md``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from channels.layers import InMemoryChannelLayer
from channels.routing import ProtocolTypeRouter, URLRouter
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import FileSystemStorage, storages
from django.urls import URLPattern, URLResolver
from django.utils.module_loading import import_string

from . import conf, metrics, webhooks
from .consumers import ProgressConsumer
from .registry import kinds
from .routing import SOCKET_PATH

#: The tag of liveprogress's checks: ``manage.py check --tag liveprogress``.
TAG = "liveprogress"

_LAYER_HINT = (
    "Set CHANNEL_LAYERS = {'default': {'BACKEND': 'channels.layers.InMemoryChannelLayer'}} "
    "for a single process, or channels_redis ('channels_redis.core.RedisChannelLayer') "
    "for several."
)


def _setting(name: str) -> Any:
    """A liveprogress setting, or None when the settings are invalid (E008 says why)."""
    try:
        # By a name held in a variable: the typed overloads of conf.get take literals.
        return conf.get(name)  # type: ignore[call-overload]
    except ImproperlyConfigured:
        return None


def _layer_backend() -> type | None:
    """The class of the default channel layer, or None if it can't be imported."""
    try:
        backend = import_string(str(settings.CHANNEL_LAYERS["default"]["BACKEND"]))
    except (AttributeError, KeyError, TypeError, ImportError):
        return None
    return backend if isinstance(backend, type) else None


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    """E008: the LIVEPROGRESS settings are valid (else the first read would raise)."""
    try:
        conf.get("RUNNER")
    except ImproperlyConfigured as error:
        return [
            Error(
                str(error),
                hint="Fix the LIVEPROGRESS setting; docs/settings.md lists each one "
                "with its type and default.",
                id="liveprogress.E008",
            )
        ]
    return []


def check_channel_layer(**kwargs: Any) -> list[CheckMessage]:
    """E001: a default channel layer; E002: one that reaches the tasks runner's workers."""
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    if "default" not in layers:
        return [
            Error(
                "No channel layer: CHANNEL_LAYERS has no 'default' layer, so jobs' "
                "states can't reach the sockets that watch them.",
                hint=_LAYER_HINT,
                id="liveprogress.E001",
            )
        ]
    backend = _layer_backend()
    if (
        _setting("RUNNER") == "tasks"
        and isinstance(backend, type)
        and issubclass(backend, InMemoryChannelLayer)
    ):
        return [
            Error(
                "LIVEPROGRESS['RUNNER'] is 'tasks' but the channel layer is in-memory: "
                "jobs run in worker processes the layer can't reach, so their states "
                "reach the servers only through the database every RECONCILE_INTERVAL "
                "seconds, and cancels take as long to reach the workers.",
                hint="Use channels_redis: CHANNEL_LAYERS['default']['BACKEND'] = "
                "'channels_redis.core.RedisChannelLayer'.",
                id="liveprogress.E002",
            )
        ]
    return []


def check_asgi(**kwargs: Any) -> list[CheckMessage]:
    """W003: an ASGI application; W004: no persistent database connections under it."""
    if not getattr(settings, "ASGI_APPLICATION", None):
        return [
            Warning(
                "ASGI_APPLICATION is not set: runserver serves WSGI, which has no "
                "WebSocket, and in-process jobs can't run there (a job started there "
                "ends 'failed', saying so).",
                hint="Set ASGI_APPLICATION = 'mysite.asgi.application' and add 'daphne' to "
                "INSTALLED_APPS before 'django.contrib.staticfiles' (runserver then serves "
                "ASGI). Serving with uvicorn, hypercorn or granian instead: set "
                "ASGI_APPLICATION all the same (liveprogress.W007 then checks its socket "
                "route), or silence this warning.",
                id="liveprogress.W003",
            )
        ]
    messages: list[CheckMessage] = []
    for alias, database in settings.DATABASES.items():
        max_age = database.get("CONN_MAX_AGE", 0)
        if max_age is None or max_age > 0:
            messages.append(
                Warning(
                    f"DATABASES[{alias!r}]['CONN_MAX_AGE'] = {max_age!r} under ASGI: "
                    "each request runs its queries in a thread that ends with it, so "
                    "persistent connections leak, one per request thread (enough to "
                    "exhaust PostgreSQL's connections).",
                    hint="Set CONN_MAX_AGE = 0, and pool connections with the "
                    "database's own tools (PgBouncer, or OPTIONS 'pool' on PostgreSQL).",
                    id="liveprogress.W004",
                )
            )
    return messages


def check_result_storage(**kwargs: Any) -> list[CheckMessage]:
    """E006: RESULT_STORAGE names a storage; E005: one with a location, if on disk."""
    alias = _setting("RESULT_STORAGE")
    if alias is None:
        return []
    params: dict[str, Any] | None = settings.STORAGES.get(alias)
    if params is None:
        return [
            Error(
                f"LIVEPROGRESS['RESULT_STORAGE'] = {alias!r} is not a storage of "
                f"settings.STORAGES, must be one of: {', '.join(storages.backends)}",
                hint=f"Add {alias!r} to STORAGES, or set RESULT_STORAGE to one of its aliases.",
                id="liveprogress.E006",
            )
        ]
    try:
        backend = import_string(params["BACKEND"])
    except (KeyError, ImportError):
        return []  # Django's own use of the storage says what is wrong with it
    if not (isinstance(backend, type) and issubclass(backend, FileSystemStorage)):
        return []
    # FileSystemStorage falls back on MEDIA_ROOT only for a location left out (None).
    location = params.get("OPTIONS", {}).get("location")
    if location is None:
        location = settings.MEDIA_ROOT
    if not str(location):
        return [
            Error(
                f"The storage {alias!r} (LIVEPROGRESS['RESULT_STORAGE']) keeps files on "
                "disk but has no location and MEDIA_ROOT is empty: jobs' files would "
                "land in the server's working directory.",
                hint=f"Set MEDIA_ROOT, or give STORAGES[{alias!r}] an OPTIONS 'location'.",
                id="liveprogress.E005",
            )
        ]
    return []


def check_socket_route(**kwargs: Any) -> list[CheckMessage]:
    """W007: the ASGI application routes ``ws/progress/`` to liveprogress's socket."""
    name = getattr(settings, "ASGI_APPLICATION", None)
    if not name:
        return []  # W003 says so
    hint = (
        "In the module ASGI_APPLICATION names, use liveprogress's application: "
        "`application = liveprogress.asgi.get_asgi_application()`, or route "
        "liveprogress.routing.websocket_urlpatterns in its URLRouter. Without it pages "
        "fall back to Server-Sent Events or polling."
    )
    try:
        application = import_string(name)
    except Exception as error:
        return [
            Warning(
                f"ASGI_APPLICATION {name!r} could not be imported to look for "
                f"liveprogress's socket route: {type(error).__name__}: {error}",
                hint=hint,
                id="liveprogress.W007",
            )
        ]
    problem = _socket_route_problem(application)
    if problem:
        return [Warning(f"ASGI_APPLICATION {name!r} {problem}.", hint=hint, id="liveprogress.W007")]
    return []


def _socket_route_problem(application: Any) -> str:
    """Why ``application`` does not serve liveprogress's socket, or "" if it does."""
    mapping = getattr(application, "application_mapping", None)
    if not isinstance(application, ProtocolTypeRouter) or not isinstance(mapping, dict):
        return "is not a channels ProtocolTypeRouter, so it serves no WebSocket"
    if "websocket" not in mapping:
        return "has no 'websocket' application"
    target = _resolve(mapping["websocket"], SOCKET_PATH)
    if target is None:
        return f"routes no WebSocket at {SOCKET_PATH}"
    consumer = getattr(target, "consumer_class", None)
    if isinstance(consumer, type) and issubclass(consumer, ProgressConsumer):
        return ""
    return f"routes {SOCKET_PATH} to {_name(target)}, not liveprogress's ProgressConsumer"


def _resolve(application: Any, path: str) -> Any:
    """What a socket at ``path`` reaches through ``application``'s middleware and
    URLRouters (None when no route matches), as channels' URLRouter would route it."""
    application = _unwrap(application)
    if not isinstance(application, URLRouter):
        return None
    path = path.lstrip("/")
    for route in application.routes:
        if not isinstance(route, URLPattern | URLResolver):
            continue
        match = route.pattern.match(path)
        if match:
            callback = _unwrap(route.callback)
            if isinstance(callback, URLRouter):
                return _resolve(callback, match[0])
            return callback
    return None


def _unwrap(application: Any) -> Any:
    """The application under channels' middleware (``.inner``) and origin
    validators (``.application``)."""
    for _ in range(50):  # a bound, should a wrapper point back at itself
        inner = getattr(application, "inner", None) or getattr(application, "application", None)
        if inner is None:
            break
        application = inner
    return application


def _name(application: Any) -> str:
    target = getattr(application, "consumer_class", application)
    if not isinstance(target, type) and not inspect.isfunction(target):
        target = type(target)
    return f"{target.__module__}.{target.__qualname__}"


#: The settings that show a site runs another engine's workers (docs/engines.md).
ENGINE_SETTINGS = {"CELERY_BROKER_URL": "Celery", "RQ_QUEUES": "RQ", "DRAMATIQ_BROKER": "Dramatiq"}
#: The engines by the names their kinds carry (``celery:...``).
ENGINE_LABELS = {"celery": "Celery", "rq": "RQ", "dramatiq": "Dramatiq", "tasks": "Django's Tasks"}


def check_engines_layer(**kwargs: Any) -> list[CheckMessage]:
    """W009: another engine's workers (Celery, RQ, Dramatiq, or any task registered
    through liveprogress.engines) with the in-memory channel layer."""
    backend = _layer_backend()
    if not (isinstance(backend, type) and issubclass(backend, InMemoryChannelLayer)):
        return []
    engines = {label for name, label in ENGINE_SETTINGS.items() if getattr(settings, name, None)}
    engines |= {
        ENGINE_LABELS.get(kind.engine, kind.engine) for kind in kinds().values() if kind.engine
    }
    if not engines:
        return []
    return [
        Warning(
            f"Tasks of {', '.join(sorted(engines))} report progress, but the channel layer "
            "is in-memory: their workers are other processes, so their states reach "
            "watchers only through the database every RECONCILE_INTERVAL seconds, and "
            "cancels take as long to reach them.",
            hint="Use channels_redis: CHANNEL_LAYERS['default']['BACKEND'] = "
            "'channels_redis.core.RedisChannelLayer' (docs/engines.md).",
            id="liveprogress.W009",
        )
    ]


def check_metrics(**kwargs: Any) -> list[CheckMessage]:
    """E010: METRICS on without prometheus_client; E011: PROMETHEUS_MULTIPROC_DIR is
    not a writable directory; W012: METRICS with the tasks runner and no multiprocess
    directory (the workers' series would reach no scrape)."""
    if not _setting("METRICS"):
        return []
    if not metrics.installed():
        return [
            Error(
                "LIVEPROGRESS['METRICS'] is on but prometheus_client is not installed.",
                hint='pip install "django-liveprogress[metrics]", or set METRICS to False.',
                id="liveprogress.E010",
            )
        ]
    directory = metrics.multiprocess_dir()
    if directory and not (os.path.isdir(directory) and os.access(directory, os.W_OK)):
        return [
            Error(
                f"PROMETHEUS_MULTIPROC_DIR {directory!r} is not a directory this process "
                "can write: prometheus_client would fail at the first count.",
                hint="Create it (empty) before the server and workers start, writable by "
                "all of them (docs/metrics.md).",
                id="liveprogress.E011",
            )
        ]
    if not directory and _setting("RUNNER") == "tasks":
        return [
            Warning(
                "LIVEPROGRESS['METRICS'] is on with the tasks runner but "
                "PROMETHEUS_MULTIPROC_DIR is not set: job durations and retries are counted "
                "in the workers, and each process answers a scrape with its own series only.",
                hint="Set PROMETHEUS_MULTIPROC_DIR to one directory for the servers and "
                "workers of each machine (docs/metrics.md).",
                id="liveprogress.W012",
            )
        ]
    return []


def check_notices(**kwargs: Any) -> list[CheckMessage]:
    """E020: WEBHOOKS is malformed (a URL that is not http(s), a missing secret...);
    W021: it names a kind no job has; W022: email notices on without SITE_URL."""
    if _setting("RUNNER") is None:
        return []  # invalid settings: E008 says why
    messages: list[CheckMessage] = []
    try:
        configured = webhooks.configured()
    except ImproperlyConfigured as error:
        messages.append(
            Error(
                str(error),
                hint="Each entry is {'url': 'https://...', 'secret': ..., 'events': [...]} "
                "(docs/notices.md).",
                id="liveprogress.E020",
            )
        )
        configured = {}
    unknown = sorted(set(configured) - set(kinds()) - {webhooks.EVERY_KIND})
    if unknown:
        messages.append(
            Warning(
                f"LIVEPROGRESS['WEBHOOKS'] names job kind(s) that no job has: "
                f"{', '.join(map(repr, unknown))}; their webhooks are never called.",
                hint="Spell them as @job names them, or use '*' for every kind.",
                id="liveprogress.W021",
            )
        )
    if conf.get("EMAIL_NOTICES") and not conf.get("SITE_URL"):
        messages.append(
            Warning(
                "EMAIL_NOTICES is on but SITE_URL is empty: the emails sent when jobs "
                "end carry no link to them (no request exists then to tell the site's "
                "address).",
                hint="Set LIVEPROGRESS['SITE_URL'] = 'https://your.site' (docs/notices.md).",
                id="liveprogress.W022",
            )
        )
    return messages


#: What ``LiveProgressConfig.ready`` registers, under ``TAG``.
CHECKS: tuple[Callable[..., list[CheckMessage]], ...] = (
    check_settings,
    check_channel_layer,
    check_asgi,
    check_result_storage,
    check_socket_route,
    check_engines_layer,
    check_metrics,
    check_notices,
)
