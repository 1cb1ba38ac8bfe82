"""Share links: a job's owner lets whoever holds a link watch that one job live,
read-only and without signing in, until the link expires or the owner revokes it
(docs/security.md, "Share links"). Off unless the site sets ``SHARE_LINKS``.

A link is ``/shared/<token>/``, the token 256 random bits of which the database
keeps only the SHA-256 digest: a copy of the table holds no working link. Its
row is the truth everywhere: a revoked or expired link answers 404 in every
server process, and the streams opened with it end (access.py).

A viewer sees how the job goes, not what it makes: :func:`viewer_state`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from . import actions, conf
from .access import broadcast_share_revoked
from .exceptions import BadRequest, LimitReached, NotFound
from .models import Share
from .state import JobState, encode

#: Random bytes in a token: 256 bits, far past guessing.
TOKEN_BYTES = 32
#: A token as a link carries it: URL-safe base64 of TOKEN_BYTES, unpadded.
TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")


def require_enabled() -> None:
    """A page that does not exist unless the site turned share links on."""
    if not conf.get("SHARE_LINKS"):
        raise NotFound("No such endpoint")


def token_digest(token: str) -> str:
    """What the database keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def lifetime_from(value: Any) -> float:
    """A client's ``lifetime`` (seconds): None takes ``SHARE_LIFETIME``; else a whole
    number from 1 to ``SHARE_MAX_LIFETIME``."""
    most = conf.get("SHARE_MAX_LIFETIME")
    if value is None:
        return conf.get("SHARE_LIFETIME")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise BadRequest(
            f"lifetime must be a whole number of seconds from 1 to {int(most)}", field="lifetime"
        )
    return float(value)


def parse_share_id(value: Any) -> str:
    """The canonical text of a share link's id (a UUID), or a ``BadRequest``."""
    if isinstance(value, str) and len(value) <= 64:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    raise BadRequest("share must be a share link's id (a UUID)", field="share")


@dataclass(frozen=True)
class SharedLink:
    """A share link as its owner sees it. ``token`` is there only when the link was
    just made: it is never stored, so a lost link can't be shown again (make another)."""

    id: str
    job: str
    created_at: float
    expires_at: float
    revoked_at: float | None = None
    token: str | None = None

    @classmethod
    def of(cls, share: Share, token: str | None = None) -> SharedLink:
        revoked = share.revoked_at
        return cls(
            id=str(share.id),
            job=str(share.job_id),
            created_at=share.created_at.timestamp(),
            expires_at=share.expires_at.timestamp(),
            revoked_at=None if revoked is None else revoked.timestamp(),
            token=token,
        )

    @property
    def path(self) -> str | None:
        """The link's path (``/shared/<token>/``) when the token is known and the site
        routes liveprogress's URLs; make it absolute with the site's address."""
        if self.token is None:
            return None
        try:
            return reverse("liveprogress:shared-page", args=[self.token])
        except NoReverseMatch:
            return None

    def as_wire(self, url: str | None = None) -> dict[str, Any]:
        """What the API answers; ``url``: the whole link, only when just made."""
        wire: dict[str, Any] = {
            "id": self.id,
            "job": self.job,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
        }
        if url is not None:
            wire["url"] = url
        return wire


async def create_share(owner: str, job_id: str, lifetime: Any = None) -> SharedLink:
    """A new link to the caller's job, alive for ``lifetime`` seconds (None: the
    default); its token is in the answer and nowhere else."""
    require_enabled()
    job = await actions.get_job(owner, job_id)
    seconds = lifetime_from(lifetime)
    alive = Share.objects.alive()
    per_job, per_owner = conf.get("MAX_SHARES_PER_JOB"), conf.get("MAX_SHARES_PER_OWNER")
    if await alive.filter(job_id=job.pk).acount() >= per_job:
        raise LimitReached(f"A job may have at most {per_job} live share links; revoke one first")
    if await alive.filter(job__owner=owner).acount() >= per_owner:
        raise LimitReached(f"You may have at most {per_owner} live share links; revoke one first")
    # A job keeps no dead links: making and revoking them in a loop adds no rows.
    await Share.objects.dead().filter(job_id=job.pk).adelete()
    token = secrets.token_urlsafe(TOKEN_BYTES)
    share = await Share.objects.acreate(
        job_id=job.pk,
        token_digest=token_digest(token),
        expires_at=timezone.now() + timedelta(seconds=seconds),
    )
    return SharedLink.of(share, token)


async def list_shares(owner: str, job_id: str) -> list[SharedLink]:
    """The caller's job's live links, newest first (their tokens are not kept)."""
    require_enabled()
    job = await actions.get_job(owner, job_id)
    return [SharedLink.of(share) async for share in Share.objects.alive().filter(job_id=job.pk)]


async def revoke_share(owner: str, job_id: str, share_id: str) -> SharedLink:
    """Revoke a link to the caller's job: it answers 404 from now on, and the streams
    open with it end at once (within ``SESSION_CHECK_INTERVAL`` if the channel layer
    is down). Revoking a dead link again changes nothing."""
    require_enabled()
    job = await actions.get_job(owner, job_id)
    if not await Share.objects.filter(pk=share_id, job_id=job.pk).aexists():
        raise NotFound("No such share link", field="share")
    await Share.objects.revoke(share_id)
    await broadcast_share_revoked(share_id)
    return SharedLink.of(await Share.objects.aget(pk=share_id))


async def find_shared(token: str) -> Share:
    """The live link ``token`` names, with its job. A malformed, unknown, revoked or
    expired link is the same :class:`NotFound`: the answer tells nothing of which."""
    require_enabled()
    if TOKEN.match(token):
        digest = token_digest(token)
        share = (
            await Share.objects.alive().select_related("job").filter(token_digest=digest).afirst()
        )
        # Found by its digest, which a guess can't steer; compared in constant time all
        # the same, should the lookup ever match loosely (a collation, a prefix index).
        if share is not None and hmac.compare_digest(share.token_digest, digest):
            return share
    raise NotFound("No such link (or it has expired or been revoked)", field="link")


async def shared_job_id(token: str, job_id: str) -> Share:
    """The live link ``token`` names, which must be to ``job_id``: a link opens one job."""
    share = await find_shared(token)
    if str(share.job_id) != actions.parse_job_id(job_id):
        raise NotFound("No such link (or it has expired or been revoked)", field="link")
    return share


#: What a viewer's state leaves out, and what it says instead: the job's result,
#: files and log are its owner's output, its error may quote their data, and its
#: parent is another of their jobs.
_OWNERS_ONLY: dict[str, Any] = {
    "result": None,
    "files": [],
    "expires_at": None,
    "expired": False,
    "log_seq": 0,
    "log_dropped": 0,
    "error": "",
    "parent": None,
}


def viewer_state(state: JobState) -> JobState:
    """``state`` as a share link's holder sees it: its progress, status, message,
    stages, times and ETA; none of what :data:`_OWNERS_ONLY` lists."""
    return {**state, **_OWNERS_ONLY}  # type: ignore[typeddict-item]


@lru_cache(maxsize=64)
def viewer_frame(frame: str) -> str:
    """A hub frame as a shared stream sends it: a state frame with the viewer's state;
    "" for anything else (log lines). The hub hands every watcher of a job the same
    text, so its viewers share one re-encoding."""
    parsed = json.loads(frame)
    if parsed.get("type") != "job":
        return ""
    return encode({"type": "job", "job": viewer_state(parsed["job"])})
