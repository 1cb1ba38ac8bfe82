"""The Job: one long-running piece of work, its progress and how it ended."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class Status(models.TextChoices):
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")
    INTERRUPTED = "interrupted", _("Interrupted")


ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)
TERMINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.INTERRUPTED)

# A running job publishes at most this many states past the last one it wrote to
# the database (the publisher writes before it would go further). Whoever ends a
# job from the outside (stale heartbeat, dead process) jumps its seq past this
# window, so the final state is newer than anything a watcher may have seen.
UNPERSISTED_SEQ_WINDOW = 20


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(_("kind"), max_length=100)
    params = models.JSONField(_("parameters"), default=dict, blank=True)
    # "user:<pk>", "session:<session key>" or "cli:<name>": who may see and cancel it.
    owner = models.CharField(_("owner"), max_length=100)
    # The language of whoever started it: the job's messages are written in it.
    language = models.CharField(_("language"), max_length=16, blank=True)
    status = models.CharField(
        _("status"), max_length=12, choices=Status.choices, default=Status.QUEUED
    )
    current = models.BigIntegerField(_("current"), default=0)
    total = models.BigIntegerField(_("total"), null=True, blank=True)
    message = models.TextField(_("message"), blank=True)
    eta_s = models.FloatField(_("seconds left"), null=True, blank=True)
    result = models.JSONField(_("result"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True)
    # +1 for every published change; watchers keep a state only if its seq is newer.
    seq = models.BigIntegerField(_("sequence"), default=0)
    cancel_requested = models.BooleanField(_("cancel requested"), default=False)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated"), default=timezone.now)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    heartbeat_at = models.DateTimeField(_("heartbeat"), null=True, blank=True)
    # "host:pid:boot" of the process that runs it; empty while nobody has claimed it.
    worker = models.CharField(_("worker"), max_length=200, blank=True)
    # Times it was started: more than one for a retryable job re-queued after a crash.
    attempts = models.PositiveIntegerField(_("attempts"), default=0)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("job")
        verbose_name_plural = _("jobs")
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="liveprogress_owner_idx"),
            models.Index(fields=["status", "heartbeat_at"], name="liveprogress_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def percent(self) -> float | None:
        """Done share in percent, or None while the total is unknown."""
        if self.total is None:
            return None
        if self.total <= 0:
            return 100.0
        return round(min(max(self.current / self.total, 0.0), 1.0) * 100, 2)
