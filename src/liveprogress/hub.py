"""Fan-out inside one server process.

The process, not each socket, subscribes to a job's group: one channel-layer
message per state per process, encoded once, handed as the same text to every
local socket watching that job or its owner. With the in-memory layer there are
no job or owner groups: states published in this process come straight to the
hub (``publish.receive_locally``). Each socket has an :class:`Outbox`
that keeps only the newest unsent state per job, so a slow socket skips
superseded states instead of queueing them, and still gets the final one.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any

from channels.layers import get_channel_layer
from django.utils import timezone

from . import conf
from .models import Job
from .publish import (
    CANCEL_MESSAGE,
    CONTROL_GROUP,
    ENDED_MESSAGE,
    LOG_MESSAGE,
    in_process,
    job_group,
    owner_group,
    receive_locally,
    state_message,
)
from .state import MAX_SENT_FRAME_BYTES, encode

logger = logging.getLogger(__name__)

# Channel layers expire group memberships (a day by default); renew well before.
GROUP_RENEW_S = 3600.0
CONTROL_MESSAGES = (CANCEL_MESSAGE, ENDED_MESSAGE)
# Jobs per database query when reconciling.
RECONCILE_BATCH = 500


class _Reserved:
    """The place of a frame reserved in an outbox and not given yet."""


_RESERVED = _Reserved()


class LogBatch:
    """A job's log lines waiting to go to one socket, sent as one frame."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.lines: list[dict[str, Any]] = []
        self.dropped_through = 0

    def add(self, lines: list[dict[str, Any]], dropped_through: int) -> None:
        self.lines.extend(lines)
        limit = conf.get("LOG_LIMIT")
        if len(self.lines) > limit:
            # The socket reads slower than the job logs: it is told what it missed.
            cut = self.lines[: len(self.lines) - limit]
            self.lines = self.lines[len(cut) :]
            dropped_through = max(dropped_through, cut[-1]["seq"])
        self.dropped_through = max(self.dropped_through, dropped_through)

    def encode(self) -> list[str]:
        """The batch as log frames, each under MAX_SENT_FRAME_BYTES (a burst of long
        lines is several frames; what was dropped is said in the first)."""
        frames: list[str] = []
        lines: list[dict[str, Any]] = []
        size = 0
        for line in self.lines:
            line_size = len(encode(line).encode())
            if lines and size + line_size > MAX_SENT_FRAME_BYTES - 200:
                frames.append(self._frame(lines, first=not frames))
                lines, size = [], 0
            lines.append(line)
            size += line_size + 1
        if lines or not frames:
            frames.append(self._frame(lines, first=not frames))
        return frames

    def _frame(self, lines: list[dict[str, Any]], *, first: bool) -> str:
        frame: dict[str, Any] = {"type": "log", "job": self.job_id, "lines": lines}
        if self.dropped_through and first:
            frame["dropped_through"] = self.dropped_through
        return encode(frame)


