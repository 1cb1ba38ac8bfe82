"""The JSON API under ``/api/jobs/``: the WebSocket's actions over plain HTTP.

Same states, same ownership rules, errors as ``{"type": "error", "code", "detail"}``
with the matching status. Writes need the CSRF token like any Django form.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from functools import wraps
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import (
    DisallowedHost,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.multipartparser import MultiPartParserError
from django.http.response import HttpResponseBase
from django.urls import Resolver404, resolve, reverse
from django.utils.http import content_disposition_header
from django.views import defaults

from . import actions, conf, emails, files, shares, staff
from .exceptions import BadRequest, Forbidden, NotFound, RequestError, TooLarge
from .owner import request_address, request_owner
from .queueing import client_start_time
from .runners import unrunnable_reason
from .state import decode_object, error_frame, job_state, notify_frame
from .watching import parse_after

logger = logging.getLogger(__name__)

# An async view: a coroutine function, as Django (and its stubs) tell async views apart.
View = Callable[..., Coroutine[Any, Any, HttpResponseBase]]

# The most jobs one list request returns.
_LIST_LIMIT_MAX = 200


def error_response(
    error: RequestError, job: str | None = None, status: int | None = None
) -> JsonResponse:
    response = JsonResponse(error_frame(error, job), status=status or error.http_status)
    if error.retry_after is not None:
        response["Retry-After"] = str(error.retry_after)
    return response


def api_view(*methods: str) -> Callable[[View], View]:
    """Answer only ``methods``, turn every RequestError into a JSON error response."""

    # HEAD goes with GET, as everywhere in HTTP (Django drops the body).
    allowed = (*methods, "HEAD") if "GET" in methods else methods

    def decorate(view: View) -> View:
        @wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in allowed:
                response = error_response(
                    BadRequest(f"Method {request.method} not allowed, use: {', '.join(allowed)}"),
                    status=405,
                )
                response["Allow"] = ", ".join(allowed)
                return response
            try:
                return await view(request, *args, **kwargs)
            except RequestError as error:
                return error_response(error)

        # Its errors outside the view (Django's 400s, CSRF) answer in JSON too.
        wrapper.liveprogress_api = True  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _too_large() -> TooLarge:
    return TooLarge(f"Bodies may be at most {conf.get('MAX_FRAME_BYTES')} bytes")


def refuse_large_body(request: HttpRequest) -> None:
    """``TooLarge`` for a body declared longer than ``MAX_FRAME_BYTES``, before a
    byte of it is read."""
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if not declared.isdecimal() or int(declared) > conf.get("MAX_FRAME_BYTES"):
        raise _too_large()


def _body(request: HttpRequest) -> dict[str, Any]:
    # The content type first: a form body may already be consumed (the CSRF check
    # reads request.POST), so request.body is only touched for JSON.
    if request.content_type != "application/json":
        raise BadRequest("Send the body as application/json")
    refuse_large_body(request)
    try:
        raw = request.body
    except RequestDataTooBig:
        raise _too_large() from None
    if len(raw) > conf.get("MAX_FRAME_BYTES"):
        raise _too_large()
    return decode_object(raw or b"{}", "body")


async def existing_owner(request: HttpRequest) -> str:
    """The caller's owner key; a visitor without a session has no jobs to name."""
    owner = await request_owner(request, create=False)
    if owner is None:
        raise NotFound("No such job", field="job")
    return owner


def _limit(request: HttpRequest, default: int, most: int) -> int:
    """A list's ``?limit=``: a whole number from 1 to ``most``."""
    text = request.GET.get("limit", str(default))
    if not (text.isdecimal() and len(text) <= 3 and 1 <= int(text) <= most):
        raise BadRequest(f"limit must be a whole number from 1 to {most}", field="limit")
    return int(text)


@api_view("GET", "POST")
async def jobs(request: HttpRequest) -> HttpResponse:
    """GET: the caller's jobs, newest first. POST ``{"kind", "params", "run_after"}``:
    start one."""
    if request.method == "POST":
        owner = actions.require_owner(await request_owner(request))
        body = _body(request)
        job = await actions.start_job(
            owner,
            body.get("kind"),
            body.get("params"),
            language=getattr(request, "LANGUAGE_CODE", ""),
            unrunnable=unrunnable_reason(request),
            address=request_address(request),
            run_after=client_start_time(body.get("run_after")),
            email=emails.wanted_at_start(body.get("notify")),
        )
        # 200: a unique kind's job already active, returned instead of a new one.
        response = JsonResponse(job_state(job), status=200 if job.existing else 201)
        response["Location"] = reverse("liveprogress:job", args=[job.id])
        return response
    limit = _limit(request, conf.get("RECENT_JOBS"), _LIST_LIMIT_MAX)
    status = request.GET.get("status", "")
    if status not in ("", "active"):
        raise BadRequest("status must be 'active' or left out", field="status")
    viewer = await request_owner(request, create=False)
    if viewer is None:
        return JsonResponse({"jobs": []})
    found = await actions.list_jobs(viewer, limit=limit, active_only=bool(status))
    return JsonResponse({"jobs": [job_state(job) for job in found]})


