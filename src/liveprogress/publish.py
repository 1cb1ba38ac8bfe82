"""Sending a job's state to its watchers through the channel layer.

Each state is encoded once and sent to two groups: the job's own and its
owner's. Server processes, not sockets, are the group members (see ``hub.py``).
The layer is at-most-once, so a failure here is logged, never raised: the
database stays the source of truth and watchers reconcile from it.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from channels.layers import get_channel_layer

from .models import TERMINAL_STATUSES, Job
from .state import encode, job_state, state_frame

logger = logging.getLogger(__name__)

STATE_MESSAGE = "liveprogress.state"
# Control messages, to whichever process runs the job: cancel it, or stop it
# because it was ended elsewhere (a sweep found its heartbeat stale).
CANCEL_MESSAGE = "liveprogress.cancel"
ENDED_MESSAGE = "liveprogress.ended"
# Every process's hub is in it: a cancel reaches the process running the job,
# wherever the request came in.
CONTROL_GROUP = "liveprogress.control"


def job_group(job_id: str) -> str:
    return f"liveprogress.job.{job_id}"


def owner_group(owner: str) -> str:
    # Owner keys may hold characters group names can't; a digest always fits.
    return "liveprogress.owner." + hashlib.sha256(owner.encode()).hexdigest()[:40]


def state_message(job: Job) -> dict[str, Any]:
    """The channel-layer message that carries ``job``'s state, frame pre-encoded."""
    return {
        "type": STATE_MESSAGE,
        "job": str(job.id),
        "owner": job.owner,
        "seq": job.seq,
        "terminal": job.status in TERMINAL_STATUSES,
        "frame": encode(state_frame(job_state(job))),
    }


async def publish(job: Job) -> None:
    """Send ``job``'s current state to everyone watching it or its owner."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = state_message(job)
    for group in (job_group(message["job"]), owner_group(job.owner)):
        try:
            await layer.group_send(group, message)
        except Exception:
            logger.warning(
                "publish failed job=%s seq=%s group=%s", job.id, job.seq, group, exc_info=True
            )


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
