"""``manage.py pausejob JOB_ID``: pause any job at its next checkpoint."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ...actions import pause_job
from .resumejob import act_on_job


class Command(BaseCommand):
    help = (
        "Pause a job, whoever started it: at once if it waits, else at its next "
        "checkpoint (a track loop's next item, a checkpoint call); resumejob goes on "
        "from there."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("job_id", help="the job's id (a UUID)")
        parser.add_argument("--json", action="store_true", help="print the job's state as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        act_on_job(self, options["job_id"], pause_job, as_json=options["json"])
