"""Settings of liveprogress, read in one place.

Every setting lives in the ``LIVEPROGRESS`` dict of the Django settings; anything
left out takes its default from ``DEFAULTS``. Values are read lazily, validated
once and cached until ``setting_changed`` fires (tests override them freely).
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal, overload

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

#: name -> (default, type). Documented one by one in docs/settings.md.
DEFAULTS: dict[str, tuple[Any, type | tuple[type, ...]]] = {
    # Where jobs run: "inprocess" (inside the ASGI server) or "tasks" (django.tasks).
    "RUNNER": ("inprocess", str),
    # With the tasks runner: the TASKS backend alias and the queue jobs go to.
    "TASK_BACKEND": ("default", str),
    "TASK_QUEUE": ("default", str),
    # Times a job of a kind that is only `retryable` is started in all, counting
    # re-queues after its process died; past this it ends `interrupted` like any
    # other (a kind with `max_attempts` has its own).
    "MAX_ATTEMPTS": (3, int),
    # Modules imported at start-up for their @job kinds, besides every installed
    # app's `jobs` module.
    "JOB_MODULES": ([], list),
    # At most one channel-layer message per job per this many seconds.
    "PUBLISH_INTERVAL": (0.1, (int, float)),
    # At most one database write of a running job's progress per this many seconds.
    "PERSIST_INTERVAL": (1.0, (int, float)),
    # How often a process marks its running jobs alive and looks for stale ones.
    "HEARTBEAT_INTERVAL": (5.0, (int, float)),
    # A running job whose heartbeat is older than this ends `interrupted`.
    "STALE_AFTER": (30.0, (int, float)),
    # How often each server process looks for waiting jobs that are due (a scheduled
    # start, a retry's backoff) or whose kind has a free slot, and starts them; a
    # job's end here looks at once.
    "DISPATCH_INTERVAL": (1.0, (int, float)),
    # How often a server process re-reads the watched jobs from the database, so
    # a state the channel layer dropped still reaches its watchers.
    "RECONCILE_INTERVAL": (5.0, (int, float)),
    # How often a server process checks that each socket's and stream's session
    # still stands (not flushed or expired, its user active, the staff view's
    # permission held): the bound for what no logout signal tells.
    "SESSION_CHECK_INTERVAL": (5.0, (int, float)),
    # Threads that run sync job functions in the in-process runner...
    "SYNC_WORKERS": (8, int),
    # ...and how many of them one owner's jobs may hold at once (the rest wait
    # `queued`; owners waiting for a thread take turns).
    "MAX_SYNC_PER_OWNER": (4, int),
    # Queued plus running jobs one owner may have at once.
    "MAX_ACTIVE_PER_OWNER": (10, int),
    # Queued plus running jobs in all, for everyone.
    "MAX_ACTIVE_TOTAL": (500, int),
    # Visitors who are not signed in are one owner per session, and a session costs
    # nothing to make: their queued plus running jobs are also capped per client
    # address, and all together at this share of MAX_ACTIVE_TOTAL (the rest stays
    # for signed-in users and the site's own code).
    "MAX_ACTIVE_PER_ADDRESS": (20, int),
    "ANONYMOUS_SHARE": (0.5, (int, float)),
    # The request header that carries the client's address when a proxy stands in
    # front (e.g. "X-Forwarded-For"; its last address is taken: the one your proxy
    # saw). Empty: the address of the connection itself.
    "CLIENT_ADDRESS_HEADER": ("", str),
    # Largest WebSocket frame or HTTP body accepted from a client, in bytes.
    "MAX_FRAME_BYTES": (64 * 1024, int),
    # Jobs one WebSocket may subscribe to at once.
    "MAX_SUBSCRIPTIONS": (200, int),
    # Event streams (SSE) one owner may hold open at once in one server process.
    "MAX_STREAMS_PER_OWNER": (10, int),
    # Frames one WebSocket may send per second, sustained...
    "MAX_FRAMES_PER_SECOND": (20, (int, float)),
    # ...and at once: a reconnecting client resubscribes to every job it watched.
    "FRAME_BURST": (250, int),
    # Answers (errors, acks) waiting for a client that doesn't read; past this
    # the socket is closed with code 4008.
    "MAX_UNREAD_ANSWERS": (100, int),
    # How many of an owner's jobs `watch_mine` and the job list return.
    "RECENT_JOBS": (20, int),
    # Log lines kept per job (the oldest are dropped, and a reader is told how many).
    "LOG_LIMIT": (1000, int),
    # Seconds after a job ends that its result and files are kept; `manage.py
    # prunejobs` removes them once expired.
    "RESULT_TTL": (7 * 24 * 3600, (int, float)),
    # The most bytes of JSON a job's result may take (a larger one fails the job, saying
    # so: large output belongs in a file, progress.attach).
    "MAX_RESULT_BYTES": (64 * 1024, int),
    # Bytes of job files one owner may keep at once (until they expire): past it,
    # attaching a file fails the job, saying so.
    "MAX_FILE_BYTES_PER_OWNER": (100 * 1024 * 1024, int),
    # The storage (an alias of Django's STORAGES) that holds jobs' files.
    "RESULT_STORAGE": ("default", str),
    # The Prometheus endpoint (liveprogress/metrics/, docs/metrics.md): off, it answers
    # 404 and nothing is counted.
    "METRICS": (False, bool),
    # A bearer token that may read it, besides a staff user's session (empty: staff only).
    "METRICS_TOKEN": ("", str),
    # Notices beyond the tab (docs/notices.md). Whether a signed-in owner may ask to
    # be emailed when a job ends (through Django's email backend)...
    "EMAIL_NOTICES": (False, bool),
    # ...and the site's address that the email's link starts with (no request exists
    # when a job ends): "https://example.com"; empty: the email has no link.
    "SITE_URL": ("", str),
    # Kind (or "*": every kind) -> [{"url", "secret", "events"?}]: POSTed the job's
    # state, signed, when a job of it ends (or starts, or is retried).
    "WEBHOOKS": ({}, dict),
    # Seconds a webhook's receiver has to answer before the try counts as failed.
    "WEBHOOK_TIMEOUT": (10.0, (int, float)),
    # Tries a notice (an email, a webhook call) gets in all before it is given up...
    "NOTICE_ATTEMPTS": (8, int),
    # ...the seconds before the second try, doubled for each one after...
    "NOTICE_BACKOFF": (30.0, (int, float)),
    # ...and how often each process looks for notices due (new, or due again).
    "NOTICE_INTERVAL": (2.0, (int, float)),
    # Share links (docs/security.md, "Share links"): whether an owner may make a
    # read-only link that lets anyone holding it watch one of their jobs live. Off,
    # every share endpoint and page answers 404.
    "SHARE_LINKS": (False, bool),
    # Seconds a link lives when its owner asks for no lifetime, and the most they may ask.
    "SHARE_LIFETIME": (24 * 3600, (int, float)),
    "SHARE_MAX_LIFETIME": (7 * 24 * 3600, (int, float)),
    # Links alive at once (neither revoked nor expired) per job, and per owner.
    "MAX_SHARES_PER_JOB": (10, int),
    "MAX_SHARES_PER_OWNER": (100, int),
}

RUNNERS = ("inprocess", "tasks")


@cache
def _settings() -> dict[str, Any]:
    configured = getattr(settings, "LIVEPROGRESS", {}) or {}
    unknown = sorted(set(configured) - set(DEFAULTS))
    if unknown:
        raise ImproperlyConfigured(
            f"Unknown LIVEPROGRESS setting(s) {', '.join(map(repr, unknown))}, "
            f"must be among: {', '.join(DEFAULTS)}"
        )
    values = {name: default for name, (default, _) in DEFAULTS.items()}
    for name, value in configured.items():
        expected = DEFAULTS[name][1]
        if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
            raise ImproperlyConfigured(
                f"LIVEPROGRESS[{name!r}] = {value!r} has the wrong type, "
                f"expected {getattr(expected, '__name__', expected)}"
            )
        if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
            raise ImproperlyConfigured(f"LIVEPROGRESS[{name!r}] = {value!r} must be positive")
        values[name] = value
    if values["ANONYMOUS_SHARE"] > 1:
        raise ImproperlyConfigured(
            f"LIVEPROGRESS['ANONYMOUS_SHARE'] = {values['ANONYMOUS_SHARE']!r} must be at most 1"
        )
    site_url = values["SITE_URL"]
    if site_url and not site_url.startswith(("https://", "http://")):
        raise ImproperlyConfigured(
            f"LIVEPROGRESS['SITE_URL'] = {site_url!r} must start with https:// or http:// "
            "(e.g. 'https://example.com')"
        )
    if values["SHARE_LIFETIME"] > values["SHARE_MAX_LIFETIME"]:
        raise ImproperlyConfigured(
            f"LIVEPROGRESS['SHARE_LIFETIME'] = {values['SHARE_LIFETIME']!r} must be at most "
            f"SHARE_MAX_LIFETIME ({values['SHARE_MAX_LIFETIME']!r})"
        )
    if values["RUNNER"] not in RUNNERS:
        raise ImproperlyConfigured(
            f"Unsupported LIVEPROGRESS['RUNNER'] {values['RUNNER']!r}, "
            f"must be one of: {', '.join(RUNNERS)}"
        )
    return values


# The names by the type of their value, for the type checker: `get("LOG_LIMIT")` is
# an int, and a misspelt name fails the check. They follow DEFAULTS (tests/test_conf.py checks
# that they list each name once, with its type); (int, float) settings are floats.
StrSetting = Literal[
    "RUNNER",
    "TASK_BACKEND",
    "TASK_QUEUE",
    "RESULT_STORAGE",
    "CLIENT_ADDRESS_HEADER",
    "METRICS_TOKEN",
    "SITE_URL",
]
IntSetting = Literal[
    "MAX_ATTEMPTS",
    "SYNC_WORKERS",
    "MAX_SYNC_PER_OWNER",
    "MAX_ACTIVE_PER_OWNER",
    "MAX_ACTIVE_TOTAL",
    "MAX_ACTIVE_PER_ADDRESS",
    "MAX_FRAME_BYTES",
    "MAX_SUBSCRIPTIONS",
    "MAX_FILE_BYTES_PER_OWNER",
    "MAX_RESULT_BYTES",
    "MAX_STREAMS_PER_OWNER",
    "FRAME_BURST",
    "MAX_UNREAD_ANSWERS",
    "RECENT_JOBS",
    "LOG_LIMIT",
    "NOTICE_ATTEMPTS",
    "MAX_SHARES_PER_JOB",
    "MAX_SHARES_PER_OWNER",
]
FloatSetting = Literal[
    "ANONYMOUS_SHARE",
    "PUBLISH_INTERVAL",
    "PERSIST_INTERVAL",
    "HEARTBEAT_INTERVAL",
    "STALE_AFTER",
    "RECONCILE_INTERVAL",
    "DISPATCH_INTERVAL",
    "SESSION_CHECK_INTERVAL",
    "MAX_FRAMES_PER_SECOND",
    "RESULT_TTL",
    "WEBHOOK_TIMEOUT",
    "NOTICE_BACKOFF",
    "NOTICE_INTERVAL",
    "SHARE_LIFETIME",
    "SHARE_MAX_LIFETIME",
]
BoolSetting = Literal["METRICS", "EMAIL_NOTICES", "SHARE_LINKS"]
# Only the list itself is validated; its items are module paths, as documented.
ListSetting = Literal["JOB_MODULES"]
# Only the mapping itself is validated here; its entries by liveprogress.webhooks
# (and the liveprogress.E020 check).
DictSetting = Literal["WEBHOOKS"]


@overload
def get(name: StrSetting) -> str: ...
@overload
def get(name: IntSetting) -> int: ...
@overload
def get(name: FloatSetting) -> float: ...
@overload
def get(name: BoolSetting) -> bool: ...
@overload
def get(name: ListSetting) -> list[str]: ...
@overload
def get(name: DictSetting) -> dict[str, Any]: ...
def get(name: str) -> object:
    """The value of one liveprogress setting, defaults applied."""
    return _settings()[name]


@receiver(setting_changed)
def _clear_cache(*, setting: str, **kwargs: Any) -> None:
    if setting == "LIVEPROGRESS":
        _settings.cache_clear()
