"""A job that ends, for any reason, ends the children it started.

A child outliving its parent would run on with nobody to wait for it (a batch
that failed, a parent cancelled after its end, a parent whose process died). Its
still-queued children end `cancelled` here and now; running ones are asked to
stop like any cancel (the flag, read at every heartbeat, and the broadcast), and
each that ends ends its own children in turn.
"""

from __future__ import annotations

import logging

from .models import ACTIVE_STATUSES, Job, Status
from .publish import CANCEL_MESSAGE, control, publish
from .signals import send_finished

logger = logging.getLogger(__name__)

#: The error of a child that ended because its parent had.
PARENT_ENDED = "Its parent job ended"


async def end_children(parent: Job) -> int:
    """Stop the active children of ``parent`` (which has ended); how many there were."""
    stopped = 0
    active = Job.objects.filter(parent_id=parent.pk, status__in=ACTIVE_STATUSES)
    async for child_id in active.values_list("pk", flat=True):
        stopped += 1
        await Job.objects.request_cancel(child_id)
        if await Job.objects.end_unclaimed(child_id, Status.CANCELLED, PARENT_ENDED):
            child = await Job.objects.aget(pk=child_id)
            await publish(child)
            await send_finished(child)
            await end_children(child)
        else:
            await control(CANCEL_MESSAGE, str(child_id))
    if stopped:
        logger.info("children stopped with their parent job=%s children=%d", parent.pk, stopped)
    return stopped
