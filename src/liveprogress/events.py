"""Server-Sent Events: the WebSocket's states over one long HTTP response.

The JS client (liveprogress-client.js) falls back to these when WebSockets are blocked (a proxy that
doesn't upgrade, a corporate filter). Same frames, same ownership rules, same
per-process fan-out (an :class:`~liveprogress.hub.Outbox` on the hub, so a slow
reader skips superseded states and always gets the final one):

- ``GET /api/jobs/<id>/events/``: one job. Each event is ``id: <seq>``,
  ``event: job``, ``data: {"type":"job","job":STATE}``. The stream ends after
  the job's final state. ``?after=SEQ`` or the ``Last-Event-ID`` header (the
  browser sends it when it reconnects) skips what the client holds; asked again
  once it holds the final state, it answers 204, which stops ``EventSource``.
  ``?log_after=LSEQ`` adds the job's log lines (``event: log``, stored ones
  after LSEQ, then live ones); the ids become ``SEQ-LSEQ``, so a reconnect
  resumes both without a gap or a repeat.
- ``GET /api/jobs/events/``: every job of the caller, as ``watch_mine`` on the
  socket: first ``event: watching`` (recent and active jobs), then every state.
- ``GET /api/jobs/<id>/fragments/``: one job for htmx's SSE extension
  (``{% liveprogress_htmx_bar %}``): ``event: job`` with the bar as HTML for each
  state, then ``event: end`` with how it ended, in words (what ``sse-close``
  waits for), and the stream ends. Each event is the whole bar, so it needs no
  ids: a reconnect starts again from the job's state then.
- ``GET /api/jobs/shared/<token>/<id>/events/``: one job through a share link,
  as a stranger sees it (shares.py): like the job's own stream, with the states a
  viewer sees and no log; it ends with ``event: session_ended`` when the link is
  revoked or expires.

Errors before the stream starts are the API's JSON errors with their status.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import lru_cache
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils import translation
from django.utils.html import escape

from . import actions, conf, shares, staff
from .access import Admission, ShareGrant, request_grant
from .api import api_view, existing_owner
from .exceptions import BadRequest, Forbidden, LimitReached, Unavailable
from .fragments import htmx_bar, outcome
from .hub import Hub
from .models import TERMINAL_STATUSES
from .outage import is_unavailable
from .outbox import Outbox
from .owner import request_owner
from .pacing import Pacer
from .runtime import Runtime, get_runtime
from .state import JobState, encode, error_frame
from .watching import follow_job, follow_owner, parse_after

#: A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_S = 15.0
#: How long the browser waits before it reconnects a dropped stream.
RETRY_MS = 2000
#: The last event of a stream whose session ended (logged out, flushed, expired, its
#: user deactivated, the staff view's permission taken away): see access.py.
SESSION_ENDED_EVENT = 'event: session_ended\ndata: {"type":"session_ended"}\n\n'


#: Event streams open in this process, by owner (MAX_STREAMS_PER_OWNER).
_open_streams: Counter[str] = Counter()


def _check_stream_room(owner: str) -> None:
    limit = conf.get("MAX_STREAMS_PER_OWNER")
    if _open_streams[owner] >= limit:
        raise LimitReached(
            f"At most {limit} event streams may be open at once; close one (a tab) first"
        )


def _take_stream(owner: str) -> None:
    _open_streams[owner] += 1


def _give_back_stream(owner: str) -> None:
    _open_streams[owner] -= 1
    if _open_streams[owner] <= 0:
        del _open_streams[owner]


class _Feed:
    """An outbox whose frames the response takes one at a time.

    The queue holds one frame: while the client reads slowly, newer states
    wait in the outbox, where they replace older ones (latest wins).
    """

    def __init__(self, pacer: Pacer, batches: bool) -> None:
        self.frames: asyncio.Queue[str | None] = asyncio.Queue(maxsize=1)
        self.outbox = Outbox(self.frames.put, pacer=pacer, batches=batches, transport="sse")

    async def session_ended(self) -> None:
        """Nothing more goes out; the stream ends with ``SESSION_ENDED_EVENT``."""
        self.outbox.close()  # cancels a put under way: the queue is ours now
        while not self.frames.empty():
            self.frames.get_nowait()
        self.frames.put_nowait(None)


class _Position:
    """What a per-job stream's client holds: the state seq, and with logs the log seq.

    It is each event's id (``SEQ``, or ``SEQ-LOGSEQ`` when the stream carries
    logs), which the browser sends back as Last-Event-ID when it reconnects.
    """

    def __init__(self, state: int | None, log: int | None) -> None:
        self.state = state or 0
        self.log = log

    def event_id(self, parsed: dict[str, Any]) -> str | None:
        if parsed.get("type") == "job":
            self.state = max(self.state, parsed["job"]["seq"])
        elif parsed.get("type") == "log" and self.log is not None:
            seqs = [line["seq"] for line in parsed["lines"]]
            self.log = max([self.log, parsed.get("dropped_through", 0), *seqs])
        else:
            return None
        return str(self.state) if self.log is None else f"{self.state}-{self.log}"


#: The line ends of Server-Sent Events, and only those (str.splitlines knows more).
_LINE_END = re.compile(r"\r\n|\r|\n")


def _sse(event: str, data: str, event_id: str | None = None) -> str:
    """One event: each line of ``data`` a ``data:`` line (the browser joins them
    back with newlines)."""
    lines = [] if event_id is None else [f"id: {event_id}"]
    lines.append(f"event: {event}")
    lines += [f"data: {line}" for line in _LINE_END.split(data)]
    return "\n".join(lines) + "\n\n"


def _event(frame: str, position: _Position | None) -> tuple[str, dict[str, Any]]:
    """One SSE event for a frame, and the frame parsed."""
    parsed = json.loads(frame)
    event_id = position.event_id(parsed) if position is not None else None
    # The frame is compact JSON: one line.
    return _sse(parsed.get("type", "message"), frame, event_id), parsed


class _Fragments:
    """A fragment stream's events: each state as the htmx bar, in the language of
    the request that opened the stream."""

    def __init__(self, language: str | None, cancel: bool) -> None:
        self.language = language
        self.cancel = cancel

    def event(self, frame: str) -> tuple[str, dict[str, Any]]:
        parsed = json.loads(frame)
        if parsed.get("type") != "job":
            return "", parsed
        return _bar_event(frame, self.language, self.cancel), parsed

    def end(self, state: JobState) -> str:
        with translation.override(self.language):
            # Swapped in as HTML: the sentence holds the job's error text.
            return _sse("end", escape(outcome(state)))


@lru_cache(maxsize=128)
def _bar_event(frame: str, language: str | None, cancel: bool) -> str:
    """The bar event of a state frame. Rendering a bar costs ~20 times what its JSON
    event does, and the hub hands every stream of a job the same frame text: its
    watchers share one rendering (per language) instead of each making its own."""
    with translation.override(language):
        return _sse("job", htmx_bar(json.loads(frame)["job"], cancel=cancel))


Step = Callable[[Outbox], Awaitable[Any]]
#: An outbox frame as its SSE event's text ("": none), and the frame parsed.
EventFormat = Callable[[str], tuple[str, dict[str, Any]]]


async def _stream(
    owner: str,
    begin: Step,
    end: Step,
    until_final_of: str | None,
    format_event: EventFormat,
    after_final: Callable[[JobState], str] | None = None,
    *,
    runtime: Runtime,
    grant: Admission | None,
    batches: bool = False,
) -> AsyncIterator[str]:
    """The stream's events. Nothing is taken (a stream's place, an outbox on the hub)
    until the response starts to send them: a client gone before that (Django then
    never starts the stream) leaves nothing behind. ``after_final`` gives the last
    event, sent after the final state of ``until_final_of``; ``batches``: the client
    takes ``batch`` events. The stream ends when ``grant`` stops holding."""
    feed = _Feed(runtime.hub.pacer, batches)
    _take_stream(owner)
    release = runtime.gate.admit(grant, feed.session_ended)
    try:
        try:
            await begin(feed.outbox)
            down = False
        except Exception as error:
            if not is_unavailable(error):
                raise
            down = True
        finally:
            # The stream reads no database from here on: the request's connection is
            # closed now, not held while the stream stays open (on SQLite, one per
            # stream), and a broken one is dropped.
            await sync_to_async(connections.close_all)()
        if down:
            # A service went down after the response started: too late for a 503.
            # Say so and end; the browser comes back after the retry delay.
            yield _unavailable_event()
            return
        yield f"retry: {RETRY_MS}\n\n"
        while True:
            try:
                frame = await asyncio.wait_for(feed.frames.get(), KEEPALIVE_S)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            if frame is None:
                yield SESSION_ENDED_EVENT
                return
            text, parsed = format_event(frame)
            if text:
                yield text
            if (
                until_final_of is not None
                and parsed.get("type") == "job"
                and parsed["job"]["id"] == until_final_of
                and parsed["job"]["status"] in TERMINAL_STATUSES
            ):
                final: JobState = parsed["job"]
                # What is already queued (the last log lines) goes out, then the end.
                while feed.outbox.busy or not feed.frames.empty():
                    try:
                        frame = await asyncio.wait_for(feed.frames.get(), 1.0)
                    except TimeoutError:
                        break
                    if frame is None:
                        yield SESSION_ENDED_EVENT
                        return
                    text = format_event(frame)[0]
                    if text:
                        yield text
                if after_final is not None:
                    yield after_final(final)
                return
    finally:
        # The client went away (Django cancels the response), the job ended, or
        # the session did.
        release()
        feed.outbox.close()
        _give_back_stream(owner)
        await end(feed.outbox)


def _unavailable_event() -> str:
    """What a stream sends when a service it needs went down after it started: a
    retry delay of ``Retry-After``, then ``event: unavailable`` with the error."""
    error = Unavailable()
    retry = f"retry: {error.retry_after * 1000}\n\n"
    return retry + _sse("unavailable", encode(error_frame(error)))


def _response(stream: AsyncIterator[str]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    _stream_headers(response)
    return response


def _head() -> HttpResponse:
    """A stream's answer to HEAD: its headers, no body, no stream started. (A
    streaming response's body would be sent, HEAD or not, and desync a
    keep-alive connection.)"""
    response = HttpResponse(content_type="text/event-stream")
    _stream_headers(response)
    return response


def _stream_headers(response: HttpResponseBase) -> None:
    response["Cache-Control"] = "no-cache"
    # Tell buffering proxies (nginx) to pass events through as they come.
    response["X-Accel-Buffering"] = "no"


@api_view("GET")
async def job_events(request: HttpRequest, job_id: str) -> HttpResponseBase:
    """One job's states as an event stream, until its final one."""
    job_id = actions.parse_job_id(job_id)
    owner = await existing_owner(request)
    after_text, log_after_text = request.GET.get("after"), request.GET.get("log_after")
    last_event = request.headers.get("Last-Event-ID")
    if last_event is not None:
        # The browser's reconnect: what the last event it got said it holds.
        after_text, _, log_part = last_event.partition("-")
        log_after_text = log_part or log_after_text
    after = parse_after(after_text, text=True)
    log_after = parse_after(log_after_text, text=True, field="log_after")
    current = await actions.get_job(owner, job_id)
    if (
        after is not None
        and not current.is_active
        and after >= current.seq
        and (log_after is None or log_after >= current.log_seq)
    ):
        # It holds the final state: nothing will ever come.
        return HttpResponse(status=204)
    if request.method == "HEAD":
        return _head()
    _check_stream_room(owner)
    runtime = await get_runtime()
    grant = await request_grant(request, owner)
    begin, end = _following_job(runtime.hub, owner, job_id, after, log_after)
    position = _Position(after, log_after)
    return _response(
        _stream(
            owner,
            begin,
            end,
            job_id,
            lambda frame: _event(frame, position),
            runtime=runtime,
            grant=grant,
        )
    )


