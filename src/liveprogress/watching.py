"""Following jobs on an :class:`~liveprogress.hub.Outbox`: shared by the WebSocket
and the Server-Sent Events streams, so both keep the same guarantees.

- Ownership is checked before anything joins a group: a stranger's request never
  receives a state of a job that is not its own, not even for a moment.
- The outbox joins the job's group first and reads the snapshot after: a state
  published in between is either in the snapshot or arrives live, never lost.
- ``after`` says what the client already holds: nothing older or equal goes
  out again (an ``after`` beyond what the job can have reached is a client's
  mistake, ignored: it would silence the job, its end included).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from . import actions, conf
from .exceptions import BadRequest
from .hub import Outbox
from .models import UNPERSISTED_SEQ_WINDOW
from .runtime import get_runtime
from .state import JobState, encode, job_state


def parse_after(value: Any, *, text: bool = False) -> int | None:
    """A client's ``after`` (the newest seq it holds): None, or a whole number >= 0.

    JSON input is strict (``"3"`` is not a number); ``text`` takes it from HTTP
    (a query parameter, the Last-Event-ID header), where everything is a string.
    """
    if value is None:
        return None
    if text and isinstance(value, str):
        if not (value.isdecimal() and len(value) <= 18):
            raise BadRequest("after must be a whole number >= 0", field="after")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest("after must be a whole number >= 0", field="after")
    return value


async def follow_job(
    outbox: Outbox,
    owner: str,
    job_id: str,
    after: int | None,
    join: Callable[[str], Awaitable[None]],
) -> int | None:
    """Watch the caller's job on ``outbox`` and queue its snapshot.

    ``join`` subscribes the outbox to the job (the caller keeps its own books).
    Returns None when the snapshot went out, or its seq when the outbox already
    holds that state (the socket acks it instead of sending a duplicate).
    """
    current = await actions.get_job(owner, job_id)
    if after is not None:
        # The most a client can hold: the stored seq, or for a running job up to
        # the unpersisted window past it.
        reachable = current.seq + (UNPERSISTED_SEQ_WINDOW if current.is_active else 0)
        if after <= reachable:
            outbox.note_sent(job_id, after)
    await join(job_id)
    job = await actions.get_job(owner, job_id)
    hub = (await get_runtime()).hub
    seq, frame = hub.deliver_job(job)
    if seq <= outbox.sent_seq(job_id):
        return seq
    outbox.offer_state(job_id, seq, frame, answer=True)
    return None


async def follow_owner(outbox: Outbox, owner: str, *, join: bool) -> list[JobState]:
    """Queue a ``watching`` frame with the owner's recent and active jobs, and with
    ``join`` subscribe the outbox to every state of the owner's jobs from now on."""
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
    for state in states:
        outbox.note_sent(state["id"], state["seq"])
    outbox.offer(encode({"type": "watching", "jobs": states}))
    return states
