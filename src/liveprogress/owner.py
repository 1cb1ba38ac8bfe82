"""Who is asking: the owner key and language of a request or a socket.

The owner is the logged-in user, else the session. A session key is trusted
only once the session store has confirmed it exists, so a made-up cookie owns
nothing.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.http import HttpRequest
from django.utils import translation

# Stored in an anonymous visitor's session so the session is saved and its cookie set.
SESSION_MARK = "liveprogress"


def user_owner(user: Any) -> str | None:
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    return None


def session_owner(session_key: str | None) -> str | None:
    return f"session:{session_key}" if session_key else None


async def request_owner(request: HttpRequest, *, create: bool = True) -> str | None:
    """The owner of an HTTP request.

    With ``create``, a new anonymous visitor gets a session (saved now, its
    cookie set by the response); without, such a visitor owns nothing (None).
    """
    owner = user_owner(await request.auser())
    if owner is not None:
        return owner
    session = request.session
    # Reading loads the session; a cookie the store doesn't know loses its key.
    marked = await session.aget(SESSION_MARK, False)
    if session.session_key is not None and marked:
        return session_owner(session.session_key)
    if not create:
        return session_owner(session.session_key)
    if not marked:
        await session.aset(SESSION_MARK, True)
    if session.session_key is None:
        await session.asave()
    return session_owner(session.session_key)


async def scope_owner(scope: dict[str, Any]) -> str | None:
    """The owner of a WebSocket, or None when it came with no valid session."""
    owner = user_owner(scope.get("user"))
    if owner is not None:
        return owner
    session = scope.get("session")
    if session is None or session.session_key is None:
        return None
    # Loading drops a key the store doesn't know.
    await database_sync_to_async(session.keys)()
    return session_owner(session.session_key)


def scope_language(scope: dict[str, Any]) -> str:
    """The language a socket's client asked for: cookie, then Accept-Language."""
    headers = {name.lower(): value for name, value in scope.get("headers", [])}
    cookies = scope.get("cookies") or {}
    candidates = [cookies.get(settings.LANGUAGE_COOKIE_NAME, "")]
    accept = headers.get(b"accept-language", b"").decode("latin-1")
    candidates += [lang for lang, _ in translation.trans_real.parse_accept_lang_header(accept)]
    for candidate in candidates:
        if not candidate or candidate == "*":
            continue
        try:
            return translation.get_supported_language_variant(candidate)
        except LookupError:
            continue
    return settings.LANGUAGE_CODE