@api_view("GET")
async def job(request: HttpRequest, job_id: str) -> HttpResponse:
    """The caller's job."""
    job_id = actions.parse_job_id(job_id)
    found = await actions.get_job(await existing_owner(request), job_id)
    return JsonResponse(job_state(found))


@api_view("POST")
async def cancel(request: HttpRequest, job_id: str) -> HttpResponse:
    """Cancel the caller's job: its state, ended or with the cancel requested."""
    job_id = actions.parse_job_id(job_id)
    found = await actions.cancel_job(await existing_owner(request), job_id)
    return JsonResponse(job_state(found), status=202 if found.is_active else 200)


@api_view("POST")
async def pause(request: HttpRequest, job_id: str) -> HttpResponse:
    """Pause the caller's job: its state, `paused` (200), or running with the pause
    asked (202: it pauses at its next checkpoint)."""
    job_id = actions.parse_job_id(job_id)
    found = await actions.pause_job(await existing_owner(request), job_id)
    return JsonResponse(job_state(found), status=202 if found.pause_requested else 200)


@api_view("POST")
async def resume(request: HttpRequest, job_id: str) -> HttpResponse:
    """Resume the caller's paused job: its state, queued again (a job that is not
    paused is answered as it is)."""
    job_id = actions.parse_job_id(job_id)
    found = await actions.resume_job(await existing_owner(request), job_id)
    return JsonResponse(job_state(found))


@api_view("GET", "POST")
async def job_shares(request: HttpRequest, job_id: str) -> HttpResponse:
    """GET: the caller's job's live share links. POST ``{"lifetime": seconds}`` (optional):
    a new one, whose ``url`` is the link, answered this once and never stored."""
    shares.require_enabled()
    job_id = actions.parse_job_id(job_id)
    owner = await existing_owner(request)
    if request.method == "POST":
        link = await shares.create_share(owner, job_id, _body(request).get("lifetime"))
        url = request.build_absolute_uri(link.path) if link.path else None
        return JsonResponse(link.as_wire(url), status=201)
    links = await shares.list_shares(owner, job_id)
    return JsonResponse({"shares": [link.as_wire() for link in links]})


@api_view("POST")
async def revoke_share(request: HttpRequest, job_id: str, share_id: str) -> HttpResponse:
    """Revoke a share link of the caller's job: dead everywhere at once, its open
    streams ended. The link as it is now (``revoked_at`` set)."""
    shares.require_enabled()
    job_id = actions.parse_job_id(job_id)
    share_id = shares.parse_share_id(share_id)
    link = await shares.revoke_share(await existing_owner(request), job_id, share_id)
    return JsonResponse(link.as_wire())


@api_view("GET")
async def shared_job(request: HttpRequest, token: str, job_id: str) -> HttpResponse:
    """A job through a share link, as its holder sees it (no session needed, none
    made); 404 for a link that is malformed, unknown, revoked, expired, or to
    another job."""
    share = await shares.shared_job_id(token, job_id)
    found = await actions.get_job(share.job.owner, str(share.job_id))
    response = JsonResponse(shares.viewer_state(job_state(found)))
    response["Cache-Control"] = "no-store"
    return response


@api_view("GET")
async def staff_jobs(request: HttpRequest) -> HttpResponse:
    """The staff view's list: every job the filters (``?kind=&status=&owner=``)
    select, newest first, at most ``?limit=`` (default 50, at most 200), each with
    its owner and who cancelled it. 404 for everyone without
    ``liveprogress.view_all_jobs``."""
    await staff.staff_viewer(request)
    jobs_filter = await staff.JobFilter.from_query(request.GET)
    limit = _limit(request, staff.STAFF_LIST_LIMIT, staff.STAFF_LIST_LIMIT_MAX)
    return JsonResponse({"jobs": await staff.list_rows(jobs_filter.jobs(), limit)})


