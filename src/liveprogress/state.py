"""What goes on the wire: a job's state and the frames around it.

One function, :func:`job_state`, turns a job into its wire state; WebSocket,
HTTP and the command line all speak it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, TypedDict

from django.urls import NoReverseMatch, reverse

from . import conf
from .exceptions import BadRequest, RequestError
from .models import TERMINAL_STATUSES, Job


class JobState(TypedDict):
    id: str
    kind: str
    status: str
    current: int
    total: int | None
    percent: float | None
    #: The original example's key: whole percent, 0 while the total is unknown.
    progress: int
    message: str
    seq: int
    #: Seconds left (for a queued job: how long it should run once started), and
    #: where that comes from: "history" (past runs of its kind), "rate" (its recent
    #: pace), "blend" (handing over from one to the other); null with no eta_s.
    eta_s: float | None
    eta_source: str | None
    #: Units per second of the current counter, over the recent window.
    rate: float | None
    #: [{"name", "weight", "status", "fraction"}] when the job reports stages.
    stages: list[dict[str, Any]]
    #: The newest log line's seq and through which seq lines were dropped.
    log_seq: int
    log_dropped: int
    result: Any
    #: [{"name", "size", "content_type", "url"}]: the job's files (owner only).
    files: list[dict[str, Any]]
    #: When the result and files expire (epoch seconds), null while running or
    #: when there is nothing to expire; ``expired`` once they are gone.
    expires_at: float | None
    expired: bool
    parent: str | None
    error: str
    cancel_requested: bool
    #: Which start this is (1 for the first; more after a retry) and how many it may
    #: have (null: unknown); when a queued retry is due (epoch seconds, null: now).
    attempt: int
    max_attempts: int | None
    retry_at: float | None
    #: A scheduled start (epoch seconds; null: as soon as it may), and a queued job's
    #: place among those of its kind waiting for a concurrency slot (1: next).
    run_after: float | None
    queue_position: int | None
    #: The count (``current``) at the checkpoint this attempt went on from (null: it
    #: started from the beginning); a pause asked and not yet taken; since when
    #: a paused job is paused (epoch seconds).
    resumed_from: int | None
    pause_requested: bool
    paused_at: float | None
    #: While it waits in that line: seconds from updated_at until it should start.
    starts_in_s: float | None
    created_at: float
    started_at: float | None
    updated_at: float
    finished_at: float | None


def _epoch(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def job_state(job: Job) -> JobState:
    """The wire state of ``job``: times are epoch seconds, unknowns are null."""
    percent = job.percent
    return {
        "id": str(job.id),
        "kind": job.kind,
        "status": job.status,
        "current": job.current,
        "total": job.total,
        "percent": percent,
        "progress": int(percent or 0),
        "message": job.message,
        "seq": job.seq,
        "eta_s": job.eta_s,
        "eta_source": (job.eta_source or None) if job.eta_s is not None else None,
        "rate": job.rate,
        "stages": job.stages,
        "log_seq": job.log_seq,
        "log_dropped": job.log_dropped,
        "result": job.result,
        "files": [_file_entry(job, entry) for entry in job.files],
        "expires_at": _expires_at(job),
        "expired": job.expired,
        "parent": None if job.parent_id is None else str(job.parent_id),
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "attempt": job.attempts,
        "max_attempts": job.max_attempts,
        "retry_at": _epoch(job.retry_at),
        "run_after": _epoch(job.run_after),
        "queue_position": job.queue_position,
        "resumed_from": job.resumed_from,
        "pause_requested": job.pause_requested,
        "paused_at": _epoch(job.paused_at),
        "starts_in_s": job.starts_in_s if job.queue_position is not None else None,
        "created_at": job.created_at.timestamp(),
        "started_at": _epoch(job.started_at),
        "updated_at": job.updated_at.timestamp(),
        "finished_at": _epoch(job.finished_at),
    }


def _file_entry(job: Job, entry: dict[str, Any]) -> dict[str, Any]:
    try:
        url: str | None = reverse("liveprogress:job-file", args=[job.id, entry["name"]])
    except NoReverseMatch:  # the site doesn't route liveprogress's URLs
        url = None
    return {**entry, "url": url}


def _expires_at(job: Job) -> float | None:
    if job.finished_at is None or job.expired or (job.result is None and not job.files):
        return None
    return job.finished_at.timestamp() + conf.get("RESULT_TTL")


def is_terminal(state: JobState) -> bool:
    return state["status"] in TERMINAL_STATUSES


def decode_object(text: str | bytes, what: str) -> dict[str, Any]:
    """A client's JSON object (a frame, a body), or the ``BadRequest`` that answers it.

    Strict JSON: ``NaN`` and ``Infinity`` are refused, and so is nesting too deep
    to parse.
    """
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise BadRequest(f"The {what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadRequest(f"The {what} must be a JSON object")
    return value


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def encode(frame: dict[str, Any]) -> str:
    """Compact JSON text of one frame, encoded once however many sockets get it."""
    text = json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (from a client's \\ud800 escape, or a job's message) can't
        # go out as UTF-8; escaped, the frame is still the same JSON.
        return json.dumps(frame, ensure_ascii=True, separators=(",", ":"))
    return text


class StateFields:
    """A job's state, and the fields read most from it as attributes (for the
    classes that hold one: a handle, a test's run)."""

    state: JobState

    @property
    def status(self) -> str:
        return self.state["status"]

    @property
    def result(self) -> Any:
        return self.state["result"]

    @property
    def error(self) -> str:
        return self.state["error"]


#: The largest frame the server sends, in bytes of text. Daphne refuses a message
#: over 1 MiB (and the socket then says nothing more); frames that could grow past
#: this (a batch of log lines, the owner's job list) are split below it.
MAX_SENT_FRAME_BYTES = 512 * 1024


def state_frame(state: JobState) -> dict[str, Any]:
    return {"type": "job", "job": state}


def notify_frame(job_id: str, email: bool) -> dict[str, Any]:
    """Whether the owner of ``job_id`` is emailed when it ends (their choice, not part
    of the job's state: only the row holds it)."""
    return {"type": "notify", "job": job_id, "email": email}


def error_frame(error: RequestError, job: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": error.code, "detail": error.detail}
    if error.field is not None:
        frame["field"] = error.field
    if job is not None:
        frame["job"] = job
    if error.retry_after is not None:
        frame["retry_after"] = error.retry_after
    return frame
