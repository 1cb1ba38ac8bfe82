"""The staff view: every job, live, for users with ``liveprogress.view_all_jobs``;
anyone's job cancelled by those with ``liveprogress.cancel_any_job`` too.

Everyone else meets the staff view's page, list and stream as pages that do not
exist (404); a staff member who may watch but not cancel is refused a cancel (403).

Its live feed costs publishing nothing: there is no staff group. A stream follows
the jobs its filters list through their own groups (as a socket that subscribed
to them would), and every ``RECONCILE_INTERVAL`` reads the jobs created or ended
since: new ones appear and are followed, ended ones say who cancelled them.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet
from django.http import HttpRequest, QueryDict
from django.utils import timezone

from . import actions, conf
from .exceptions import BadRequest, Forbidden, JobNotFound, NotFound
from .hub import Hub
from .models import ACTIVE_STATUSES, TERMINAL_STATUSES, Job, Status
from .outbox import Outbox
from .owner import OWNER_KEY, display_owner
from .runtime import get_runtime
from .state import encode, job_state

logger = logging.getLogger(__name__)

VIEW_PERMISSION = "liveprogress.view_all_jobs"
CANCEL_PERMISSION = "liveprogress.cancel_any_job"
#: The most jobs the staff page lists and one stream follows (newest first):
#: narrow the filters to reach older ones.
STAFF_LIST_LIMIT = 50
#: The most jobs one request of the staff list returns.
STAFF_LIST_LIMIT_MAX = 200
#: The ``status`` filter: a status, or every queued and running job.
STATUS_CHOICES = ("active", *Status.values)


async def may_watch_all(request: HttpRequest) -> bool:
    """Whether the request's user may see the staff view."""
    user = await request.auser()
    return user.is_authenticated and await user.ahas_perm(VIEW_PERMISSION)


async def staff_viewer(request: HttpRequest) -> Any:
    """The request's user if it may watch every job; else :class:`NotFound`, the
    answer of a page that does not exist."""
    if not await may_watch_all(request):
        raise NotFound("No such endpoint")
    return await request.auser()


@dataclass(frozen=True)
class JobFilter:
    """The staff view's filters, from a query string (so a filtered view is a link)."""

    kind: str = ""
    #: A status, "active" (queued or running), or "" for any.
    status: str = ""
    #: An owner key (``user:42``), or a username made into one; "" for any.
    owner: str = ""

    @classmethod
    async def from_query(cls, query: QueryDict) -> JobFilter:
        kind = query.get("kind", "").strip()
        if len(kind) > 100:
            raise BadRequest("kind must be at most 100 characters", field="kind")
        status = query.get("status", "")
        if status and status not in STATUS_CHOICES:
            raise BadRequest(
                f"Unsupported status {status[:20]!r}, must be one of: {', '.join(STATUS_CHOICES)}",
                field="status",
            )
        owner = query.get("owner", "").strip()
        if len(owner) > 150:
            raise BadRequest("owner must be at most 150 characters", field="owner")
        if owner and not OWNER_KEY.match(owner):
            # A username: its owner key, or a key nobody has (no ":" in it).
            users = get_user_model()._default_manager.filter(
                **{get_user_model().USERNAME_FIELD: owner}
            )
            pk = await users.values_list("pk", flat=True).afirst()
            owner = f"user:{pk}" if pk is not None else owner
        return cls(kind, status, owner)

    def jobs(self) -> QuerySet[Job]:
        """Every job these filters select, newest first."""
        jobs = Job.objects.all()
        if self.kind:
            jobs = jobs.filter(kind=self.kind)
        if self.status == "active":
            jobs = jobs.filter(status__in=ACTIVE_STATUSES)
        elif self.status:
            jobs = jobs.filter(status=self.status)
        if self.owner:
            jobs = jobs.filter(owner=self.owner)
        return jobs.order_by("-created_at")

    def query_string(self) -> str:
        """The filters as the query string they came from (those set)."""
        return urlencode({name: value for name, value in vars(self).items() if value})