@api_view("GET")
async def job_fragments(request: HttpRequest, job_id: str) -> HttpResponseBase:
    """One job's bar as HTML for htmx's SSE extension, for each state until its
    final one, then how it ended. ``?cancel=0`` leaves the Cancel button out."""
    job_id = actions.parse_job_id(job_id)
    owner = await existing_owner(request)
    cancel = request.GET.get("cancel", "1")
    if cancel not in ("0", "1"):
        raise BadRequest("cancel must be 0 or 1", field="cancel")
    # A stranger's job answers as a missing one, before any stream starts.
    await actions.get_job(owner, job_id)
    if request.method == "HEAD":
        return _head()
    _check_stream_room(owner)
    runtime = await get_runtime()
    grant = await request_grant(request, owner)
    begin, end = _following_job(runtime.hub, owner, job_id, None, None)
    fragments = _Fragments(translation.get_language(), cancel == "1")
    return _response(
        _stream(
            owner,
            begin,
            end,
            job_id,
            fragments.event,
            fragments.end,
            runtime=runtime,
            grant=grant,
        )
    )


def _following_job(
    hub: Hub, owner: str, job_id: str, after: int | None, log_after: int | None
) -> tuple[Step, Step]:
    """A per-job stream's first and last steps: follow the job on the outbox (its
    snapshot, with ``log_after`` its log), then leave it."""

    async def begin(outbox: Outbox) -> None:
        async def join(job: str) -> None:
            await hub.watch_job(job, outbox)

        await follow_job(outbox, owner, job_id, after, join, log_after)

    async def end(outbox: Outbox) -> None:
        await hub.unwatch_job(job_id, outbox)

    return begin, end