class Outbox:
    """The frames waiting to go to one socket, sent in order by one task."""

    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        on_broken: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._send = send
        # Called once if a frame can't be sent: the socket is closed, not left mute.
        self._on_broken = on_broken
        # key -> frame, in sending order. A job's state keeps one key, so a newer
        # state replaces an unsent older one where it stands.
        self._pending: dict[Any, str | LogBatch | _Reserved] = {}
        self._pending_seq: dict[str, int] = {}
        self._sent_seq: dict[str, int] = {}
        # What the client says it holds (``after``): trusted to skip running
        # states, never to skip a final one it can't have seen (see offer_state).
        self._claimed_seq: dict[str, int] = {}
        # Log lines, for the jobs subscribed with log_after only: the newest seq
        # queued or sent per job, and the live lines held while a replay from the
        # database is read (see hold_log).
        self._log_seq: dict[str, int] = {}
        self._log_held: dict[str, list[tuple[list[dict[str, Any]], int]]] = {}
        self._keys = itertools.count()
        self._sending = False
        self._ready = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._drain(), context=contextvars.Context()
        )

    def newest_seq(self, job_id: str) -> int:
        """The seq of the newest state of the job sent, queued or claimed by the client."""
        return max(self.sent_seq(job_id), self._pending_seq.get(job_id, 0))

    def sent_seq(self, job_id: str) -> int:
        """The seq of the newest state of the job this socket holds: sent, or claimed
        with ``after`` (0: none)."""
        return max(self._sent_seq.get(job_id, 0), self._claimed_seq.get(job_id, 0))

    def delivered_seq(self, job_id: str) -> int:
        """The seq of the newest state of the job actually sent to this socket."""
        return self._sent_seq.get(job_id, 0)

    def offer_state(
        self, job_id: str, seq: int, frame: str, *, answer: bool = False, last: bool = False
    ) -> None:
        """Queue a job's state unless the socket has or awaits a newer one.

        ``answer`` marks a reply to the client's own request: it goes out even
        if the socket already got that seq (a duplicate, never a step back).
        ``last`` (a final state) queues it behind everything queued before it,
        the job's last log lines included, instead of where its older state stood.
        A final state goes out unless this socket was sent it or a newer state,
        or the client claimed exactly it: no ``after`` silences a job's end.
        """
        if last:
            newest = max(self.delivered_seq(job_id), self._pending_seq.get(job_id, 0))
            held = self._claimed_seq.get(job_id) == seq
        else:
            newest, held = self.newest_seq(job_id), False
        if seq < newest or (seq == newest and not answer) or (held and not answer):
            return
        if last:
            self._pending.pop(("job", job_id), None)
        self._pending[("job", job_id)] = frame
        self._pending_seq[job_id] = seq
        self._ready.set()

    def offer(self, frame: str) -> None:
        """Queue a frame that is not a job's state (an error, an ack)."""
        self._pending[next(self._keys)] = frame
        self._ready.set()

    def reserve(self) -> int:
        """Take a place in line for a frame not made yet: nothing queued after it goes
        out before :meth:`fill` gives it (an answer that must come first)."""
        key = next(self._keys)
        self._pending[key] = _RESERVED
        return key

    def fill(self, key: int, frame: str | None) -> None:
        """Give the frame of a place :meth:`reserve` took (None: give the place up)."""
        if frame is None:
            self._pending.pop(key, None)
        else:
            self._pending[key] = frame
        self._ready.set()

    def hold_log(self, job_id: str, after: int) -> None:
        """Start a replay of the job's log after line ``after``: live lines wait
        until :meth:`replay_log` brings the stored ones, so none is lost or repeated."""
        self._log_held[job_id] = []
        self._log_seq[job_id] = after

    def replay_log(self, job_id: str, lines: list[dict[str, Any]], dropped_through: int) -> None:
        """Queue the stored lines, then the live ones that came meanwhile."""
        held = self._log_held.pop(job_id, [])
        self._queue_log(job_id, lines, dropped_through)
        for live, live_dropped in held:
            self._queue_log(job_id, live, live_dropped)

    def offer_log(self, job_id: str, lines: list[dict[str, Any]], dropped_through: int) -> None:
        """Queue a job's new log lines (those past what the socket has), if it
        asked for the job's log."""
        if job_id not in self._log_seq:
            return
        held = self._log_held.get(job_id)
        if held is not None:
            held.append((lines, dropped_through))
            return
        self._queue_log(job_id, lines, dropped_through)

    def _queue_log(self, job_id: str, lines: list[dict[str, Any]], dropped_through: int) -> None:
        newest = self._log_seq.get(job_id, 0)
        fresh = [line for line in lines if line["seq"] > newest]
        if not fresh and dropped_through <= newest:
            return
        batch = self._pending.get(("log", job_id))
        if not isinstance(batch, LogBatch):
            batch = self._pending[("log", job_id)] = LogBatch(job_id)
        batch.add(fresh, dropped_through if dropped_through > newest else 0)
        self._log_seq[job_id] = max([newest, dropped_through, *(line["seq"] for line in fresh)])
        self._ready.set()

    @property
    def unsent(self) -> int:
        """Frames queued and not yet handed to the server."""
        return len(self._pending)

    @property
    def busy(self) -> bool:
        """Frames are queued, or one is being handed to the server right now."""
        return bool(self._pending) or self._sending

    def note_sent(self, job_id: str, seq: int) -> None:
        """Record a state that reached the socket inside another frame (an older one
        still queued is dropped: it would be a step back)."""
        if seq > self._sent_seq.get(job_id, 0):
            self._sent_seq[job_id] = seq
        if 0 < self._pending_seq.get(job_id, 0) <= seq:
            self._pending.pop(("job", job_id), None)
            del self._pending_seq[job_id]

    def note_claimed(self, job_id: str, seq: int) -> None:
        """Record the client's word (``after``) that it holds the job's state ``seq``."""
        if seq > self._claimed_seq.get(job_id, 0):
            self._claimed_seq[job_id] = seq

    def forget(self, job_id: str) -> None:
        """Drop the job's unsent state (after an unsubscribe)."""
        self._pending.pop(("job", job_id), None)
        self._pending.pop(("log", job_id), None)
        self._pending_seq.pop(job_id, None)
        self._claimed_seq.pop(job_id, None)
        self._log_held.pop(job_id, None)
        self._log_seq.pop(job_id, None)

    def close(self) -> None:
        self._task.cancel()

    async def _drain(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._pending:
                key = next(iter(self._pending))
                if isinstance(self._pending[key], _Reserved):
                    break  # what goes first isn't ready yet: fill() wakes this up
                pending = self._pending.pop(key)
                if isinstance(pending, LogBatch):
                    frames = pending.encode()
                elif isinstance(pending, str):
                    frames = [pending]
                    if isinstance(key, tuple):
                        job_id = key[1]
                        self.note_sent(job_id, self._pending_seq.pop(job_id))
                self._sending = True
                try:
                    for frame in frames:
                        await self._send(frame)
                except Exception:
                    logger.warning("socket send failed; closing it", exc_info=True)
                    if self._on_broken is not None:
                        await self._on_broken()
                    return
                finally:
                    self._sending = False


class Hub:
    """The one subscriber of this process to the job and owner groups."""

    def __init__(self) -> None:
        self.channel = ""
        self._layer: Any = None
        self._job_watchers: dict[str, set[Outbox]] = {}
        self._owner_watchers: dict[str, set[Outbox]] = {}
        # job id -> (seq, frame, terminal) of the newest state seen, for watched jobs.
        self._latest: dict[str, tuple[int, str, bool]] = {}
        self._receiver: asyncio.Task[None] | None = None
        # Set while states come straight from this process's publishers.
        self._stop_local: Callable[[], None] | None = None
        self._on_control: Callable[[dict[str, Any]], None] | None = None
        self._renewed_at = time.monotonic()
        self._reconciled_at = timezone.now()

    async def start(self, on_control: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Open this process's channel and join the control group; ``on_control``
        gets each control message."""
        self._on_control = on_control
        self._layer = get_channel_layer()
        if self._layer is None:
            return
        if in_process(self._layer):
            self._stop_local = receive_locally(self._handle)
        self.channel = await self._layer.new_channel("liveprogress.hub.")
        # The receiver joins the control group first, retrying while the layer is
        # away: a process starts (and runs jobs) even while Redis is down.
        self._receiver = asyncio.get_running_loop().create_task(
            self._receive(), context=contextvars.Context()
        )

    async def stop(self) -> None:
        if self._stop_local is not None:
            self._stop_local()
            self._stop_local = None
        if self._receiver is not None:
            self._receiver.cancel()

    async def _receive(self) -> None:
        rejoin = True
        while True:
            try:
                if rejoin:
                    # At start, or after the layer went away (a restarted Redis
                    # forgets every group).
                    await self._rejoin()
                    rejoin = False
                message = await self._layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("channel layer unavailable; retrying in 1 s", exc_info=True)
                rejoin = True
                await asyncio.sleep(1.0)
                continue
            self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        try:
            if message["type"] in CONTROL_MESSAGES:
                if self._on_control is not None:
                    self._on_control(message)
                return
            if message["type"] == LOG_MESSAGE:
                self.deliver_log(message["job"], message["lines"], message["dropped_through"])
                return
            self.deliver(
                message["job"],
                message["owner"],
                message["seq"],
                message["frame"],
                message["terminal"],
            )
        except (KeyError, TypeError):
            logger.warning("malformed hub message dropped: %r", message)

    async def _rejoin(self) -> None:
        await self._group_add(CONTROL_GROUP)
        for job_id in list(self._job_watchers):
            await self._join_state_group(job_group(job_id))
        for owner in list(self._owner_watchers):
            await self._join_state_group(owner_group(owner))
        self._renewed_at = time.monotonic()

    # -- membership --------------------------------------------------------------

    async def watch_job(self, job_id: str, outbox: Outbox) -> None:
        watchers = self._job_watchers.get(job_id)
        if watchers is None:
            watchers = self._job_watchers[job_id] = set()
            await self._join_state_group(job_group(job_id))
        watchers.add(outbox)

    async def unwatch_job(self, job_id: str, outbox: Outbox) -> None:
        watchers = self._job_watchers.get(job_id)
        if watchers is None:
            return
        watchers.discard(outbox)
        if not watchers:
            del self._job_watchers[job_id]
            self._latest.pop(job_id, None)
            await self._leave_state_group(job_group(job_id))

    async def watch_owner(self, owner: str, outbox: Outbox) -> None:
        watchers = self._owner_watchers.get(owner)
        if watchers is None:
            watchers = self._owner_watchers[owner] = set()
            await self._join_state_group(owner_group(owner))
        watchers.add(outbox)

    async def detach(self, outbox: Outbox, jobs: Iterable[str], owner: str | None) -> None:
        """Remove a closing socket from everything it watched."""
        for job_id in list(jobs):
            await self.unwatch_job(job_id, outbox)
        if owner is not None and owner in self._owner_watchers:
            watchers = self._owner_watchers[owner]
            watchers.discard(outbox)
            if not watchers:
                del self._owner_watchers[owner]
                await self._leave_state_group(owner_group(owner))

    async def _group_add(self, group: str) -> None:
        if self._layer is not None:
            await self._layer.group_add(group, self.channel)

    async def _group_discard(self, group: str) -> None:
        if self._layer is not None:
            await self._layer.group_discard(group, self.channel)

    # A job's or owner's group carries its states; with states coming straight
    # from this process (in-memory layer) nothing is sent to it, so it is not joined.
    async def _join_state_group(self, group: str) -> None:
        if self._stop_local is None:
            await self._group_add(group)

    async def _leave_state_group(self, group: str) -> None:
        if self._stop_local is None:
            await self._group_discard(group)

    # -- delivery ----------------------------------------------------------------

    def deliver(
        self, job_id: str, owner: str, seq: int, frame: str, terminal: bool
    ) -> tuple[int, str]:
        """Hand a state to the local watchers; returns the newest state of the job known here."""
        latest = self._latest.get(job_id)
        if job_id in self._job_watchers and (latest is None or seq > latest[0]):
            latest = self._latest[job_id] = (seq, frame, terminal)
        for outbox in self._job_watchers.get(job_id, ()):
            outbox.offer_state(job_id, seq, frame, last=terminal)
        for outbox in self._owner_watchers.get(owner, ()):
            outbox.offer_state(job_id, seq, frame, last=terminal)
        if latest is not None and latest[0] > seq:
            return latest[0], latest[1]
        return seq, frame

    def ended_seq(self, job_id: str) -> int | None:
        """The seq of the watched job's final state if one has reached this hub."""
        latest = self._latest.get(job_id)
        return latest[0] if latest is not None and latest[2] else None

    def deliver_log(self, job_id: str, lines: list[dict[str, Any]], dropped_through: int) -> None:
        """Hand a job's new log lines to the sockets watching that job."""
        for outbox in self._job_watchers.get(job_id, ()):
            outbox.offer_log(job_id, lines, dropped_through)

    def deliver_job(self, job: Job) -> tuple[int, str]:
        """:meth:`deliver` for a job read from the database or held in memory."""
        message = state_message(job)
        return self.deliver(
            message["job"], job.owner, job.seq, message["frame"], message["terminal"]
        )

    async def reconcile(self) -> None:
        """Re-read watched jobs from the database; deliver what the layer dropped.

        The channel layer may drop messages (full channel, Redis away), so this
        is what makes a final state always reach every watcher.
        """
        if time.monotonic() - self._renewed_at > GROUP_RENEW_S:
            await self._rejoin()
        open_jobs = [
            job_id
            for job_id in self._job_watchers
            if job_id not in self._latest or not self._latest[job_id][2]
        ]
        for start in range(0, len(open_jobs), RECONCILE_BATCH):
            batch = open_jobs[start : start + RECONCILE_BATCH]
            async for job in Job.objects.filter(pk__in=batch):
                known = self._latest.get(str(job.id))
                if known is None or job.seq > known[0]:
                    self.deliver_job(job)
        # Jobs of watched owners that changed since the last pass (new ones included).
        since = self._reconciled_at - timedelta(seconds=conf.get("RECONCILE_INTERVAL"))
        self._reconciled_at = timezone.now()
        owners = list(self._owner_watchers)
        for start in range(0, len(owners), RECONCILE_BATCH):
            recent = Job.objects.filter(
                owner__in=owners[start : start + RECONCILE_BATCH], updated_at__gte=since
            )
            async for job in recent:
                self.deliver_job(job)
