"""Sockets and streams that end with their session (docs/security.md, "Sessions"),
or with the share link they were opened with ("Share links").

A socket or an event stream is admitted with a :class:`Grant`: the session it came
with, the user that session was signed in as, and for the staff view the
permission it needs. A shared job's stream is admitted with a :class:`ShareGrant`:
the link, which holds until it expires or its owner revokes it. A connection
stops when its grant no longer holds:

- at once when the session logs out (Django's ``user_logged_out``, in any server
  process: a control broadcast over the channel layer reaches every process's
  :class:`Gate`);
- at once when its share link is revoked (a control broadcast too);
- within ``SESSION_CHECK_INTERVAL`` for what no signal tells: a session flushed
  or expired (a login elsewhere cycles an anonymous visitor's key), a user
  deactivated or deleted, a password changed, a permission taken away, a share
  link expired (or revoked while the channel layer was down).

The check reads each distinct session of this process once per interval, the way
Django reads a request's (its session engine, its auth backends): a socket costs
nothing more than its session does.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib import auth
from django.http import HttpRequest

from . import conf
from .models import Share
from .publish import CONTROL_GROUP, LOGOUT_MESSAGE, SHARE_REVOKED_MESSAGE

logger = logging.getLogger(__name__)

#: What ends one admitted connection (closes the socket, ends the stream).
Ending = Callable[[], Awaitable[None]]


def session_digest(session_key: str) -> str:
    """A session key as the logout broadcast names it: a key is a live cookie and
    has no business in the channel layer."""
    return hashlib.sha256(session_key.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class Grant:
    """What a connection was admitted on: it holds while its session does."""

    session_key: str
    #: The user the session was signed in as (its pk as text); None: an anonymous
    #: visitor's session, which holds while it exists.
    user: str | None
    #: A permission the connection needs besides ("liveprogress.view_all_jobs").
    permission: str | None = None


@dataclass(frozen=True)
class ShareGrant:
    """What a shared job's stream was admitted on: a share link (its id), which holds
    while it is neither revoked nor expired."""

    share: str


#: Whatever a connection was admitted on.
Admission = Grant | ShareGrant


def scope_grant(scope: dict[str, Any], owner: str | None) -> Grant | None:
    """The grant of a socket whose owner is ``owner`` (None: it owns nothing, so
    nothing needs taking back)."""
    session = scope.get("session")
    if owner is None or session is None or not session.session_key:
        return None
    user = scope.get("user")
    signed_in = getattr(user, "is_authenticated", False)
    return Grant(session.session_key, str(getattr(user, "pk", "")) if signed_in else None)


async def request_grant(
    request: HttpRequest, owner: str | None, permission: str | None = None
) -> Grant | None:
    """The grant of a stream opened by ``request``. A client signed in without a
    session (a token, a header) has none: only a session logs out."""
    session = getattr(request, "session", None)
    if owner is None or session is None or not session.session_key:
        return None
    user = await request.auser()
    signed_in = user.is_authenticated
    return Grant(session.session_key, str(user.pk) if signed_in else None, permission)


class _SessionHolder:
    """What ``django.contrib.auth.get_user`` reads of a request: its session."""

    def __init__(self, session: Any) -> None:
        self.session = session


def still_holds(grant: Admission) -> bool:
    """Whether ``grant``'s session still stands as it did (sync: it reads the
    session store and the user, as Django does for a request), or its share link
    is still alive."""
    if isinstance(grant, ShareGrant):
        alive = Share.objects.alive().filter(pk=grant.share)
        return conf.get("SHARE_LINKS") and alive.exists()
    engine = import_module(settings.SESSION_ENGINE)
    session = engine.SessionStore(session_key=grant.session_key)
    # Loading forgets a key the store doesn't hold (flushed, expired).
    session.load()
    if session.session_key != grant.session_key:
        return False
    if grant.user is None:
        # An anonymous visitor's session that signed in since has another key.
        return auth.SESSION_KEY not in session
    user = auth.get_user(_SessionHolder(session))  # type: ignore[arg-type]
    if not user.is_authenticated or str(user.pk) != grant.user:
        return False
    return grant.permission is None or user.has_perm(grant.permission)


def _broken(grants: Iterable[Admission]) -> set[Admission]:
    broken: set[Admission] = set()
    for grant in grants:
        try:
            if not still_holds(grant):
                broken.add(grant)
        except Exception:
            # A store or database away: keep the connection, check again next time.
            logger.warning("session check failed", exc_info=True)
    return broken


class Gate:
    """The connections this process admitted, by grant: it ends those whose grant
    no longer holds."""

    def __init__(self) -> None:
        self._admitted: dict[Admission, set[Ending]] = {}
        self._endings: set[asyncio.Task[None]] = set()

    def admit(self, grant: Admission | None, ending: Ending) -> Callable[[], None]:
        """Keep ``ending`` to call once ``grant`` stops holding; returns what
        forgets it (the connection closed on its own)."""
        if grant is None:
            return lambda: None
        self._admitted.setdefault(grant, set()).add(ending)

        def release() -> None:
            endings = self._admitted.get(grant)
            if endings is not None:
                endings.discard(ending)
                if not endings:
                    del self._admitted[grant]

        return release

    @property
    def admitted(self) -> int:
        """Connections held here (tests, metrics)."""
        return sum(len(endings) for endings in self._admitted.values())

    async def check(self) -> None:
        """End the connections whose session no longer stands (every
        ``SESSION_CHECK_INTERVAL``); one read per distinct grant."""
        if not self._admitted:
            return
        broken = await sync_to_async(_broken)(list(self._admitted))
        await self._end(broken)

    def logged_out(self, digest: str) -> None:
        """A session logged out (the broadcast): end its connections now."""
        self._end_now(
            grant
            for grant in self._admitted
            if isinstance(grant, Grant) and session_digest(grant.session_key) == digest
        )

    def share_revoked(self, share_id: str) -> None:
        """A share link was revoked (the broadcast): end its streams now."""
        self._end_now([ShareGrant(share_id)])

    def _end_now(self, grants: Iterable[Admission]) -> None:
        held = [grant for grant in grants if grant in self._admitted]
        if held:
            task = asyncio.get_running_loop().create_task(
                self._end(held), context=contextvars.Context()
            )
            self._endings.add(task)
            task.add_done_callback(self._endings.discard)

    async def _end(self, grants: Iterable[Admission]) -> None:
        endings = [ending for grant in grants for ending in self._admitted.pop(grant, ())]
        for result in await asyncio.gather(*(end() for end in endings), return_exceptions=True):
            if isinstance(result, Exception):
                logger.warning("ending a connection failed", exc_info=result)


async def broadcast_logout(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """``user_logged_out`` receiver: tell every server process to end the sockets and
    streams of the session that logged out (before Django flushes it)."""
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    layer = get_channel_layer()
    if not key or layer is None:
        return
    message = {"type": LOGOUT_MESSAGE, "session": session_digest(key), "job": "", "worker": ""}
    try:
        await layer.group_send(CONTROL_GROUP, message)
    except Exception:
        # The periodic check still ends them, within SESSION_CHECK_INTERVAL.
        logger.warning("logout broadcast failed", exc_info=True)


async def broadcast_share_revoked(share_id: str) -> None:
    """Tell every server process to end the streams of the share link just revoked."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": SHARE_REVOKED_MESSAGE, "share": share_id, "job": "", "worker": ""}
    try:
        await layer.group_send(CONTROL_GROUP, message)
    except Exception:
        # The periodic check still ends them, within SESSION_CHECK_INTERVAL.
        logger.warning("share revoke broadcast failed", exc_info=True)