@api_view("GET")
async def owner_events(request: HttpRequest) -> HttpResponseBase:
    """Every state of every job of the caller, as an event stream (``?batch=1``:
    what is pending goes as one ``batch`` event, see docs/protocol.md)."""
    owner = await request_owner(request, create=False)
    if owner is None:
        raise Forbidden("No session: load a page of this site first")
    if request.method == "HEAD":
        return _head()
    _check_stream_room(owner)
    runtime = await get_runtime()
    grant = await request_grant(request, owner)

    async def begin(outbox: Outbox) -> None:
        await follow_owner(outbox, owner, join=True)

    async def end(outbox: Outbox) -> None:
        await runtime.hub.detach(outbox, (), owner)

    batches = request.GET.get("batch") == "1"
    return _response(
        _stream(
            owner,
            begin,
            end,
            None,
            lambda frame: _event(frame, None),
            runtime=runtime,
            grant=grant,
            batches=batches,
        )
    )


@api_view("GET")
async def staff_events(request: HttpRequest) -> HttpResponseBase:
    """The staff view's feed: every job its filters (``?kind=&status=&owner=``)
    select, as ``staff_jobs`` events (rows with owner and who cancelled), then the
    live states of those jobs; jobs created or ended since come every
    ``RECONCILE_INTERVAL``. A page that does not exist (404) for everyone without
    ``liveprogress.view_all_jobs``."""
    viewer = await staff.staff_viewer(request)
    jobs_filter = await staff.JobFilter.from_query(request.GET)
    if request.method == "HEAD":
        return _head()
    owner = f"user:{viewer.pk}"
    _check_stream_room(owner)
    runtime = await get_runtime()
    grant = await request_grant(request, owner, staff.VIEW_PERMISSION)
    feeds: dict[Outbox, staff.StaffFeed] = {}

    async def begin(outbox: Outbox) -> None:
        feeds[outbox] = staff.StaffFeed(runtime.hub, outbox, jobs_filter)
        await feeds[outbox].begin()

    async def end(outbox: Outbox) -> None:
        feed = feeds.pop(outbox, None)
        if feed is not None:
            await feed.end()

    return _response(
        _stream(
            owner,
            begin,
            end,
            None,
            lambda frame: _event(frame, None),
            runtime=runtime,
            grant=grant,
        )
    )