@api_view("POST")
async def staff_cancel(request: HttpRequest, job_id: str) -> HttpResponse:
    """Cancel anyone's job as a staff member with ``liveprogress.cancel_any_job``
    (403 for one without it): its row, 202 while it is stopping, 200 once ended."""
    user = await staff.staff_viewer(request)
    job_id = actions.parse_job_id(job_id)
    row, stopping = await staff.cancel_any(user, job_id)
    return JsonResponse(row, status=202 if stopping else 200)


@api_view("GET", "POST")
async def notify(request: HttpRequest, job_id: str) -> HttpResponse:
    """Whether the caller is emailed when their job ends; POST ``{"email": true}`` (or
    false) to choose, while it is queued or running."""
    job_id = actions.parse_job_id(job_id)
    owner = await existing_owner(request)
    if request.method == "POST":
        email = await actions.ask_email(owner, job_id, _body(request).get("email"))
    else:
        email = await actions.emailed(owner, job_id)
    return JsonResponse(notify_frame(job_id, email))


@api_view("GET")
async def job_logs(request: HttpRequest, job_id: str) -> HttpResponse:
    """The caller's job's stored log lines after ``?after=SEQ`` (default: all kept)."""
    job_id = actions.parse_job_id(job_id)
    found = await actions.get_job(await existing_owner(request), job_id)
    after = parse_after(request.GET.get("after", "0"), text=True) or 0
    lines, dropped = await actions.log_lines(found, after)
    body = {"job": job_id, "lines": lines, "dropped_through": dropped, "log_seq": found.log_seq}
    return JsonResponse(body)


@api_view("GET")
async def job_file(request: HttpRequest, job_id: str, name: str) -> HttpResponseBase:
    """Download a file the caller's job attached (only its owner may)."""
    job_id = actions.parse_job_id(job_id)
    found = await actions.get_job(await existing_owner(request), job_id)
    entry = files.find(found, name)
    if entry is None:
        raise NotFound("No such file (or it has expired)", field="name")
    where = files.path(found.pk, entry["name"])
    if request.method == "HEAD":
        # Headers only: a streamed body would be sent, HEAD or not.
        if not await sync_to_async(files.storage().exists)(where):
            raise NotFound("No such file (or it has expired)", field="name")
        response: HttpResponseBase = HttpResponse(content_type=entry["content_type"])
    else:
        try:
            handle = await sync_to_async(files.storage().open)(where)
        except FileNotFoundError:
            raise NotFound("No such file (or it has expired)", field="name") from None
        response = StreamingHttpResponse(_chunks(handle), content_type=entry["content_type"])
    response["Content-Length"] = str(entry["size"])
    response["Content-Disposition"] = content_disposition_header(True, entry["name"])
    response["X-Content-Type-Options"] = "nosniff"
    return response


async def _chunks(handle: Any, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    try:
        while chunk := await sync_to_async(handle.read)(size):
            yield chunk
    finally:
        await sync_to_async(handle.close)()


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """``CSRF_FAILURE_VIEW`` that answers in the API's JSON shape."""
    return error_response(Forbidden(f"CSRF check failed: {reason}"))


def _refusal(exception: Exception | None) -> str:
    """What a client is told of a request Django refused before any view."""
    if isinstance(exception, TooManyFilesSent):
        return "Too many files in one request"
    if isinstance(exception, TooManyFieldsSent):
        return "Too many form fields in one request"
    if isinstance(exception, RequestDataTooBig):
        return "The request body is too large"
    if isinstance(exception, MultiPartParserError):
        return "The multipart body is malformed"
    if isinstance(exception, DisallowedHost):
        return "This host name is not served here"
    return "Bad request"


def is_api(request: HttpRequest) -> bool:
    """True under the API's prefix, and for any view made with :func:`api_view`
    (a site's own endpoints, such as the demo's upload)."""
    if request.path.startswith(reverse("liveprogress:jobs")):
        return True
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return False
    return getattr(match.func, "liveprogress_api", False)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """``handler404``: JSON under the API, Django's page elsewhere."""
    if is_api(request):
        return error_response(NotFound("No such endpoint"))
    return defaults.page_not_found(request, exception or Http404())


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """``handler400``: requests Django refuses before any view (too many form fields,
    a malformed multipart body) answer in JSON under the API. The reason is
    logged, not echoed: its text names settings and internals."""
    if is_api(request):
        logger.info("bad request path=%s: %s", request.path[:200], exception)
        return error_response(BadRequest(_refusal(exception)))
    return defaults.bad_request(request, exception or SuspiciousOperation())
