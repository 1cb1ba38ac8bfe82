"""Exceptions of liveprogress, under one base.

Each error a client can cause maps to one HTTP status and one WebSocket error
code, here and nowhere else.
"""

from __future__ import annotations

from typing import Any


class LiveProgressError(Exception):
    """Base of every liveprogress exception."""


class JobCancelled(LiveProgressError):
    """Raised inside a job's code by its Progress once a cancel is requested."""


class JobPaused(JobCancelled):
    """Raised inside a job's code by its Progress at a checkpoint once its owner
    asked it to pause: the job stops there, holding no worker, until resumed."""


class JobTimedOut(JobCancelled):
    """Raised inside a job's code by its Progress once its time limit has passed
    (``@job(timeout=...)``): the job ends `failed`, saying so."""


class RequestError(LiveProgressError):
    """A client's request that cannot be served; answered, never fatal."""

    code = "bad_request"
    http_status = 400
    #: Seconds the client should wait before trying again, for errors that say so.
    retry_after: int | None = None

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class BadRequest(RequestError):
    code = "bad_request"
    http_status = 400


class Unauthorized(RequestError):
    """No credentials, or wrong ones, where some are required (the metrics endpoint)."""

    code = "unauthorized"
    http_status = 401


class Forbidden(RequestError):
    code = "forbidden"
    http_status = 403


class NotFound(RequestError):
    code = "not_found"
    http_status = 404


class JobNotFound(NotFound):
    """No such job for this owner: missing, or someone else's (told apart by nobody)."""


class TooLarge(RequestError):
    code = "too_large"
    http_status = 413


class LimitReached(RequestError):
    code = "limit"
    http_status = 429


class AlreadyRunning(RequestError):
    """A unique kind's job with the same key is active (another owner's: its own
    owner gets that job back instead)."""

    code = "already_running"
    http_status = 409

    def __init__(self, job: Any) -> None:
        super().__init__(
            "A job of this kind with these parameters is already queued or running",
            field="params",
        )
        #: The active job (never shown to a client who does not own it).
        self.job = job


class Unavailable(RequestError):
    """A service the site needs (the database, Redis) is down: try again later.

    Only errors that :func:`liveprogress.outage.is_unavailable` accepts become it.
    """

    code = "unavailable"
    http_status = 503
    #: Seconds a client should wait before it tries again (HTTP ``Retry-After``).
    retry_after: int = 5

    def __init__(
        self,
        detail: str = "A service this site needs is not responding; try again in a few seconds",
        *,
        field: str | None = None,
    ) -> None:
        super().__init__(detail, field=field)
