"""Server-Sent Events: the WebSocket's states over one long HTTP response.

liveprogress.js falls back to these when WebSockets are blocked (a proxy that
doesn't upgrade, a corporate filter). Same frames, same ownership rules, same
per-process fan-out (an :class:`~liveprogress.hub.Outbox` on the hub, so a slow
reader skips superseded states and always gets the final one):

- ``GET /api/jobs/<id>/events/``: one job. Each event is ``id: <seq>``,
  ``event: job``, ``data: {"type":"job","job":STATE}``. The stream ends after
  the job's final state. ``?after=SEQ`` or the ``Last-Event-ID`` header (the
  browser sends it when it reconnects) skips what the client holds; asked again
  once it holds the final state, it answers 204, which stops ``EventSource``.
- ``GET /api/jobs/events/``: every job of the caller, as ``watch_mine`` on the
  socket: first ``event: watching`` (recent and active jobs), then every state.

Errors before the stream starts are the API's JSON errors with their status.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from . import actions
from .api import api_view, existing_owner
from .exceptions import Forbidden
from .hub import Outbox
from .models import TERMINAL_STATUSES
from .owner import request_owner
from .runtime import get_runtime
from .watching import follow_job, follow_owner, parse_after

#: A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_S = 15.0
#: How long the browser waits before it reconnects a dropped stream.
RETRY_MS = 2000


class _Feed:
    """An outbox whose frames the response takes one at a time.

    The queue holds one frame: while the client reads slowly, newer states
    wait in the outbox, where they replace older ones (latest wins).
    """

    def __init__(self) -> None:
        self.frames: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
        self.outbox = Outbox(self.frames.put)


def _event(frame: str) -> tuple[str, dict[str, object]]:
    """One SSE event for a frame (its id is the job's seq), and the frame parsed."""
    parsed = json.loads(frame)
    kind = parsed.get("type", "message")
    lines = [f"event: {kind}"]
    if kind == "job":
        lines.insert(0, f"id: {parsed['job']['seq']}")
    # The frame is compact JSON: one line, no newline to split on.
    lines.append(f"data: {frame}")
    return "\n".join(lines) + "\n\n", parsed


async def _stream(
    feed: _Feed, until_final_of: str | None, leave: Callable[[], Awaitable[None]]
) -> AsyncIterator[str]:
    try:
        yield f"retry: {RETRY_MS}\n\n"
        while True:
            try:
                frame = await asyncio.wait_for(feed.frames.get(), KEEPALIVE_S)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            text, parsed = _event(frame)
            yield text
            if (
                until_final_of is not None
                and parsed.get("type") == "job"
                and parsed["job"]["id"] == until_final_of
                and parsed["job"]["status"] in TERMINAL_STATUSES
            ):
                return
    finally:
        # The client went away (Django cancels the response) or the job ended.
        feed.outbox.close()
        await leave()


def _response(stream: AsyncIterator[str]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    # Tell buffering proxies (nginx) to pass events through as they come.
    response["X-Accel-Buffering"] = "no"
    return response


@api_view("GET")
async def job_events(request: HttpRequest, job_id: str) -> HttpResponse:
    """One job's states as an event stream, until its final one."""
    job_id = actions.parse_job_id(job_id)
    owner = await existing_owner(request)
    after = parse_after(request.GET.get("after", request.headers.get("Last-Event-ID")), text=True)
    current = await actions.get_job(owner, job_id)
    if after is not None and not current.is_active and after >= current.seq:
        # It holds the final state: nothing will ever come.
        return HttpResponse(status=204)
    hub = (await get_runtime()).hub
    feed = _Feed()

    async def join(job: str) -> None:
        await hub.watch_job(job, feed.outbox)

    async def leave() -> None:
        await hub.unwatch_job(job_id, feed.outbox)

    try:
        await follow_job(feed.outbox, owner, job_id, after, join)
    except BaseException:
        feed.outbox.close()
        await leave()
        raise
    return _response(_stream(feed, job_id, leave))


@api_view("GET")
async def owner_events(request: HttpRequest) -> HttpResponse:
    """Every state of every job of the caller, as an event stream."""
    owner = await request_owner(request, create=False)
    if owner is None:
        raise Forbidden("No session: load a page of this site first")
    hub = (await get_runtime()).hub
    feed = _Feed()

    async def leave() -> None:
        await hub.detach(feed.outbox, (), owner)

    try:
        await follow_owner(feed.outbox, owner, join=True)
    except BaseException:
        feed.outbox.close()
        await leave()
        raise
    return _response(_stream(feed, None, leave))
