"""Sending a job's state to its watchers.

Each state is encoded once. With a layer shared between processes (Redis) it is
sent to two groups, the job's own and its owner's, whose members are server
processes, not sockets (see ``hub.py``). With the in-memory layer, which only
reaches this process, it is handed straight to this process's receivers (its
hub): no group scan, no copy, no hop through a channel. The layer is
at-most-once, so a failure here is logged, never raised: the database stays the
source of truth and watchers reconcile from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer

from .models import TERMINAL_STATUSES, Job
from .outage import is_unavailable
from .progress import LogLine
from .state import encode, job_state, state_frame

logger = logging.getLogger(__name__)

STATE_MESSAGE = "liveprogress.state"
# New log lines of a job, to its watchers (not its owner's: lists don't show logs).
LOG_MESSAGE = "liveprogress.log"
# Control messages, to whichever process runs the job: cancel it, or stop it
# because it was ended elsewhere (a sweep found its heartbeat stale).
CANCEL_MESSAGE = "liveprogress.cancel"
ENDED_MESSAGE = "liveprogress.ended"
# ...or pause it at its next checkpoint.
PAUSE_MESSAGE = "liveprogress.pause"
# A session logged out: every process ends the sockets and streams it admitted
# (access.py). It names the session by a digest of its key, never the key.
LOGOUT_MESSAGE = "liveprogress.logout"
# A share link was revoked: every process ends the streams it admitted on it.
SHARE_REVOKED_MESSAGE = "liveprogress.share_revoked"
# Every process's hub is in it: a cancel reaches the process running the job,
# wherever the request came in.
CONTROL_GROUP = "liveprogress.control"


def job_group(job_id: str) -> str:
    return f"liveprogress.job.{job_id}"


@functools.lru_cache(maxsize=4096)
def owner_group(owner: str) -> str:
    # Owner keys may hold characters group names can't; a digest always fits.
    # Cached: it is computed for every state published.
    return "liveprogress.owner." + hashlib.sha256(owner.encode()).hexdigest()[:40]


def in_process(layer: Any) -> bool:
    """True if ``layer`` reaches only this process, so states need not go through it."""
    return isinstance(layer, InMemoryChannelLayer)


# Final states of this process's jobs being written and not yet published. While
# any is, running states wait (pacing.py): on a busy process they would fill the
# loop's turns and the sockets' buffers that the final states need.
_endings_under_way = 0


@contextlib.contextmanager
def ending() -> Iterator[None]:
    """Around a final state's write and publish: running states give it the way."""
    global _endings_under_way
    _endings_under_way += 1
    try:
        yield
    finally:
        _endings_under_way -= 1


def endings_under_way() -> int:
    """Final states of this process's jobs being written and not yet published."""
    return _endings_under_way


Receiver = Callable[[dict[str, Any]], None]
# Receivers of every state published in this process while the layer is
# in-process, each with the event loop it runs on.
_receivers: list[tuple[asyncio.AbstractEventLoop, Receiver]] = []


def receive_locally(receiver: Receiver) -> Callable[[], None]:
    """Hand ``receiver`` every state message published in this process while the
    layer is in-process (on the running loop); returns what stops it."""
    entry = (asyncio.get_running_loop(), receiver)
    _receivers.append(entry)

    def stop() -> None:
        if entry in _receivers:
            _receivers.remove(entry)

    return stop


def _deliver_locally(message: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    for receiver_loop, receiver in list(_receivers):
        if receiver_loop is loop:
            try:
                receiver(message)
            except Exception:
                logger.warning("local delivery failed job=%s", message["job"], exc_info=True)
        elif receiver_loop.is_closed():
            # Left behind by a loop that ended without stopping it (tests).
            _receivers.remove((receiver_loop, receiver))
        else:
            receiver_loop.call_soon_threadsafe(receiver, message)


def state_message(job: Job) -> dict[str, Any]:
    """The channel-layer message that carries ``job``'s state, frame pre-encoded,
    and when it was made (the send lag is measured from it: docs/metrics.md)."""
    return {
        "type": STATE_MESSAGE,
        "job": str(job.id),
        "owner": job.owner,
        "seq": job.seq,
        "terminal": job.status in TERMINAL_STATUSES,
        "frame": encode(state_frame(job_state(job))),
        "published_at": time.time(),
    }


async def publish(job: Job) -> None:
    """Send ``job``'s current state to everyone watching it or its owner."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = state_message(job)
    if in_process(layer):
        _deliver_locally(message)
        return
    for group in (job_group(message["job"]), owner_group(job.owner)):
        try:
            await layer.group_send(group, message)
        except Exception as error:
            # The layer down is no bug: one line, not a traceback per state.
            logger.warning(
                "publish failed job=%s seq=%s group=%s: %s",
                job.id,
                job.seq,
                group,
                error,
                exc_info=not is_unavailable(error),
            )


async def publish_log(job: Job, lines: Sequence[LogLine], dropped_through: int = 0) -> None:
    """Send new log lines of ``job`` to everyone watching it (already stored)."""
    layer = get_channel_layer()
    if layer is None or not lines:
        return
    job_id = str(job.id)
    message = {
        "type": LOG_MESSAGE,
        "job": job_id,
        "owner": job.owner,
        "lines": [line.as_wire() for line in lines],
        "dropped_through": dropped_through,
    }
    if in_process(layer):
        _deliver_locally(message)
        return
    try:
        await layer.group_send(job_group(job_id), message)
    except Exception:
        logger.warning("publishing log lines failed job=%s", job.id, exc_info=True)


async def control(message_type: str, job_id: str, worker: str = "") -> None:
    """Tell every process to act on ``job_id`` if it runs it (only the process
    ``worker`` names, when given). The database stays the fallback: running
    processes also read the job's row at every heartbeat."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": message_type, "job": job_id, "worker": worker}
    try:
        await layer.group_send(CONTROL_GROUP, message)
    except Exception:
        logger.warning(
            "control broadcast failed type=%s job=%s", message_type, job_id, exc_info=True
        )
