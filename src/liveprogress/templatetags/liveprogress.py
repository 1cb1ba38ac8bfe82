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

A site that uses htmx needs none of the scripts: ``liveprogress_htmx_assets``
links the stylesheet, htmx and its SSE extension (as django-htmx serves them),
and ``liveprogress_htmx_bar`` renders a bar that htmx keeps live from the job's
fragment stream, HTML rendered on the server.

A bar renders only for its job's owner: the viewer is the request's (its user,
else its session; none is created), and a job that is not the viewer's renders
nothing. An async view passes the viewer in the context,
``{"liveprogress_viewer": await aowner_of(request)}``, since the request's user
can't be read from async code.
"""

from __future__ import annotations

import json
import time

from django import template
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured, SynchronousOnlyOperation
from django.template.context import Context
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.urls import reverse
from django.utils.html import format_html, json_script

from .. import conf
from ..fragments import bar_context, htmx_bar, outcome
from ..handles import JobHandle
from ..models import Job
from ..owner import session_owner, user_owner
from ..state import JobState, is_terminal, job_state

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


@register.simple_tag
def liveprogress_share_assets() -> str:
    """A Share button on every bar of the page (liveprogress-share.js, after
    ``liveprogress_assets``) and its settings, where the site turned ``SHARE_LINKS``
    on; nothing where it did not."""
    if not conf.get("SHARE_LINKS"):
        return ""
    config = {
        "api_path": reverse("liveprogress:jobs"),
        "lifetime": conf.get("SHARE_LIFETIME"),
        "max_lifetime": conf.get("SHARE_MAX_LIFETIME"),
    }
    return format_html(
        '{}\n<script src="{}"></script>',
        json_script(config, "lp-share-config"),
        static("liveprogress/liveprogress-share.js"),
    )


#: The context variable a view may set to the viewer's owner key.
VIEWER = "liveprogress_viewer"


def _viewer(context: Context, tag: str) -> str | None:
    """The owner key of whoever the page is rendered for (None: nobody's)."""
    if VIEWER in context:
        viewer = context[VIEWER]
        # Whatever the view put there: only an owner key (a str) can match a job's owner.
        return viewer if isinstance(viewer, str) else None
    request = context.get("request")
    if request is None:
        raise ImproperlyConfigured(
            f"{{% {tag} %}} needs the request in the template context (the "
            "'django.template.context_processors.request' context processor) or "
            f"the viewer's owner key as {VIEWER!r}"
        )
    try:
        owner = user_owner(getattr(request, "user", None))
    except SynchronousOnlyOperation:
        raise ImproperlyConfigured(
            f"{{% {tag} %}} in an async view: pass the viewer in the context, "
            f"{{{VIEWER!r}: await liveprogress.aowner_of(request)}}"
        ) from None
    session = getattr(request, "session", None)
    return owner or session_owner(session.session_key if session is not None else None)


def _viewers_state(context: Context, job: Job | JobHandle, tag: str) -> JobState | None:
    """The state of ``job`` if the viewer owns it; None for someone else's job, of
    which nothing is shown (as the API answers not_found)."""
    if isinstance(job, Job):
        state, owner = job_state(job), job.owner
    elif isinstance(job, JobHandle):
        state, owner = job.state, job.owner
    else:
        raise TypeError(f"{{% {tag} %}} takes a Job or a JobHandle, not {type(job).__name__}")
    return state if owner == _viewer(context, tag) else None


@register.simple_tag(takes_context=True)
def liveprogress_bar(context: Context, job: Job | JobHandle | None, cancel: bool = True) -> str:
    """A bar for ``job`` (a Job or a JobHandle), shown only to its owner; None
    renders an empty bar that a script fills (the pages use it as the template of
    new rows)."""
    if job is None:
        return render_to_string("liveprogress/bar.html", {"state": None, "cancel": cancel})
    state = _viewers_state(context, job, "liveprogress_bar")
    if state is None:
        return ""
    return render_to_string("liveprogress/bar.html", bar_context(state, cancel=cancel))


@register.simple_tag(takes_context=True)
def liveprogress_htmx_assets(context: Context) -> str:
    """The stylesheet, then htmx and its SSE extension: the files django-htmx ships
    (self-hosted, no CDN), with the page's CSP nonce when it has one."""
    try:
        from django_htmx import jinja as django_htmx
    except ImportError:
        raise ImproperlyConfigured(
            "{% liveprogress_htmx_assets %} serves htmx from django-htmx, which is not "
            "installed: pip install 'django-liveprogress[htmx]'"
        ) from None
    # Feature, not version: the extensions table came with the SSE extension (1.29).
    if "hx-sse" not in getattr(django_htmx, "EXTENSIONS", {}):
        raise ImproperlyConfigured(
            "{% liveprogress_htmx_assets %} needs htmx's SSE extension, which django-htmx "
            "ships from version 1.29 on: pip install 'django-htmx>=1.29'"
        )
    if not apps.is_installed("django_htmx"):
        raise ImproperlyConfigured(
            "{% liveprogress_htmx_assets %} serves htmx from django-htmx's static files: "
            "add 'django_htmx' to INSTALLED_APPS"
        )
    return format_html(
        '<link rel="stylesheet" href="{}">\n{}',
        static("liveprogress/liveprogress.css"),
        django_htmx.htmx_script(extensions=["hx-sse"], nonce=context.get("csp_nonce")),
    )


@register.simple_tag(takes_context=True)
def liveprogress_htmx_bar(context: Context, job: Job | JobHandle, cancel: bool = True) -> str:
    """A bar for ``job`` that htmx keeps live (no script of liveprogress's), shown
    only to its owner: rendered here, then swapped for each new state the job's
    fragment stream sends, until the final one. An ended job's bar opens no stream.

    Its Cancel button posts with the page's CSRF token (``cancel=False`` leaves
    it out).
    """
    state = _viewers_state(context, job, "liveprogress_htmx_bar")
    if state is None:
        return ""
    stream_url = headers = ""
    if not is_terminal(state):
        stream_url = reverse("liveprogress:job-fragments", args=[state["id"]])
        if cancel:
            headers = json.dumps({"X-CSRFToken": str(_csrf_token(context))})
        else:
            stream_url += "?cancel=0"
    return render_to_string(
        "liveprogress/htmx/live_bar.html",
        {
            "stream_url": stream_url,
            "headers": headers,
            "bar": htmx_bar(state, cancel=cancel),
            "outcome": outcome(state),
        },
    )


def _csrf_token(context: Context) -> object:
    token = context.get("csrf_token")
    if token is None:
        raise ImproperlyConfigured(
            "{% liveprogress_htmx_bar %} needs the CSRF token for its Cancel button: "
            "render the template with the request (render(request, ...)), or pass cancel=False"
        )
    return token