def staff_row(stored: Job, live: Job | None = None) -> dict[str, Any]:
    """A job as the staff view shows it: its state (``live`` where it runs here),
    its owner (a session as a digest: a session key is a live cookie), who
    cancelled it and when."""
    return {
        "job": job_state(live or stored),
        "owner": display_owner(stored.owner),
        "cancelled_by": stored.cancelled_by,
        "cancelled_at": None if stored.cancelled_at is None else stored.cancelled_at.timestamp(),
    }


async def list_rows(jobs: QuerySet[Job], limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` of ``jobs`` as staff rows, live where they run here."""
    await get_runtime()  # its start settles the jobs a dead process left running
    stored = [job async for job in jobs[:limit]]
    live = await actions.live_jobs(stored)
    return [staff_row(job, now) for job, now in zip(stored, live, strict=True)]


async def cancel_any(user: Any, job_id: str) -> tuple[dict[str, Any], bool]:
    """Cancel anyone's job as the staff member ``user``, recording who and when; its
    row, and whether it is still stopping."""
    if not await user.ahas_perm(CANCEL_PERMISSION):
        raise Forbidden("You may watch every job but not cancel other people's")
    stored = await Job.objects.filter(pk=job_id).afirst()
    if stored is None:
        raise JobNotFound("No such job", field="job")
    job = await actions.cancel_job(stored.owner, job_id, by=f"staff:{user.pk}")
    return staff_row(await Job.objects.aget(pk=job_id), job), job.is_active


class StaffFeed:
    """What one staff stream sends: a ``staff_jobs`` frame with the rows its filters
    select, the live states of those jobs, and every ``RECONCILE_INTERVAL`` a
    ``staff_jobs`` frame with the jobs created or ended since."""

    def __init__(self, hub: Hub, outbox: Outbox, jobs_filter: JobFilter) -> None:
        self.hub = hub
        self.outbox = outbox
        self.filter = jobs_filter
        #: The jobs followed live: id -> when created (epoch seconds).
        self.followed: dict[str, float] = {}
        #: The newest creation shown (epoch seconds).
        self._newest = 0.0
        self._read_at = timezone.now()
        self._refresher: asyncio.Task[None] | None = None

    async def begin(self) -> None:
        self._read_at = timezone.now()
        rows = await list_rows(self.filter.jobs(), STAFF_LIST_LIMIT)
        await self._show(rows)
        self._refresher = asyncio.get_running_loop().create_task(
            self._refresh_every(conf.get("RECONCILE_INTERVAL")), context=contextvars.Context()
        )

    async def end(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        for job_id in list(self.followed):
            await self.hub.unwatch_job(job_id, self.outbox)
        self.followed.clear()

    async def _refresh_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.refresh()
            except Exception:
                # The database away for a moment: the next pass reads what this missed.
                logger.warning("staff feed refresh failed", exc_info=True)

    async def refresh(self) -> None:
        """Send the jobs created since the newest one shown, and those ended since
        the last read (a little overlap: a row written meanwhile is not missed)."""
        since = self._read_at - timedelta(seconds=1)
        self._read_at = timezone.now()
        newest = datetime.fromtimestamp(self._newest, tz=UTC)
        changed = self.filter.jobs().filter(Q(created_at__gt=newest) | Q(finished_at__gte=since))
        rows = await list_rows(changed, STAFF_LIST_LIMIT)
        if rows:
            await self._show(rows)

    async def _show(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            state = row["job"]
            self.outbox.note_sent(state["id"], state["seq"])
            self._newest = max(self._newest, state["created_at"])
            if state["status"] in TERMINAL_STATUSES:
                await self._unfollow(state["id"])
            elif state["id"] not in self.followed:
                self.followed[state["id"]] = state["created_at"]
                await self.hub.watch_job(state["id"], self.outbox)
        # A stream follows at most STAFF_LIST_LIMIT jobs: the newest.
        oldest_first = sorted(self.followed, key=self.followed.__getitem__)
        for job_id in oldest_first[: max(0, len(oldest_first) - STAFF_LIST_LIMIT)]:
            await self._unfollow(job_id)
        self.outbox.offer(encode({"type": "staff_jobs", "jobs": rows}))

    async def _unfollow(self, job_id: str) -> None:
        if self.followed.pop(job_id, None) is not None:
            await self.hub.unwatch_job(job_id, self.outbox)
