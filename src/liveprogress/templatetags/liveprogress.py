"""Template tags: a live progress bar for any job, in any Django template.

    {% load liveprogress %}
    <head>{% liveprogress_assets %}</head>
    ...
    {% liveprogress_bar job %}

``liveprogress_assets`` links the app's stylesheet, its translations, the
client (liveprogress-client.js) and the widgets (liveprogress-widgets.js, with
``data-autowire``): every bar on the page then follows its job live
(WebSocket, else Server-Sent Events, else polling). A bar shows the job's
title, status, percent, message, elapsed time and ETA, and a Cancel button
while it runs (``cancel=False`` leaves it out).
"""

from __future__ import annotations

import time
from typing import Any

from django import template
from django.templatetags.static import static
from django.urls import reverse
from django.utils.html import format_html

from ..exceptions import RequestError
from ..models import Job, Status
from ..registry import get_kind
from ..state import JobState, job_state

register = template.Library()


@register.simple_tag
def liveprogress_assets(autowire: bool = True) -> str:
    """The stylesheet, the JS translations, then the client and the widgets scripts
    in that order (the widgets attach to the client's global); self-hosted, no CDN."""
    return format_html(
        # The server's clock, so elapsed times don't drift with the browser's.
        '<meta name="liveprogress-now" content="{}">\n'
        '<link rel="stylesheet" href="{}">\n'
        '<script src="{}"></script>\n'
        '<script src="{}"></script>\n'
        '<script src="{}"{}></script>',
        f"{time.time():.3f}",
        static("liveprogress/liveprogress.css"),
        reverse("liveprogress:jsi18n"),
        static("liveprogress/liveprogress-client.js"),
        static("liveprogress/liveprogress-widgets.js"),
        " data-autowire" if autowire else "",
    )


def kind_title(kind: str) -> str:
    """A kind's human title, or its name when it is not registered here."""
    try:
        return str(get_kind(kind).title)
    except RequestError:
        return kind


@register.inclusion_tag("liveprogress/bar.html")
def liveprogress_bar(job: Job | JobState | None, cancel: bool = True) -> dict[str, Any]:
    """A bar for ``job`` (a Job or its wire state); None renders an empty bar that a
    script fills (the pages use it as the template of new rows)."""
    state: JobState | None = job_state(job) if isinstance(job, Job) else job
    if state is None:
        return {"state": None, "cancel": cancel}
    percent = state["percent"]
    return {
        "state": state,
        "cancel": cancel,
        "title": kind_title(state["kind"]),
        "status_label": Status(state["status"]).label,
        "percent": percent,
        # Whole percent, rounded down as the script does: 100 only when done.
        "whole": None if percent is None else int(percent),
        "width": 100 if percent is None else percent,
        "is_active": state["status"] in (Status.QUEUED, Status.RUNNING),
    }
