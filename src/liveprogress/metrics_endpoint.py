"""The Prometheus endpoint, ``liveprogress/metrics/``: for a staff user's session or
the ``METRICS_TOKEN`` bearer token, and only when the site turned ``METRICS`` on.

What it serves is :func:`liveprogress.metrics.exposition`; docs/metrics.md says how
to scrape it.
"""

from __future__ import annotations

import hmac

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse

from . import conf, metrics
from .api import api_view, error_response
from .exceptions import Forbidden, NotFound, Unauthorized

#: What a refused scraper is told to send (RFC 6750).
_CHALLENGE = 'Bearer realm="liveprogress metrics"'


@api_view("GET")
async def metrics_view(request: HttpRequest) -> HttpResponse:
    """Every liveprogress series, in Prometheus's text format (or OpenMetrics)."""
    if not conf.get("METRICS"):
        raise NotFound("Metrics are off: set LIVEPROGRESS['METRICS'] = True to serve them")
    if not metrics.installed():
        raise ImproperlyConfigured(
            "LIVEPROGRESS['METRICS'] is on but prometheus_client is not installed: "
            'pip install "django-liveprogress[metrics]"'
        )
    refusal = await _refusal(request)
    if refusal is not None:
        refused = error_response(refusal)
        if isinstance(refusal, Unauthorized):
            refused["WWW-Authenticate"] = _CHALLENGE
        return refused
    # This process's own pending numbers first; the others write theirs every FLUSH_S.
    metrics.flush()
    body, content_type = await sync_to_async(metrics.exposition)(request.headers.get("Accept", ""))
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response


async def _refusal(request: HttpRequest) -> Unauthorized | Forbidden | None:
    """Why the caller may not read the metrics (None: it may). A bearer token is
    judged alone: a wrong one is refused even beside a staff session."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        token = conf.get("METRICS_TOKEN")
        # Compared in constant time: how long a wrong token took says nothing of the right one.
        if token and hmac.compare_digest(credentials.strip().encode(), token.encode()):
            return None
        return Unauthorized("Wrong metrics token")
    auser = getattr(request, "auser", None)
    user = await auser() if auser is not None else None
    if user is None or not user.is_authenticated:
        return Unauthorized(
            "Sign in as staff, or send the metrics token (Authorization: Bearer ...)"
        )
    if not (user.is_active and user.is_staff):
        return Forbidden("Only staff may read the metrics")
    return None
