"""Settings of the demo site: the embedded default (SQLite, in-memory channel layer).

Environment variables, each optional:
- DJANGO_SECRET_KEY: the secret key (otherwise one made at random on the first run and
  kept in .secret_key beside manage.py, readable by its owner only: never a key that
  anyone can read in the source, which would let them forge session cookies).
- DJANGO_DEBUG: "1" for debug pages (off by default).
- DJANGO_ALLOWED_HOSTS: comma-separated host names (default: localhost, 127.0.0.1, [::1]).
- DATABASE_URL: a database URL (default: SQLite file db.sqlite3 beside manage.py).
- LIVEPROGRESS_SETTINGS_JSON: a JSON object of LIVEPROGRESS settings (default: none,
  every setting at its documented default).
- DJANGO_MEDIA_ROOT: where jobs' files are stored (default: media/ beside manage.py).
- DJANGO_EMAIL_BACKEND: the email backend of "Email me when it ends" (default: the
  console's); DEMO_SITE_URL: where its links point (default: http://127.0.0.1:8000).

Scale-out, each optional (docs/scaling.md):
- REDIS_URL: channels_redis as the channel layer (default: the in-memory layer,
  which only reaches sockets of the same process); REDIS_LAYER=pubsub picks its
  RedisPubSubChannelLayer (one PUBLISH per group message; `make serve` does)
  instead of RedisChannelLayer.
- LIVEPROGRESS_RUNNER=tasks: jobs run as django.tasks tasks on django-tasks-db's
  database queue, by `manage.py db_worker` processes (default: inprocess).

Other engines, each optional: the demo runs its timed process on each one set up
(docs/engines.md):
- CELERY_BROKER_URL: Celery, with this broker (`celery -A proyecto worker`).
- RQ_REDIS_URL: RQ, django-rq's default queue on this Redis (`manage.py rqworker
  --with-scheduler`).
- DRAMATIQ_REDIS_URL: Dramatiq, with this Redis as its broker (`dramatiq proyecto.dramatiq
  proyecto.demo.engines.dramatiq_tasks`; needs `pip install "dramatiq[redis]"`).
- DEMO_DJANGO_TASKS=1: Django's Tasks framework, on django-tasks-db's database queue
  (set up as for LIVEPROGRESS_RUNNER=tasks; `manage.py db_worker`).
"""

import json
import os
import time
from pathlib import Path

import dj_database_url
import django
from django.core.exceptions import ImproperlyConfigured
from django.core.management.utils import get_random_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent


def secret_key(kept: Path) -> str:
    """DJANGO_SECRET_KEY, else the key kept in ``kept``, made on first use (several
    processes starting at once agree on one: the first to create the file wins)."""
    if os.environ.get("DJANGO_SECRET_KEY"):
        return os.environ["DJANGO_SECRET_KEY"]
    try:
        descriptor = os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _attempt in range(50):
            key = kept.read_text().strip()
            if key:
                return key
            time.sleep(0.01)  # its maker is writing it
        raise ImproperlyConfigured(
            f"{kept} is empty: delete it, or set DJANGO_SECRET_KEY"
        ) from None
    key = get_random_secret_key()
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key)
    return key


SECRET_KEY = secret_key(BASE_DIR / ".secret_key")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    # htmx and its SSE extension, for the /htmx/ page ({% liveprogress_htmx_assets %}).
    "django_htmx",
    # Before liveprogress: its templates override liveprogress's navigation.
    "proyecto.demo",
    "liveprogress",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "proyecto.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "proyecto.asgi.application"

_SQLITE_OPTIONS = {
    # Several processes (the server, `runjob`) write at once: WAL lets readers go
    # on while one writes, IMMEDIATE takes the write lock up front (no upgrade
    # deadlock), and a writer waits for the lock rather than failing.
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
}
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        # No persistent connections under ASGI (Django's advice): each request
        # runs its queries in a thread of its own that ends with it, and a kept
        # connection would outlive its thread (a leak that exhausted PostgreSQL's
        # connections under load). Pool with the database's own tools instead.
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = _SQLITE_OPTIONS

# Each server process has one channel (its hub), which receives every state of
# every job watched there: room for bursts.
_HUB_CAPACITY = 10_000
if os.environ.get("REDIS_URL") and os.environ.get("REDIS_LAYER") == "pubsub":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [os.environ["REDIS_URL"]]},
        }
    }
