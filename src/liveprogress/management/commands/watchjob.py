"""``manage.py watchjob JOB_ID``: follow any job, wherever it runs, until it ends."""

from __future__ import annotations

import argparse
import math
import time
from datetime import timedelta
from typing import Any

from asgiref.sync import async_to_sync
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from ... import conf
from ...actions import log_lines, parse_job_id
from ...cli import TerminalBar, report
from ...exceptions import BadRequest
from ...models import Job
from ...recovery import sweep_stale
from ...state import JobState, is_terminal, job_state


def valid_job_id(text: str) -> str:
    """The argparse type of ``JOB_ID``: a UUID, in its canonical text."""
    try:
        return parse_job_id(text)
    except BadRequest:
        raise argparse.ArgumentTypeError(f"not a job id (a UUID): {text!r}") from None


def valid_interval(text: str) -> float:
    """The argparse type of ``--interval``: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def follow(job_id: str, interval: float, bar: TerminalBar) -> JobState:
    """Draw the job's stored state every ``interval`` seconds; return its final one.

    It reads the database, not the channel layer: a server's in-memory layer is
    out of reach of another process, the database never is.
    """
    shown_log = 0
    while True:
        job = _read(job_id)
        if job.is_active and _stale(job):
            # Its process died: end it as any process's sweep would (see recovery.py),
            # or this would wait for a job that can't end.
            async_to_sync(sweep_stale)()
            job = _read(job_id)
        state = job_state(job)
        if job.log_seq > shown_log:
            lines, _ = async_to_sync(log_lines)(job, shown_log)
            bar.log(lines)
            # What was read, not the row's log_seq: lines stored since the row was
            # read came along, and must not be shown again next time.
            shown_log = max([shown_log, *(line["seq"] for line in lines)])
        if is_terminal(state):
            return state
        bar.update(state)
        time.sleep(interval)


def _read(job_id: str) -> Job:
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        raise CommandError(f"No such job: {job_id}")
    return job


def _stale(job: Job) -> bool:
    cutoff = timezone.now() - timedelta(seconds=conf.get("STALE_AFTER"))
    return bool(job.worker) and job.heartbeat_at is not None and job.heartbeat_at < cutoff


class Command(BaseCommand):
    help = (
        "Follow a job, whoever started it and wherever it runs, until it ends: its "
        "progress drawn on stderr, its result printed on stdout."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("job_id", type=valid_job_id, metavar="JOB_ID", help="the job's id")
        parser.add_argument(
            "--interval",
            type=valid_interval,
            default=0.5,
            metavar="SECONDS",
            help="how often to read the job's state from the database (default: %(default)r)",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="print the final state as JSON instead of the result",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        bar = TerminalBar(self.stderr)
        state: JobState | None = None
        try:
            state = follow(options["job_id"], options["interval"], bar)
        except KeyboardInterrupt:
            raise CommandError(
                f"Stopped watching; job {options['job_id']} goes on", returncode=130
            ) from None
        finally:
            bar.close(state)
        report(state, self.stdout, as_json=options["json"])
