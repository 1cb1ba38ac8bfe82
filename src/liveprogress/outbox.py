"""The frames waiting to go to one socket or event stream.

An :class:`Outbox` keeps only the newest unsent state per job (a slow reader
skips superseded states and still gets the final one) and sends what it holds
in order. Nothing waits for it when idle: no task per socket. A frame that must
go now (a final state, an answer, an error) is sent at once, in the caller's
turn of the event loop, by a task started eagerly; a running state goes at once
too, or, when a :class:`~liveprogress.pacing.Pacer` says so (the loop is
lagging, or the socket takes batches), in the pacer's next round, coalesced.

A socket that takes batches (it asked, see docs/protocol.md) gets what is
pending at once as one ``batch`` frame: a page listing 200 running jobs gets
one frame per round, not 200.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import conf, metrics
from .eager import start_now
from .state import MAX_SENT_FRAME_BYTES, encode

if TYPE_CHECKING:
    from .pacing import Pacer

logger = logging.getLogger(__name__)

_BATCH_HEAD = '{"type":"batch","frames":['
_BATCH_TAIL = "]}"
# A UTF-8 character is at most 4 bytes: frames whose text adds up to this many
# characters fit in one batch without measuring their bytes.
_SURE_CHARS = MAX_SENT_FRAME_BYTES // 4 - len(_BATCH_HEAD) - len(_BATCH_TAIL)


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


def _batch(frames: list[str]) -> str:
    """One frame for ``frames`` (a lone frame stays as it is)."""
    return frames[0] if len(frames) == 1 else _BATCH_HEAD + ",".join(frames) + _BATCH_TAIL


def batched(frames: list[str]) -> list[str]:
    """``frames`` as few ``batch`` frames as fit under MAX_SENT_FRAME_BYTES, in
    order (a lone frame stays as it is). The frames are already JSON text: a batch
    is joined, never encoded again."""
    if len(frames) < 2:
        return frames
    if sum(len(frame) + 1 for frame in frames) <= _SURE_CHARS:
        return [_batch(frames)]
    out: list[str] = []
    group: list[str] = []
    size = len(_BATCH_HEAD) + len(_BATCH_TAIL)
    for frame in frames:
        frame_size = len(frame.encode()) + 1
        if group and size + frame_size > MAX_SENT_FRAME_BYTES:
            out.append(_batch(group))
            group, size = [], len(_BATCH_HEAD) + len(_BATCH_TAIL)
        group.append(frame)
        size += frame_size
    out.append(_batch(group))
    return out


class Outbox:
    """The frames waiting to go to one socket, sent in order, one send at a time.

    ``batches``: the client takes ``batch`` frames; what is pending goes out as one.
    ``pacer``: decides when running states go (None: always at once).
    ``transport``: what the frames go out on, for the metrics (``websocket``, ``sse``).
    """

    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        on_broken: Callable[[], Awaitable[None]] | None = None,
        *,
        pacer: Pacer | None = None,
        batches: bool = False,
        transport: str = "websocket",
    ) -> None:
        self._send = send
        # Called once if a frame can't be sent: the socket is closed, not left mute.
        self._on_broken = on_broken
        self._pacer = pacer
        self.batches = batches
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
        self._closed = False
        # The task sending right now (None or done: none). Its own empty context:
        # a send started from a job's code carries none of that job's context.
        self._task: asyncio.Task[None] | None = None
        self._context = contextvars.Context()
        if pacer is not None:
            pacer.opened()
        # None while metrics are off: then each hook below is one test.
        self._meter = metrics.meter(transport)
        # When each pending state was published (time.time()), for the send lag.
        self._published_at: dict[str, float] = {}
        if self._meter is not None:
            self._meter.opened()

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
        self,
        job_id: str,
        seq: int,
        frame: str,
        *,
        answer: bool = False,
        last: bool = False,
        published_at: float = 0.0,
    ) -> None:
        """Queue a job's state unless the socket has or awaits a newer one.

        ``answer`` marks a reply to the client's own request: it goes out even
        if the socket already got that seq (a duplicate, never a step back).
        ``last`` (a final state) queues it behind everything queued before it,
        the job's last log lines included, instead of where its older state stood.
        A final state goes out unless this socket was sent it or a newer state,
        or the client claimed exactly it: no ``after`` silences a job's end.
        Answers and final states go at once; running states when the pacer says.
        ``published_at``: when the state was published (0: unknown, as for one read
        from the database), for the send lag.
        """
        if last:
            newest = max(self.delivered_seq(job_id), self._pending_seq.get(job_id, 0))
            held = self._claimed_seq.get(job_id) == seq
        else:
            newest, held = self.newest_seq(job_id), False
        if seq < newest or (seq == newest and not answer) or (held and not answer):
            return
        if self._meter is not None:
            if job_id in self._pending_seq:
                self._meter.skipped()  # the unsent older state is superseded
            self._published_at[job_id] = published_at
        if last:
            self._pending.pop(("job", job_id), None)
        self._pending[("job", job_id)] = frame
        self._pending_seq[job_id] = seq
        if last or answer:
            self.flush()
        else:
            self._flush_when_paced()

    def offer(self, frame: str) -> None:
        """Queue a frame that is not a job's state (an error, an ack); it goes at once."""
        self._pending[next(self._keys)] = frame
        self.flush()

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
        self.flush()

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
        self._flush_when_paced()

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
            self._published_at.pop(job_id, None)

    def note_claimed(self, job_id: str, seq: int) -> None:
        """Record the client's word (``after``) that it holds the job's state ``seq``."""
        if seq > self._claimed_seq.get(job_id, 0):
            self._claimed_seq[job_id] = seq

    def forget(self, job_id: str) -> None:
        """Drop the job's unsent state (after an unsubscribe)."""
        self._pending.pop(("job", job_id), None)
        self._pending.pop(("log", job_id), None)
        self._pending_seq.pop(job_id, None)
        self._published_at.pop(job_id, None)
        self._claimed_seq.pop(job_id, None)
        self._log_held.pop(job_id, None)
        self._log_seq.pop(job_id, None)

    @property
    def closed(self) -> bool:
        """Closed, or stopped by a send that failed: nothing more goes out."""
        return self._closed

    def close(self) -> None:
        """Send nothing more (what is being sent is cancelled)."""
        if self._task is not None:
            self._task.cancel()
        if self._pacer is not None:
            self._pacer.closed(self)
            self._pacer = None
        if self._meter is not None:
            self._meter.closed()
            self._meter = None
        self._closed = True

    def flush(self) -> None:
        """Send what is pending now (unless a send is under way: it goes on with it)."""
        if self._closed or not self._pending or (self._task is not None and not self._task.done()):
            return
        self._task = start_now(self._drain(), self._context)

    def _flush_when_paced(self) -> None:
        if self._pacer is None or not self._pacer.defers(self):
            self.flush()
        elif self._task is None or self._task.done():
            self._pacer.defer(self)

    def _take(self) -> list[str]:
        """The frames to send next: the first pending one, or for a socket that takes
        batches everything pending up to a reserved place, as batch frames."""
        frames: list[str] = []
        while self._pending:
            key = next(iter(self._pending))
            if isinstance(self._pending[key], _Reserved):
                break  # what goes first isn't ready yet: fill() sends it and the rest
            pending = self._pending.pop(key)
            if isinstance(pending, LogBatch):
                frames.extend(pending.encode())
            elif isinstance(pending, str):
                frames.append(pending)
                if isinstance(key, tuple):
                    job_id = key[1]
                    self.note_sent(job_id, self._pending_seq.pop(job_id))
                    if self._meter is not None:
                        published_at = self._published_at.pop(job_id, 0.0)
                        if published_at:
                            self._meter.lag(time.time() - published_at)
            if not self.batches:
                break
        return batched(frames) if self.batches else frames

    async def _drain(self) -> None:
        while frames := self._take():
            self._sending = True
            try:
                for frame in frames:
                    await self._send(frame)
                if self._meter is not None:
                    self._meter.sent(len(frames))
            except Exception:
                logger.warning("socket send failed; closing it", exc_info=True)
                self._closed = True
                if self._on_broken is not None:
                    await self._on_broken()
                return
            finally:
                self._sending = False
