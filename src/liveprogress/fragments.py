"""A job's state as server-rendered HTML: the bar's template context, the htmx bar
and the sentence that says how a job ended.

``{% liveprogress_bar %}`` and ``{% liveprogress_htmx_bar %}`` render them into a
page; the fragment streams (events.py) render a new htmx bar for every state.
"""

from __future__ import annotations

from typing import Any

from django.template.loader import render_to_string
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from .exceptions import RequestError
from .models import Status
from .registry import get_kind
from .state import JobState

#: The htmx bar's template: ``liveprogress/bar.html`` with htmx controls.
HTMX_BAR_TEMPLATE = "liveprogress/htmx/bar.html"


def kind_title(kind: str) -> str:
    """A kind's human title, or its name when it is not registered here."""
    try:
        return str(get_kind(kind).title)
    except RequestError:
        return kind


def bar_context(state: JobState, *, cancel: bool) -> dict[str, Any]:
    """The template context of a bar (``liveprogress/bar.html`` and the htmx bar)
    showing ``state``."""
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
        "is_active": state["status"] in (Status.QUEUED, Status.RUNNING, Status.PAUSED),
        "is_paused": state["status"] == Status.PAUSED,
        # Another engine's task (its kind is "engine:task") can't pause.
        "pausable": ":" not in state["kind"],
    }


def htmx_bar(state: JobState, *, cancel: bool) -> SafeString:
    """The htmx bar of ``state``, in the active language."""
    return render_to_string(HTMX_BAR_TEMPLATE, bar_context(state, cancel=cancel))


def outcome(state: JobState) -> str:
    """How the job ended, in a sentence (the script's words); empty while it runs."""
    status = state["status"]
    if status == Status.SUCCEEDED:
        return _("Completed.")
    if status == Status.FAILED:
        return _("Failed: %(error)s") % {"error": state["error"] or _("unknown error")}
    if status == Status.CANCELLED:
        return _("Cancelled: it was stopped on request.")
    if status == Status.INTERRUPTED:
        return _("Interrupted: the server stopped while it ran.")
    return ""
