"""A job's state as server-rendered HTML: the bar's template context.

``{% liveprogress_bar %}`` renders it into a page.
"""

from __future__ import annotations

from typing import Any

from .exceptions import RequestError
from .models import Status
from .registry import get_kind
from .state import JobState


def kind_title(kind: str) -> str:
    """A kind's human title, or its name when it is not registered here."""
    try:
        return str(get_kind(kind).title)
    except RequestError:
        return kind


def bar_context(state: JobState, *, cancel: bool) -> dict[str, Any]:
    """The template context of a bar (``liveprogress/bar.html``) showing ``state``."""
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
