"""Webhooks: which URLs hear of a kind's jobs, and how a call is signed and made.

``LIVEPROGRESS["WEBHOOKS"]`` maps a kind (or ``"*"``: every kind) to a list of
``{"url", "secret", "events"?}``. A call is a POST of JSON, signed with
HMAC-SHA256 over ``<timestamp>.<body>`` in the ``Liveprogress-Signature`` header
(``t=<unix seconds>,v1=<hex>``), on the model of Stripe's: a receiver checks it
with :func:`verify`, and refuses a timestamp too old (a replayed call).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from . import conf

#: The events a webhook may ask for; without ``events``, only the ending.
EVENTS = ("started", "retried", "finished")
DEFAULT_EVENTS = ("finished",)
#: Stands for every kind in WEBHOOKS.
EVERY_KIND = "*"
#: The header that carries the signature, and the one that names the delivery (the
#: same on each try of it: a receiver that gets it twice acts once).
SIGNATURE_HEADER = "Liveprogress-Signature"
DELIVERY_HEADER = "Liveprogress-Delivery"
#: The longest URL (the notice's ``target`` column).
URL_MAX = 500
#: How much of a failing receiver's answer is kept as the notice's error.
_ANSWER_KEPT = 200


@dataclass(frozen=True)
class Webhook:
    url: str
    secret: str
    events: tuple[str, ...]


def configured() -> dict[str, list[Webhook]]:
    """WEBHOOKS read and checked: kind -> its webhooks. ``ImproperlyConfigured``
    names the first entry that is wrong and how to write it."""
    hooks: dict[str, list[Webhook]] = {}
    for kind, entries in conf.get("WEBHOOKS").items():
        where = f"LIVEPROGRESS['WEBHOOKS'][{kind!r}]"
        if not isinstance(kind, str) or not kind:
            raise ImproperlyConfigured(f"{where}: a key is a job kind or '*'")
        if not isinstance(entries, list | tuple):
            raise ImproperlyConfigured(f"{where} must be a list of {{'url', 'secret'}} dicts")
        hooks[kind] = [_webhook(f"{where}[{index}]", entry) for index, entry in enumerate(entries)]
    return hooks


def _webhook(where: str, entry: Any) -> Webhook:
    if not isinstance(entry, Mapping):
        raise ImproperlyConfigured(f"{where} must be a dict with 'url' and 'secret'")
    unknown = sorted(set(entry) - {"url", "secret", "events"})
    if unknown:
        raise ImproperlyConfigured(
            f"{where} has unknown key(s) {', '.join(map(repr, unknown))}, "
            "must be among: url, secret, events"
        )
    url, secret = entry.get("url"), entry.get("secret")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise ImproperlyConfigured(f"{where}['url'] = {url!r} must be an https:// (or http://) URL")
    if len(url) > URL_MAX:
        raise ImproperlyConfigured(f"{where}['url'] is longer than {URL_MAX} characters")
    if not isinstance(secret, str) or not secret:
        raise ImproperlyConfigured(
            f"{where}['secret'] is missing: every webhook is signed; read it from the "
            "environment, e.g. os.environ['REPORTS_WEBHOOK_SECRET']"
        )
    events = entry.get("events", DEFAULT_EVENTS)
    if (
        not isinstance(events, list | tuple)
        or not events
        or any(event not in EVENTS for event in events)
    ):
        raise ImproperlyConfigured(
            f"{where}['events'] = {events!r} must list some of: {', '.join(EVENTS)}"
        )
    return Webhook(url=url, secret=secret, events=tuple(events))


def webhooks_for(kind: str, event: str) -> list[Webhook]:
    """The webhooks a ``kind``'s ``event`` calls: the kind's own, then every
    kind's, each URL once."""
    hooks = configured()
    found: dict[str, Webhook] = {}
    for hook in [*hooks.get(kind, []), *hooks.get(EVERY_KIND, [])]:
        if event in hook.events:
            found.setdefault(hook.url, hook)
    return list(found.values())


def secret_for(kind: str, url: str) -> str | None:
    """The secret of the webhook at ``url`` for ``kind`` as configured now (a
    rotated secret signs the next try); None once it is configured no more."""
    hooks = configured()
    for hook in [*hooks.get(kind, []), *hooks.get(EVERY_KIND, [])]:
        if hook.url == url:
            return hook.secret
    return None


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Liveprogress-Signature`` header's value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, tolerance: float = 300) -> bool:
    """For a receiver: True if ``header`` (the ``Liveprogress-Signature``) signs
    ``body`` (the raw bytes, before any parsing) with ``secret``, at most
    ``tolerance`` seconds ago. An older one may be a replay: refuse it."""
    parts = dict(part.partition("=")[::2] for part in header.split(","))
    timestamp = parts.get("t", "")
    if not timestamp.isdecimal() or abs(time.time() - int(timestamp)) > tolerance:
        return False
    expected = signature(secret, int(timestamp), body).partition(",v1=")[2]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect is an answer, not a delivery: urllib would follow a 302 with a GET
    # and no body, and count the page it lands on as a success.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


class WebhookFailed(Exception):
    """A call that did not get a 2xx answer in time; its message says what happened."""


def post(url: str, secret: str, payload: dict[str, Any], delivery: str, timeout: float) -> None:
    """POST ``payload`` to ``url``, signed now; ``WebhookFailed`` unless it answers
    2xx within ``timeout`` seconds. Blocking: run it in a thread."""
    body = body_of(payload)
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked: http(s) only)
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "liveprogress-webhooks",
            SIGNATURE_HEADER: signature(secret, int(time.time()), body),
            DELIVERY_HEADER: delivery,
        },
    )
    try:
        with _opener.open(request, timeout=timeout) as answer:
            answer.read(_ANSWER_KEPT)
    except urllib.error.HTTPError as error:
        text = error.read(_ANSWER_KEPT).decode("utf-8", "replace")
        raise WebhookFailed(f"HTTP {error.code}: {text}".strip()) from None
    except TimeoutError:
        raise WebhookFailed(f"no answer within {timeout} s") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError):
            raise WebhookFailed(f"no answer within {timeout} s") from None
        raise WebhookFailed(f"could not connect: {reason}") from None
