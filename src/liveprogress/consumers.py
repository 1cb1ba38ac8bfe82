"""The WebSocket at ``/ws/progress/``: one socket, many jobs (protocol in docs/protocol.md).

Every frame a client sends gets at least one answer: a state, an ack or an
error frame. No input closes the socket or touches a job that is not the
caller's.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from channels.db import aclose_old_connections
from channels.generic.websocket import AsyncWebsocketConsumer

from . import actions, conf, emails
from .access import scope_grant
from .exceptions import BadRequest, LimitReached, RequestError, TooLarge, Unavailable
from .limits import TokenBucket
from .models import Job
from .outage import is_unavailable
from .outbox import Outbox
from .owner import scope_address, scope_language, scope_owner
from .queueing import client_start_time
from .runtime import Runtime, get_runtime
from .state import decode_object, encode, error_frame, notify_frame
from .watching import follow_job, follow_owner, parse_after

logger = logging.getLogger(__name__)

#: Close code for a client that sends but doesn't read its answers (see MAX_UNREAD_ANSWERS).
CLOSE_NOT_READING = 4008
#: Close code when a frame could not be sent to the socket.
CLOSE_SEND_FAILED = 1011
#: Close code when the socket's session ended: logged out (at once), or flushed,
#: expired, its user deactivated (within SESSION_CHECK_INTERVAL). See access.py.
CLOSE_SESSION_ENDED = 4401
#: The scope key under which liveprogress's ASGI application (asgi.py) passes the
#: server's own send to the socket: its frames skip the middlewares' wrappers in
#: between (Channels' session middleware reads the session at every send, to save
#: it on HTTP responses only), a tenth of the socket's CPU under fan-out.
SERVER_SEND = "liveprogress.server_send"


def parse_frame(text: str | None, data: bytes | None) -> dict[str, Any]:
    """The client's frame as a JSON object, or the error that answers it."""
    if text is None:
        raise BadRequest("Binary frames are not supported; send JSON text")
    if len(text.encode("utf-8", "surrogatepass")) > conf.get("MAX_FRAME_BYTES"):
        raise TooLarge(f"Frames may be at most {conf.get('MAX_FRAME_BYTES')} bytes")
    return decode_object(text, "frame")