elif os.environ.get("REDIS_URL"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py >= 6 defaults break channels_redis (issue 422): a socket
                # timeout kills blocking receives and a small pool fails handshakes.
                "hosts": [
                    {
                        "address": os.environ["REDIS_URL"],
                        "socket_timeout": None,
                        "max_connections": 2000,
                    }
                ],
                "capacity": _HUB_CAPACITY,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": _HUB_CAPACITY},
        }
    }

LIVEPROGRESS: dict[str, object] = json.loads(os.environ.get("LIVEPROGRESS_SETTINGS_JSON", "{}"))
if os.environ.get("LIVEPROGRESS_RUNNER"):
    LIVEPROGRESS["RUNNER"] = os.environ["LIVEPROGRESS_RUNNER"]
# "Email me when it ends" (docs/notices.md) for signed-in users with an address: the
# emails go to the console unless DJANGO_EMAIL_BACKEND names another backend, and
# their links start with DEMO_SITE_URL.
LIVEPROGRESS.setdefault("EMAIL_NOTICES", True)
LIVEPROGRESS.setdefault("SITE_URL", os.environ.get("DEMO_SITE_URL", "http://127.0.0.1:8000"))
# Share links (docs/security.md): a Share button on the demo's bars.
LIVEPROGRESS.setdefault("SHARE_LINKS", True)
_EMAIL_BACKEND = os.environ.get(
    "DJANGO_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend"
)
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": _EMAIL_BACKEND}}
    # The demo prints its emails on purpose (mail.E001 is `check --deploy`'s refusal
    # of a development backend).
    SILENCED_SYSTEM_CHECKS = ["mail.E001"]
else:
    EMAIL_BACKEND = _EMAIL_BACKEND
# The demo's timed process as a task of Django's Tasks framework (an engine below).
_DEMO_DJANGO_TASKS = os.environ.get("DEMO_DJANGO_TASKS") == "1"
if LIVEPROGRESS.get("RUNNER") == "tasks" or _DEMO_DJANGO_TASKS:
    # django-tasks-db, for liveprogress's own jobs (the tasks runner) and for the
    # demo's task alike: the queue is a table of this database, workers claim rows
    # with SELECT ... FOR UPDATE SKIP LOCKED. Below Django 6 it runs on the
    # django-tasks backport.
    INSTALLED_APPS += ["django_tasks_db"]
    if django.VERSION < (6, 0):
        INSTALLED_APPS += ["django_tasks"]
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

# The engines the demo offers its timed process on, beside liveprogress's own runner.
DEMO_ENGINES: list[str] = []
if os.environ.get("CELERY_BROKER_URL"):
    CELERY_BROKER_URL = os.environ["CELERY_BROKER_URL"]
    # No result backend: liveprogress's job is where the task's progress and end are.
    CELERY_TASK_IGNORE_RESULT = True
    CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
    DEMO_ENGINES.append("celery")
if os.environ.get("RQ_REDIS_URL"):
    INSTALLED_APPS += ["django_rq"]
    RQ_QUEUES = {"default": {"URL": os.environ["RQ_REDIS_URL"]}}
    DEMO_ENGINES.append("rq")
if os.environ.get("DRAMATIQ_REDIS_URL"):
    # Read by proyecto/dramatiq.py, which sets the broker up.
    DRAMATIQ_REDIS_URL = os.environ["DRAMATIQ_REDIS_URL"]
    DEMO_ENGINES.append("dramatiq")
if _DEMO_DJANGO_TASKS:
    DEMO_ENGINES.append("tasks")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

CSRF_FAILURE_VIEW = "liveprogress.api.csrf_failure"

LANGUAGE_CODE = "es"
LANGUAGES = [("es", "Español"), ("en", "English")]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Jobs' result files and the CSV demo's uploads (liveprogress's RESULT_STORAGE is
# the default storage): DJANGO_MEDIA_ROOT, else media/ beside manage.py. They are
# downloaded through the app (owner only), never served from MEDIA_URL.
MEDIA_ROOT = os.environ.get("DJANGO_MEDIA_ROOT", str(BASE_DIR / "media"))

# The largest file the CSV import demo takes (a larger one fails the job, saying so).
DEMO_CSV_MAX_BYTES = 2 * 1024 * 1024

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"liveprogress": {"handlers": ["console"], "level": "INFO"}},
}
