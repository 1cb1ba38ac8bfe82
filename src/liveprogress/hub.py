"""Fan-out inside one server process.

The process, not each socket, subscribes to a job's group: one channel-layer
message per state per process, encoded once, handed as the same text to every
local socket watching that job or its owner. With the in-memory layer there are
no job or owner groups: states published in this process come straight to the
hub (``publish.receive_locally``). Each socket has an
:class:`~liveprogress.outbox.Outbox` that keeps only the newest unsent state per
job, so a slow socket skips superseded states instead of queueing them, and
still gets the final one; the hub's :class:`~liveprogress.pacing.Pacer` holds
running states back while the loop lags.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from channels.layers import get_channel_layer
from django.utils import timezone

from . import conf
from .models import Job
from .outage import is_unavailable
from .outbox import Outbox
from .pacing import Pacer
from .publish import (
    CANCEL_MESSAGE,
    CONTROL_GROUP,
    ENDED_MESSAGE,
    LOG_MESSAGE,
    LOGOUT_MESSAGE,
    PAUSE_MESSAGE,
    SHARE_REVOKED_MESSAGE,
    in_process,
    job_group,
    owner_group,
    receive_locally,
    state_message,
)

logger = logging.getLogger(__name__)

# Channel layers expire group memberships (a day by default); renew well before.
GROUP_RENEW_S = 3600.0
CONTROL_MESSAGES = (
    CANCEL_MESSAGE,
    ENDED_MESSAGE,
    LOGOUT_MESSAGE,
    PAUSE_MESSAGE,
    SHARE_REVOKED_MESSAGE,
)
# Jobs per database query when reconciling.
RECONCILE_BATCH = 500


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
        # A group could not be joined (the layer was down): rejoin at the next pass.
        self._rejoin_due = False
        self._reconciled_at = timezone.now()
        #: When running states go out to this process's sockets.
        self.pacer = Pacer(conf.get("PUBLISH_INTERVAL"))

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
                # A process of an older release sends none.
                published_at=message.get("published_at", 0.0),
            )
        except (KeyError, TypeError):
            logger.warning("malformed hub message dropped: %r", message)

    async def _rejoin(self) -> None:
        await self._group_add(CONTROL_GROUP)
        if self._stop_local is None:  # state groups: see _join_state_group
            for job_id in list(self._job_watchers):
                await self._group_add(job_group(job_id))
            for owner in list(self._owner_watchers):
                await self._group_add(owner_group(owner))
        self._renewed_at = time.monotonic()
        self._rejoin_due = False

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
        if self._stop_local is not None:
            return
        try:
            await self._group_add(group)
        except Exception as error:
            if not is_unavailable(error):
                raise
            # The layer is down: the watcher still gets the job's states, read from
            # the database every RECONCILE_INTERVAL, and the group is joined once
            # the layer is back.
            logger.warning("channel layer unavailable: %s not joined yet (%s)", group, error)
            self._rejoin_due = True

    async def _leave_state_group(self, group: str) -> None:
        if self._stop_local is not None:
            return
        try:
            await self._group_discard(group)
        except Exception as error:
            if not is_unavailable(error):
                raise
            # Left in it: its messages find no watcher here, and the layer expires
            # the membership (a restarted Redis has forgotten it already).
            logger.info("channel layer unavailable: %s not left (%s)", group, error)

    # -- delivery ----------------------------------------------------------------

    def deliver(
        self,
        job_id: str,
        owner: str,
        seq: int,
        frame: str,
        terminal: bool,
        *,
        answering: Outbox | None = None,
        published_at: float = 0.0,
    ) -> tuple[int, str]:
        """Hand a state to the local watchers; returns the newest state of the job known here.

        ``answering``: the outbox whose request read this state; it is left out (it
        sends the newest state as its answer, once, instead). ``published_at``: when
        it was published (0: read from the database), for the send lag.
        """
        latest = self._latest.get(job_id)
        if job_id in self._job_watchers and (latest is None or seq > latest[0]):
            latest = self._latest[job_id] = (seq, frame, terminal)
        # A copy: a send may close a socket, which leaves these sets.
        watchers = (*self._job_watchers.get(job_id, ()), *self._owner_watchers.get(owner, ()))
        for outbox in watchers:
            if outbox is not answering:
                outbox.offer_state(job_id, seq, frame, last=terminal, published_at=published_at)
        if latest is not None and latest[0] > seq:
            return latest[0], latest[1]
        return seq, frame

    def ended_seq(self, job_id: str) -> int | None:
        """The seq of the watched job's final state if one has reached this hub."""
        latest = self._latest.get(job_id)
        return latest[0] if latest is not None and latest[2] else None

    def deliver_log(self, job_id: str, lines: list[dict[str, Any]], dropped_through: int) -> None:
        """Hand a job's new log lines to the sockets watching that job."""
        for outbox in tuple(self._job_watchers.get(job_id, ())):
            outbox.offer_log(job_id, lines, dropped_through)

    def deliver_job(self, job: Job, *, answering: Outbox | None = None) -> tuple[int, str]:
        """:meth:`deliver` for a job read from the database or held in memory."""
        message = state_message(job)
        return self.deliver(
            message["job"],
            job.owner,
            job.seq,
            message["frame"],
            message["terminal"],
            answering=answering,
        )

    async def reconcile(self) -> None:
        """Re-read watched jobs from the database; deliver what the layer dropped.

        The channel layer may drop messages (full channel, Redis away), so this
        is what makes a final state always reach every watcher.
        """
        if self._rejoin_due or time.monotonic() - self._renewed_at > GROUP_RENEW_S:
            try:
                await self._rejoin()
            except Exception as error:
                if not is_unavailable(error):
                    raise
                # Still down: the pass below serves the watchers from the database.
                self._rejoin_due = True
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