def takes_batches(scope: dict[str, Any]) -> bool:
    """Whether the client asked for ``batch`` frames (``?batch=1`` on the socket's URL)."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return query.get("batch") == ["1"]


class ProgressConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]  # channels is untyped
    # No channel of its own: the process's hub is the only channel-layer
    # subscriber and hands states to this socket directly (see hub.py).
    channel_layer_alias = "liveprogress.no-layer"

    runtime: Runtime
    outbox: Outbox
    owner: str | None

    async def connect(self) -> None:
        self.runtime = await get_runtime()
        self.owner = await scope_owner(self.scope)
        self.language = scope_language(self.scope)
        self.jobs: set[str] = set()
        self.watching_owner = False
        self._server_send = self.scope.get(SERVER_SEND) or self.base_send
        self.outbox = Outbox(
            self._send_text,
            on_broken=self._broken,
            pacer=self.runtime.hub.pacer,
            batches=takes_batches(self.scope),
        )
        self.rate = TokenBucket(conf.get("MAX_FRAMES_PER_SECOND"), conf.get("FRAME_BURST"))
        self.release = self.runtime.gate.admit(
            scope_grant(self.scope, self.owner), self._session_ended
        )
        await self.accept()

    async def disconnect(self, code: int) -> None:
        outbox = getattr(self, "outbox", None)
        if outbox is None:
            return
        self.release()
        outbox.close()
        await self.runtime.hub.detach(
            outbox, self.jobs, self.owner if self.watching_owner else None
        )

    async def _send_text(self, text: str) -> None:
        # Straight to the server's ASGI send: the consumer's own send only wraps it.
        await self._server_send({"type": "websocket.send", "text": text})

    async def _session_ended(self) -> None:
        # Nothing more goes out from now, whatever the close takes.
        self.outbox.close()
        with contextlib.suppress(Exception):
            await self.close(code=CLOSE_SESSION_ENDED)

    async def _broken(self) -> None:
        # A frame the server would not carry: say so by closing (the client
        # reconnects and resubscribes) rather than leave the socket mute. A socket
        # that is already gone has nothing to close.
        with contextlib.suppress(Exception):
            await self.close(code=CLOSE_SEND_FAILED)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.outbox.unsent >= conf.get("MAX_UNREAD_ANSWERS"):
            # It keeps sending and never reads: its answers would pile up here.
            await self.close(code=CLOSE_NOT_READING)
            return
        job: str | None = None
        try:
            if not self.rate.take():
                raise LimitReached(
                    f"Too many frames: at most {conf.get('MAX_FRAMES_PER_SECOND')} a second"
                )
            frame = parse_frame(text_data, bytes_data)
            raw_job = frame.get("job")
            if isinstance(raw_job, str) and len(raw_job) <= 64:
                job = raw_job
            action = frame.get("action")
            handler = self.ACTIONS.get(action) if isinstance(action, str) else None
            if handler is None:
                raise BadRequest(
                    f"Unknown action {str(action)[:40]!r}, must be one of: "
                    + ", ".join(self.ACTIONS),
                    field="action",
                )
            await handler(self, frame)
        except RequestError as error:
            self.outbox.offer(encode(error_frame(error, job)))
        except Exception as error:
            if not is_unavailable(error):
                logger.exception("websocket action failed")
                self.outbox.offer(
                    encode(error_frame(BadRequest("The server could not do that; try again"), job))
                )
                return
            logger.warning("websocket action: service unavailable: %s", error)
            self.outbox.offer(encode(error_frame(Unavailable(), job)))
            # Django drops a broken connection only between requests, and a socket's
            # life is one request: drop it now, so the next action reconnects.
            await aclose_old_connections()

    # -- actions ----------------------------------------------------------------

    async def _make_room(self, job_id: str | None = None) -> None:
        """Refuse a subscription past MAX_SUBSCRIPTIONS (before anything is done).

        Jobs whose final state this socket holds send nothing more: they give up
        their places first, so a page left open for days keeps starting jobs.
        """
        limit = conf.get("MAX_SUBSCRIPTIONS")
        if job_id in self.jobs or len(self.jobs) < limit:
            return
        hub = self.runtime.hub
        for watched in list(self.jobs):
            ended = hub.ended_seq(watched)
            if ended is not None and self.outbox.sent_seq(watched) >= ended:
                self.jobs.discard(watched)
                await hub.unwatch_job(watched, self.outbox)
        if len(self.jobs) >= limit:
            raise LimitReached(
                f"A socket may watch at most {limit} running jobs; unsubscribe from one first"
            )

    async def _watch(self, job_id: str) -> None:
        await self._make_room(job_id)
        if job_id not in self.jobs:
            self.jobs.add(job_id)
            await self.runtime.hub.watch_job(job_id, self.outbox)

    async def _unwatch(self, job_id: str) -> None:
        if job_id in self.jobs:
            self.jobs.discard(job_id)
            await self.runtime.hub.unwatch_job(job_id, self.outbox)
        self.outbox.forget(job_id)

    def _answer(self, job: Any) -> None:
        seq, frame = self.runtime.hub.deliver_job(job, answering=self.outbox)
        self.outbox.offer_state(str(job.id), seq, frame, answer=True)

    async def subscribe(self, frame: dict[str, Any]) -> None:
        owner = actions.require_owner(self.owner)
        job_id = actions.parse_job_id(frame.get("job"))
        after = parse_after(frame.get("after"))
        log_after = parse_after(frame.get("log_after"), field="log_after")
        await follow_job(self.outbox, owner, job_id, after, self._watch, log_after, ack=True)

    async def unsubscribe(self, frame: dict[str, Any]) -> None:
        actions.require_owner(self.owner)
        job_id = actions.parse_job_id(frame.get("job"))
        await self._unwatch(job_id)
        self.outbox.offer(encode({"type": "unsubscribed", "job": job_id}))

    async def cancel(self, frame: dict[str, Any]) -> None:
        await self._act_on_job(frame, actions.cancel_job)

    async def pause(self, frame: dict[str, Any]) -> None:
        await self._act_on_job(frame, actions.pause_job)

    async def resume(self, frame: dict[str, Any]) -> None:
        await self._act_on_job(frame, actions.resume_job)

    async def _act_on_job(
        self, frame: dict[str, Any], act: Callable[[str, str], Awaitable[Job]]
    ) -> None:
        """Do ``act`` to the caller's job the frame names; the socket follows it, and
        is answered with its state."""
        owner = actions.require_owner(self.owner)
        job_id = actions.parse_job_id(frame.get("job"))
        job = await act(owner, job_id)
        await self._watch(job_id)
        self._answer(job)

    async def start(self, frame: dict[str, Any]) -> None:
        owner = actions.require_owner(self.owner)
        await self._make_room()  # no job is created that this socket couldn't watch
        job = await actions.start_job(
            owner,
            frame.get("kind"),
            frame.get("params"),
            language=self.language,
            address=scope_address(self.scope),
            run_after=client_start_time(frame.get("run_after")),
            email=emails.wanted_at_start(frame.get("notify")),
        )
        await self._watch(str(job.id))
        self._answer(job)

    async def notify(self, frame: dict[str, Any]) -> None:
        owner = actions.require_owner(self.owner)
        job_id = actions.parse_job_id(frame.get("job"))
        email = await actions.ask_email(owner, job_id, frame.get("email"))
        self.outbox.offer(encode(notify_frame(job_id, email)))

    async def watch_mine(self, frame: dict[str, Any]) -> None:
        owner = actions.require_owner(self.owner)
        await follow_owner(self.outbox, owner, join=not self.watching_owner)
        self.watching_owner = True

    ACTIONS = {
        "subscribe": subscribe,
        "unsubscribe": unsubscribe,
        "cancel": cancel,
        "pause": pause,
        "resume": resume,
        "start": start,
        "notify": notify,
        "watch_mine": watch_mine,
    }
