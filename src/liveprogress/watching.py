"""Following jobs on an :class:`~liveprogress.outbox.Outbox`: shared by the WebSocket
and the Server-Sent Events streams, so both keep the same guarantees.

- Ownership is checked before anything joins a group: a stranger's request never
  receives a state of a job that is not its own, not even for a moment.
- The outbox joins the job's group first and reads the snapshot after: a state
  published in between is either in the snapshot or arrives live, never lost.
- ``after`` says what the client already holds: no running state older or
  equal goes out again (an ``after`` beyond what the job can have reached is a
  client's mistake, ignored), and the final state always does, unless the
  client holds exactly it: no ``after`` silences a job's end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from . import actions, conf
from .exceptions import BadRequest
from .models import UNPERSISTED_SEQ_WINDOW
from .outbox import Outbox
from .runtime import get_runtime
from .state import MAX_SENT_FRAME_BYTES, JobState, encode, job_state, state_frame


def parse_after(value: Any, *, text: bool = False, field: str = "after") -> int | None:
    """A client's ``after`` (the newest seq it holds): None, or a whole number >= 0.

    JSON input is strict (``"3"`` is not a number); ``text`` takes it from HTTP
    (a query parameter, the Last-Event-ID header), where everything is a string.
    """
    if value is None:
        return None
    if text and isinstance(value, str):
        if not (value.isdecimal() and len(value) <= 18):
            raise BadRequest(f"{field} must be a whole number >= 0", field=field)
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"{field} must be a whole number >= 0", field=field)
    return value


async def follow_job(
    outbox: Outbox,
    owner: str,
    job_id: str,
    after: int | None,
    join: Callable[[str], Awaitable[None]],
    log_after: int | None = None,
    *,
    ack: bool = False,
) -> None:
    """Watch the caller's job on ``outbox`` and queue its snapshot; with
    ``log_after``, then its stored log lines after that one (live lines that
    come meanwhile wait behind them: no gap, no repeat).

    ``join`` subscribes the outbox to the job (the caller keeps its own books).
    When the outbox already holds that state (sent live, or ``after`` says so),
    no duplicate goes out: with ``ack``, ``{"type": "subscribed", "job", "seq"}``
    instead (the socket answers every request).
    """
    current = await actions.get_job(owner, job_id)
    if after is not None:
        # The most a client can hold: the stored seq, or for a running job up to
        # the unpersisted window past it.
        reachable = current.seq + (UNPERSISTED_SEQ_WINDOW if current.is_active else 0)
        if after <= reachable:
            outbox.note_claimed(job_id, after)
    lines: list[dict[str, Any]] = []
    dropped = 0
    if log_after is not None:
        # Before joining: lines published from now on are held for the replay.
        log_after = min(log_after, current.log_seq)
        outbox.hold_log(job_id, log_after)
    try:
        await join(job_id)
        job = await actions.get_job(owner, job_id)
        seq, frame = (await get_runtime()).hub.deliver_job(job, answering=outbox)
        if seq > outbox.sent_seq(job_id):
            outbox.offer_state(job_id, seq, frame, answer=True)
        elif ack:
            outbox.offer(encode({"type": "subscribed", "job": job_id, "seq": seq}))
        if log_after is not None:
            lines, dropped = await actions.log_lines(job, log_after)
    finally:
        if log_after is not None:
            # Also on failure: the held live lines must not wait forever.
            outbox.replay_log(job_id, lines, dropped)


async def follow_owner(outbox: Outbox, owner: str, *, join: bool) -> list[JobState]:
    """Queue a ``watching`` frame with the owner's recent and active jobs, and with
    ``join`` subscribe the outbox to every state of the owner's jobs from now on.

    The answer's place is taken before joining: live states that arrive while the
    list is read go out after it (those it already holds are dropped), never first.
    """
    answer = outbox.reserve()
    try:
        return await _list_owner(outbox, owner, answer, join=join)
    except BaseException:
        outbox.fill(answer, None)  # the error answers instead; the rest goes on
        raise


async def _list_owner(outbox: Outbox, owner: str, answer: int, *, join: bool) -> list[JobState]:
    if join:
        await (await get_runtime()).hub.watch_owner(owner, outbox)
    recent = await actions.list_jobs(owner, limit=conf.get("RECENT_JOBS"))
    listed = {str(job.id) for job in recent}
    # Active jobs older than the recent ones still belong in "what runs now".
    active = [
        job
        for job in await actions.list_jobs(
            owner, limit=conf.get("MAX_ACTIVE_PER_OWNER"), active_only=True
        )
        if str(job.id) not in listed
    ]
    states = [job_state(job) for job in recent + active]
    # The list in one frame as far as it fits under MAX_SENT_FRAME_BYTES; jobs past
    # that (huge states, many of them) follow as their own state frames.
    listed_states: list[JobState] = []
    size = 0
    for state in states:
        size += len(encode(dict(state)).encode()) + 1
        if listed_states and size > MAX_SENT_FRAME_BYTES - 100:
            break
        listed_states.append(state)
        outbox.note_sent(state["id"], state["seq"])
    outbox.fill(answer, encode({"type": "watching", "jobs": listed_states}))
    for state in states[len(listed_states) :]:
        outbox.offer_state(state["id"], state["seq"], encode(state_frame(state)))
    return states
