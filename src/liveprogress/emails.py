"""Email when a job ends: who may ask for it, and the message they get.

Only a signed-in user with an address may ask (a visitor's session has no
address, and a made-up one would let anyone mail anyone). The message is written
in the job's language and sent through Django's email backend by the courier
(``notices.py``), from ``DEFAULT_FROM_EMAIL``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.urls import NoReverseMatch, reverse
from django.utils import translation
from django.utils.translation import gettext as _

from . import conf
from .exceptions import BadRequest, Forbidden
from .fragments import outcome
from .models import Job, Status
from .registry import kinds
from .state import job_state

#: The longest subject line (a kind's title may be long).
_SUBJECT_MAX = 150


def wanted(value: Any) -> bool:
    """A client's ``email`` flag, or the ``BadRequest`` that answers it."""
    if not isinstance(value, bool):
        raise BadRequest("email must be true or false", field="email")
    return value


def wanted_at_start(notify: Any) -> bool:
    """A start's ``notify`` (``{"email": true}``, or left out), or the ``BadRequest``
    that answers it."""
    if notify is None:
        return False
    if not isinstance(notify, dict):
        raise BadRequest('notify must be an object such as {"email": true}', field="notify")
    unknown = sorted(set(notify) - {"email"})
    if unknown:
        raise BadRequest(f"notify.{str(unknown[0])[:40]}: unknown notice", field="notify")
    return wanted(notify.get("email", False))


async def owner_address(owner: str) -> str:
    """The address ``owner`` is emailed at: a signed-in user's own. ``Forbidden``,
    saying why, for anyone else (or when the site has email notices off)."""
    if not conf.get("EMAIL_NOTICES"):
        raise Forbidden("This site sends no email when a job ends", field="email")
    prefix, _colon, pk = owner.partition(":")
    if prefix != "user":
        raise Forbidden("Sign in to be emailed when a job ends", field="email")
    user_model = get_user_model()
    users = user_model._default_manager.filter(pk=pk, is_active=True)
    try:
        address = await users.values_list(user_model.get_email_field_name(), flat=True).afirst()
    except (ValueError, ValidationError):
        address = None  # a pk the user model can't hold: no such user
    if not address:
        raise Forbidden("Your account has no email address to send to", field="email")
    return str(address)


async def can_email(owner: str | None) -> bool:
    """Whether ``owner`` may ask to be emailed (pages show the control only then)."""
    if owner is None:
        return False
    try:
        await owner_address(owner)
    except Forbidden:
        return False
    return True


def job_link(job: Job) -> str:
    """The job's row on the owner's ``/jobs/`` page, as an absolute URL from
    ``SITE_URL``; empty without it (or without liveprogress's routes)."""
    site = conf.get("SITE_URL").rstrip("/")
    if not site:
        return ""
    try:
        page = reverse("liveprogress:jobs-page")
    except NoReverseMatch:
        return ""
    return f"{site}{page}#job-{job.id}"


def message(job: Job, address: str) -> EmailMessage:
    """The email that tells ``address`` how ``job`` ended, in the job's language."""
    with translation.override(job.language or settings.LANGUAGE_CODE):
        kind = kinds().get(job.kind)
        names = {
            "title": str(kind.title) if kind is not None else job.kind,
            "status": str(Status(job.status).label).lower(),
        }
        subject = _("“%(title)s”: %(status)s") % names
        lines = [_("Your job “%(title)s” has ended.") % names, "", outcome(job_state(job))]
        link = job_link(job)
        if link:
            lines += ["", _("See it on your jobs page: %(link)s") % {"link": link}]
        lines += ["", _("You asked to be emailed when it ended.")]
    # A header is one line: a title may hold anything.
    subject = " ".join(subject.split())[:_SUBJECT_MAX]
    return EmailMessage(subject, "\n".join(lines), to=[address])