@api_view("GET")
async def shared_events(request: HttpRequest, token: str, job_id: str) -> HttpResponseBase:
    """One job's states through a share link, as its holder sees them, until its final
    one (``?after=SEQ`` and ``Last-Event-ID`` as for the job's own stream; no log).
    The link's grant is the stream's: revoked or expired, the stream ends."""
    share = await shares.shared_job_id(token, job_id)
    if "log_after" in request.GET:
        raise BadRequest("A shared job's log is for its owner only", field="log_after")
    job_id, owner = str(share.job_id), share.job.owner
    after = parse_after(request.headers.get("Last-Event-ID", request.GET.get("after")), text=True)
    current = await actions.get_job(owner, job_id)
    if after is not None and not current.is_active and after >= current.seq:
        return HttpResponse(status=204)
    if request.method == "HEAD":
        return _head()
    # Counted per link, against MAX_STREAMS_PER_OWNER: strangers holding one link
    # can't take the owner's own streams away.
    streams_of = f"share:{share.pk}"
    _check_stream_room(streams_of)
    runtime = await get_runtime()
    begin, end = _following_job(runtime.hub, owner, job_id, after, None)
    position = _Position(after, None)

    def shared_event(frame: str) -> tuple[str, dict[str, Any]]:
        shown = shares.viewer_frame(frame)
        return _event(shown, position) if shown else ("", {})

    return _response(
        _stream(
            streams_of,
            begin,
            end,
            job_id,
            shared_event,
            runtime=runtime,
            grant=ShareGrant(str(share.pk)),
        )
    )
