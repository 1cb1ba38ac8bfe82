"""A started job as the site's code holds it, and finding one by id.

Every lookup is its owner's: a job that is not the owner's answers exactly like
one that does not exist (:class:`~liveprogress.exceptions.JobNotFound`).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from . import actions, bridge, shares
from .exceptions import BadRequest, JobNotFound
from .models import TERMINAL_STATUSES, Job
from .owner import aexisting_owner_of, existing_owner_of
from .shares import SharedLink
from .state import JobState, StateFields, job_state


@dataclass
class JobHandle(StateFields):
    """One job: its id, its owner, and its state as last read (``refresh`` reads it
    again). Sync methods for sync code, ``a``-prefixed twins for async code."""

    id: str
    owner: str
    #: The job's wire state (the same dict the API and the socket send).
    state: JobState
    #: True when a start of a unique kind returned the owner's active job instead of
    #: making a new one.
    existing: bool = False

    @classmethod
    def of(cls, job: Job) -> JobHandle:
        return cls(id=str(job.id), owner=job.owner, state=job_state(job), existing=job.existing)

    @property
    def is_active(self) -> bool:
        return self.status not in TERMINAL_STATUSES

    async def arefresh(self) -> JobHandle:
        """Read the job's state again (live where it runs in this process)."""
        self.state = job_state(await actions.get_job(self.owner, self.id))
        return self

    def refresh(self) -> JobHandle:
        return bridge.call(self.arefresh)

    async def acancel(self) -> JobHandle:
        """Cancel the job: ended at once if nobody runs it yet, else asked to stop
        (it stops at its next progress call). A job that has ended stays as it is."""
        self.state = job_state(await actions.cancel_job(self.owner, self.id))
        return self

    def cancel(self) -> JobHandle:
        return bridge.call(self.acancel)

    async def apause(self) -> JobHandle:
        """Pause the job: at once if it waits, else at its next checkpoint
        (``pause_requested`` until then). A job paused or ended stays as it is."""
        self.state = job_state(await actions.pause_job(self.owner, self.id))
        return self

    def pause(self) -> JobHandle:
        return bridge.call(self.apause)

    async def aresume(self) -> JobHandle:
        """Resume the paused job: queued again, it goes on from its checkpoint."""
        self.state = job_state(await actions.resume_job(self.owner, self.id))
        return self

    def resume(self) -> JobHandle:
        return bridge.call(self.aresume)

    async def ashare(self, lifetime: int | None = None) -> SharedLink:
        """A new read-only link to watch the job live, alive ``lifetime`` seconds (None:
        ``SHARE_LIFETIME``); its ``path`` holds the token, which is never shown again.
        Needs ``SHARE_LINKS``."""
        return await shares.create_share(self.owner, self.id, lifetime)

    def share(self, lifetime: int | None = None) -> SharedLink:
        return bridge.call(lambda: self.ashare(lifetime))

    async def ashares(self) -> list[SharedLink]:
        """The job's share links that work now, newest first (without their tokens)."""
        return await shares.list_shares(self.owner, self.id)

    def shares(self) -> list[SharedLink]:
        return bridge.call(self.ashares)

    async def arevoke_share(self, share_id: str) -> SharedLink:
        """Revoke one of the job's share links: dead everywhere at once."""
        return await shares.revoke_share(self.owner, self.id, shares.parse_share_id(share_id))

    def revoke_share(self, share_id: str) -> SharedLink:
        return bridge.call(lambda: self.arevoke_share(share_id))

    async def await_end(self, timeout: float | None = None, poll: float = 0.2) -> JobState:
        """Wait until the job has ended; its final state. ``TimeoutError`` after
        ``timeout`` seconds (None: no limit)."""
        async with asyncio.timeout(timeout):
            while (await self.arefresh()).is_active:
                await asyncio.sleep(poll)
        return self.state

    def wait(self, timeout: float | None = None, poll: float = 0.2) -> JobState:
        return bridge.call(lambda: self.await_end(timeout, poll))


def _job_id(value: Any) -> str:
    """A job id as text; anything that is no job id is no job of anyone's."""
    if isinstance(value, uuid.UUID):
        return str(value)
    try:
        return actions.parse_job_id(value, "job_id")
    except BadRequest:
        raise JobNotFound("No such job", field="job") from None


def _found(owner: str | None) -> str:
    # A visitor with no session has no jobs (and gets no session from a lookup).
    if owner is None:
        raise JobNotFound("No such job", field="job")
    return owner


async def aget_job(owner: Any, job_id: str | uuid.UUID) -> JobHandle:
    """The job ``job_id`` of ``owner`` (a request, a user or an owner key);
    ``JobNotFound`` if it is not theirs, or no job at all."""
    key = _found(await aexisting_owner_of(owner))
    return JobHandle.of(await actions.get_job(key, _job_id(job_id)))


def get_job(owner: Any, job_id: str | uuid.UUID) -> JobHandle:
    key = _found(existing_owner_of(owner))
    return bridge.call(lambda: aget_job(key, job_id))


async def acancel_job(owner: Any, job_id: str | uuid.UUID) -> JobHandle:
    """Cancel the job ``job_id`` of ``owner``; its handle with the state after."""
    key = _found(await aexisting_owner_of(owner))
    return JobHandle.of(await actions.cancel_job(key, _job_id(job_id)))


def cancel_job(owner: Any, job_id: str | uuid.UUID) -> JobHandle:
    key = _found(existing_owner_of(owner))
    return bridge.call(lambda: acancel_job(key, job_id))
