"""The admin: every job with its kind, owner, status and progress; a cancel action.

Rows are read-only (jobs change through their runner, never by hand); the
action cancels through the same path as the API, so a running job is stopped
where it runs and its watchers see it end. Notices (emails, webhook calls) show
how their tries went; one given up may be tried again. Share links show when they
were made and until when they work; staff may revoke them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import actions
from .access import broadcast_share_revoked
from .models import ACTIVE_STATUSES, Job, JobLog, Notice, NoticeStatus, Share
from .owner import display_owner

# The admin's classes are generic for the type checker (django-stubs) only: subscripted
# at run time they would need django_stubs_ext's monkeypatch, a dependency for nothing.
if TYPE_CHECKING:
    _JobLogInlineBase = admin.TabularInline[JobLog, Job]
    _JobAdminBase = admin.ModelAdmin[Job]
    _NoticeAdminBase = admin.ModelAdmin[Notice]
    _ShareAdminBase = admin.ModelAdmin[Share]
else:
    _JobLogInlineBase = admin.TabularInline
    _JobAdminBase = admin.ModelAdmin
    _NoticeAdminBase = admin.ModelAdmin
    _ShareAdminBase = admin.ModelAdmin

_LOG_FIELDS = ("seq", "level", "text", "created_at")


class JobLogInline(_JobLogInlineBase):
    """The job's kept log lines, read-only, oldest first."""

    model = JobLog
    fields = _LOG_FIELDS
    readonly_fields = _LOG_FIELDS
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(_JobAdminBase):
    list_display = [
        "kind",
        "owner_shown",
        "status",
        "progress",
        "message",
        "created_at",
        "duration",
        "cancelled_by",
    ]
    list_filter = ["status", "kind", "created_at", "expired"]
    date_hierarchy = "created_at"
    search_fields = ["id", "owner", "kind", "message"]
    # The owner as a digest where it is a session key (a live cookie): see owner_shown.
    exclude = ["owner"]
    readonly_fields = [
        "owner_shown",
        *(field.name for field in Job._meta.fields if field.name != "owner"),
    ]
    actions = ["cancel_jobs"]
    inlines = [JobLogInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description=_("owner"), ordering="owner")
    def owner_shown(self, job: Job) -> str:
        return display_owner(job.owner)

    @admin.display(description=_("progress"))
    def progress(self, job: Job) -> str:
        if job.total is None:
            return f"{job.current}" if job.current else "–"
        return f"{job.percent:.0f}% ({job.current}/{job.total})"

    @admin.display(description=_("duration"))
    def duration(self, job: Job) -> str:
        if job.started_at is None or job.finished_at is None:
            return "–"
        seconds = round((job.finished_at - job.started_at).total_seconds())
        return f"{seconds // 60}:{seconds % 60:02d}"

    @admin.action(description=_("Cancel selected jobs"), permissions=["change"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        active = list(queryset.filter(status__in=ACTIVE_STATUSES).values_list("id", "owner"))
        for job_id, owner in active:
            # Admin views are sync; the cancel runs on the server's event loop,
            # where an in-process job runs. Recorded as this staff member's.
            by = f"staff:{request.user.pk}"
            async_to_sync(actions.cancel_job)(owner, str(job_id), by=by)
        skipped = queryset.count() - len(active)
        self.message_user(
            request,
            ngettext(
                "Cancel requested for %(count)d job.",
                "Cancel requested for %(count)d jobs.",
                len(active),
            )
            % {"count": len(active)},
            messages.SUCCESS,
        )
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "%(count)d job had already ended.",
                    "%(count)d jobs had already ended.",
                    skipped,
                )
                % {"count": skipped},
                messages.WARNING,
            )


@admin.register(Notice)
class NoticeAdmin(_NoticeAdminBase):
    """Emails and webhook calls of jobs' events: delivered, still tried, or given up
    (with the last error)."""

    list_display = ["job", "channel", "event", "target", "status", "tries", "due_at", "last_error"]
    list_filter = ["status", "channel", "event", "created_at"]
    date_hierarchy = "created_at"
    search_fields = ["job__id", "target", "last_error"]
    readonly_fields = [field.name for field in Notice._meta.fields]
    actions = ["try_again"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description=_("Try the selected notices again now"), permissions=["change"])
    def try_again(self, request: HttpRequest, queryset: QuerySet[Notice]) -> None:
        # Not one being sent (its try decides); the others get NOTICE_ATTEMPTS more tries.
        again = queryset.filter(status__in=[NoticeStatus.FAILED, NoticeStatus.PENDING]).update(
            status=NoticeStatus.PENDING, tries=0, due_at=timezone.now(), last_error=""
        )
        self.message_user(
            request,
            ngettext(
                "%(count)d notice will be tried again.",
                "%(count)d notices will be tried again.",
                again,
            )
            % {"count": again},
            messages.SUCCESS,
        )


_SHARE_FIELDS = ("id", "job", "created_at", "expires_at", "revoked_at")


@admin.register(Share)
class ShareAdmin(_ShareAdminBase):
    """Share links of jobs: made when, working until when, revoked when. The token is
    never stored, and its digest is not shown (it opens nothing, but says nothing
    either). Revoking here ends the link's streams at once, as the owner's revoke."""

    list_display = _SHARE_FIELDS
    list_filter = ["created_at", "expires_at"]
    date_hierarchy = "created_at"
    search_fields = ["id", "job__id"]
    fields = _SHARE_FIELDS
    readonly_fields = _SHARE_FIELDS
    actions = ["revoke_links"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description=_("Revoke selected share links"), permissions=["change"])
    def revoke_links(self, request: HttpRequest, queryset: QuerySet[Share]) -> None:
        working = [
            str(pk) for pk in queryset.filter(revoked_at__isnull=True).values_list("pk", flat=True)
        ]
        Share.objects.filter(pk__in=working).update(revoked_at=timezone.now())
        for share_id in working:
            async_to_sync(broadcast_share_revoked)(share_id)
        self.message_user(
            request,
            ngettext(
                "%(count)d share link revoked.",
                "%(count)d share links revoked.",
                len(working),
            )
            % {"count": len(working)},
            messages.SUCCESS,
        )
