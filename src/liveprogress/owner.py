"""Who is asking: the owner key and language of a request or a socket.

The owner is the logged-in user, else the session. A session key is trusted
only once the session store has confirmed it exists, so a made-up cookie owns
nothing. Code of the site may also name an owner itself: a user, or an owner key
such as ``"system:nightly"`` (:func:`owner_of`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Literal, overload

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.http import HttpRequest
from django.utils import translation
from django.utils.translation.trans_real import parse_accept_lang_header

from . import conf

#: ``prefix:name``: ``user:<pk>``, ``session:<key>``, or a name the site chooses
#: (``system:nightly``, ``cli:alice``). At most 100 characters (the column's size).
OWNER_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,30}:[^\s]{1,68}$")

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


def as_request(who: Any) -> HttpRequest | None:
    """The Django request ``who`` is, or wraps; None for a user or an owner key.

    Django REST framework's ``Request`` wraps one (as ``_request``: DRF has no
    public name for it) and authenticates its own ``user``: read from the
    wrapper, the owner of a client that signed in with a token is that token's
    user. Duck-typed: liveprogress never imports DRF outside ``liveprogress.drf``.
    """
    if isinstance(who, HttpRequest):
        return who
    wrapped = getattr(who, "_request", None)
    return wrapped if isinstance(wrapped, HttpRequest) else None


def owner_of(who: Any) -> str:
    """The owner key for ``who``: a request (its user, else its session, created
    when needed), a user, or an owner key (returned as it is once checked)."""
    request = as_request(who)
    if request is not None:
        return _request_owner_sync(request, getattr(who, "user", None))
    return _named_owner(who)


async def aowner_of(who: Any) -> str:
    """:func:`owner_of` for async code."""
    if isinstance(who, HttpRequest):
        owner = await request_owner(who)
        assert owner is not None  # noqa: S101 (create=True always gives one)
        return owner
    if as_request(who) is not None:
        # A wrapper's user is its own authentication's (a token looked up in the
        # database, say): read by sync code, in a thread.
        return await sync_to_async(owner_of)(who)
    return _named_owner(who)


def _named_owner(who: Any) -> str:
    if isinstance(who, str):
        if not OWNER_KEY.match(who):
            raise ValueError(
                f"Owner key {who[:100]!r} is not of the form 'prefix:name' "
                "(e.g. 'user:42', 'system:nightly'; at most 100 characters, no spaces)"
            )
        return who
    if hasattr(who, "is_authenticated") and hasattr(who, "pk"):
        owner = user_owner(who)
        if owner is None:
            raise ValueError(
                "An anonymous user owns nothing: pass the request instead (its session "
                "owns the job), or an owner key"
            )
        return owner
    raise TypeError(
        f"An owner is a request, a user or an owner key (str), not {type(who).__name__}"
    )


def existing_owner_of(who: Any) -> str | None:
    """:func:`owner_of` for looking up, not starting: a request whose visitor has no
    session owns nothing (None), and none is made for it."""
    request = as_request(who)
    if request is not None:
        return _request_owner_sync(request, getattr(who, "user", None), create=False)
    return _named_owner(who)


async def aexisting_owner_of(who: Any) -> str | None:
    """:func:`existing_owner_of` for async code."""
    if isinstance(who, HttpRequest):
        return await request_owner(who, create=False)
    if as_request(who) is not None:
        return await sync_to_async(existing_owner_of)(who)
    return _named_owner(who)


@overload
def _request_owner_sync(
    request: HttpRequest, user: Any, *, create: Literal[True] = True
) -> str: ...
@overload
def _request_owner_sync(request: HttpRequest, user: Any, *, create: bool) -> str | None: ...
def _request_owner_sync(request: HttpRequest, user: Any, *, create: bool = True) -> str | None:
    """:func:`request_owner` for sync code: same steps, sync calls. ``user``: the
    request's, or its wrapper's (which authenticates its own)."""
    owner = user_owner(user)
    if owner is not None:
        return owner
    session = request.session
    # Reading loads the session; a cookie the store doesn't know loses its key.
    marked = session.get(SESSION_MARK, False)
    if not create:
        return session_owner(session.session_key)
    if not marked:
        session[SESSION_MARK] = True
    if session.session_key is None:
        session.save()
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


def is_anonymous(owner: str) -> bool:
    """True for a visitor who is not signed in (one owner per session)."""
    return owner.startswith("session:")


def is_client(owner: str) -> bool:
    """True for a person's owner key (a user, or a visitor's session), False for a
    name the site's code chose (``system:nightly``)."""
    return owner.startswith(("user:", "session:"))


def _forwarded(value: str) -> str:
    # The last address: the one the site's own proxy saw (earlier ones the client
    # may have written itself).
    return value.split(",")[-1].strip()


def client_key(address: str) -> str:
    """The address a client's jobs are counted by: an IPv4 address as it is, an IPv6
    one by its /64 (one home line or host holds a whole /64 and may rotate inside it)."""
    try:
        parsed = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return address[:45]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def request_address(request: HttpRequest) -> str:
    """The client address of a request (``CLIENT_ADDRESS_HEADER`` behind a proxy)."""
    header = conf.get("CLIENT_ADDRESS_HEADER")
    if header:
        forwarded = request.headers.get(header)
        if forwarded:
            return client_key(_forwarded(forwarded))
    return client_key(str(request.META.get("REMOTE_ADDR") or ""))


def scope_address(scope: dict[str, Any]) -> str:
    """The client address of a socket (``CLIENT_ADDRESS_HEADER`` behind a proxy)."""
    header = conf.get("CLIENT_ADDRESS_HEADER").lower().encode("latin-1")
    if header:
        for name, value in scope.get("headers", []):
            if name.lower() == header:
                return client_key(_forwarded(value.decode("latin-1")))
    client = scope.get("client")
    return client_key(str(client[0])) if client else ""


def display_owner(owner: str) -> str:
    """An owner key as staff may see it: a session key is a live credential (its
    cookie), so it is shown as a short digest that still tells sessions apart."""
    prefix, _, name = owner.partition(":")
    if prefix == "session" and name:
        return f"session #{hashlib.sha256(name.encode()).hexdigest()[:10]}"
    return owner


def scope_language(scope: dict[str, Any]) -> str:
    """The language a socket's client asked for: cookie, then Accept-Language."""
    headers = {name.lower(): value for name, value in scope.get("headers", [])}
    cookies = scope.get("cookies") or {}
    candidates = [cookies.get(settings.LANGUAGE_COOKIE_NAME, "")]
    accept = headers.get(b"accept-language", b"").decode("latin-1")
    candidates += [lang for lang, _ in parse_accept_lang_header(accept)]
    for candidate in candidates:
        if not candidate or candidate == "*":
            continue
        try:
            return translation.get_supported_language_variant(candidate)
        except LookupError:
            continue
    return settings.LANGUAGE_CODE


@dataclass(frozen=True)
class Starter:
    """Who starts a job, as the job keeps it: its owner, their language (the job's
    messages are written in it) and, for a visitor who is not signed in, their
    client address (their jobs are capped per address)."""

    owner: str
    language: str
    address: str


async def astarter_of(who: Any) -> Starter:
    """The :class:`Starter` for ``who``, as :func:`aowner_of` takes it; a request
    gives its language and address, anything else the active language."""
    request = as_request(who)
    if request is not None:
        language = getattr(request, "LANGUAGE_CODE", "")
        return Starter(await aowner_of(who), language, request_address(request))
    return Starter(_named_owner(who), translation.get_language() or "", "")
