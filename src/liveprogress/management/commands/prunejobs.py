"""``manage.py prunejobs``: remove results and files past ``RESULT_TTL``."""

from __future__ import annotations

import argparse
import math
from datetime import timedelta
from typing import Any

from asgiref.sync import async_to_sync
from django.core.management.base import BaseCommand, CommandParser
from django.db.models import F, Q
from django.utils import timezone

from ... import conf, files
from ...models import TERMINAL_STATUSES, Job
from ...publish import publish


def valid_age(text: str) -> float:
    """The argparse type of ``--older-than``: a finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 <= value < math.inf):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


class Command(BaseCommand):
    help = (
        "Delete the results and files of jobs that ended more than RESULT_TTL seconds "
        "ago (the jobs stay, marked expired); with --delete-jobs, the jobs too."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=valid_age,
            default=None,
            metavar="SECONDS",
            help="expire what ended more than this long ago (default: RESULT_TTL)",
        )
        parser.add_argument(
            "--delete-jobs",
            action="store_true",
            help="delete the expired jobs themselves, with their log lines",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="say what would go, change nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        age = options["older_than"]
        if age is None:
            age = conf.get("RESULT_TTL")
        cutoff = timezone.now() - timedelta(seconds=age)
        ended = Job.objects.filter(status__in=TERMINAL_STATUSES, finished_at__lt=cutoff)
        holding = ended.filter(expired=False).exclude(Q(result__isnull=True) & Q(files=[]))
        jobs = list(holding.only("id", "files", "expired"))
        stored = sum(len(job.files) for job in jobs)
        if options["dry_run"]:
            doomed = ended.count() if options["delete_jobs"] else 0
            self.stdout.write(
                f"would expire {len(jobs)} jobs ({stored} files)"
                + (f" and delete {doomed} jobs" if options["delete_jobs"] else "")
            )
            return
        removed = 0
        for job in jobs:
            removed += files.delete_all(job)
            Job.objects.filter(pk=job.pk).update(
                result=None,
                files=[],
                expired=True,
                seq=F("seq") + 1,
                updated_at=timezone.now(),
            )
            # Open pages drop the download links (through a shared layer, Redis;
            # with the in-memory one, they see it at their next reload).
            async_to_sync(publish)(Job.objects.get(pk=job.pk))
        message = f"expired {len(jobs)} jobs, deleted {removed} files"
        if options["delete_jobs"]:
            deleted, _ = ended.delete()
            message += f"; deleted {deleted} rows (jobs and their log lines)"
        self.stdout.write(message)
