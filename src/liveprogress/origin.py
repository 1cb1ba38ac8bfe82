"""The socket's origin check, as strict as Django's CSRF check for HTTP.

A browser sends ``Origin`` with every WebSocket handshake, and a socket carries
its cookies: a page on another origin must not open one (it could list, start
and cancel the visitor's jobs). Channels' ``AllowedHostsOriginValidator`` looks
at the host name only, so a page on another port or scheme of the same host
passed. This accepts exactly what ``CsrfViewMiddleware`` accepts for a POST:
the site's own scheme, host and port (``SECURE_PROXY_SSL_HEADER`` honoured),
or an origin in ``CSRF_TRUSTED_ORIGINS`` (``*.`` subdomain patterns included).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain


class SameOriginValidator:
    """ASGI middleware: a socket whose ``Origin`` is not the site's own is refused (403)."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)


def _allowed_hosts() -> list[str]:
    # As Django's request.get_host() and Channels' validator do under DEBUG.
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return allowed


def _is_secure(scope: dict[str, Any], headers: dict[bytes, bytes]) -> bool:
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        name, value = proxy
        header = name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
        if header in headers:
            return bool(headers[header].decode("latin-1").split(",")[0].strip() == value)
    return scope.get("scheme") in ("wss", "https")


def origin_allowed(scope: dict[str, Any]) -> bool:
    """True if the handshake's ``Origin`` is one the CSRF check would accept."""
    headers: dict[bytes, bytes] = {}
    for name, value in scope.get("headers", []):
        headers.setdefault(bytes(name).lower(), bytes(value))
    if b"origin" not in headers or b"host" not in headers:
        return False
    origin = headers[b"origin"].decode("latin-1")
    host = headers[b"host"].decode("latin-1")
    domain, _port = split_domain_port(host)
    if domain and validate_host(domain, _allowed_hosts()):
        scheme = "https" if _is_secure(scope, headers) else "http"
        if origin == f"{scheme}://{host}":
            return True
    trusted = getattr(settings, "CSRF_TRUSTED_ORIGINS", [])
    if origin in trusted:
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    return any(
        parsed.scheme == pattern.scheme
        and is_same_domain(parsed.netloc, pattern.netloc.lstrip("*"))
        for pattern in (urlsplit(entry) for entry in trusted if "*" in entry)
    )
