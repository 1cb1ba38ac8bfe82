"""``manage.py resumejob JOB_ID``: resume a paused job from its checkpoint."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import bridge
from ...actions import parse_job_id, resume_job
from ...exceptions import RequestError
from ...models import Job
from ...state import job_state


def act_on_job(
    command: BaseCommand,
    job_text: str,
    act: Callable[[str, str], Awaitable[Job]],
    *,
    as_json: bool,
) -> None:
    """Do ``act`` to any job as its owner (the command's user runs the site), and print
    the state it leaves: its status, or the whole state as JSON."""
    try:
        job_id = parse_job_id(job_text, "job_id")
    except RequestError as refusal:
        raise CommandError(refusal.detail) from None

    async def acted() -> Job:
        job = await Job.objects.filter(pk=job_id).afirst()
        if job is None:
            raise CommandError(f"No job {job_id}")
        return await act(job.owner, job_id)

    try:
        job = bridge.call(acted)
    except RequestError as refusal:
        raise CommandError(refusal.detail) from None
    state = job_state(job)
    if as_json:
        command.stdout.write(json.dumps(state))
        return
    asked = " (pause asked: it pauses at its next checkpoint)" if job.pause_requested else ""
    command.stdout.write(f"{job_id} {state['status']}{asked}")


class Command(BaseCommand):
    help = (
        "Resume a paused job, whoever started it: queued again, a server process (or "
        "a worker) goes on from its checkpoint."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("job_id", help="the job's id (a UUID)")
        parser.add_argument("--json", action="store_true", help="print the job's state as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        act_on_job(self, options["job_id"], resume_job, as_json=options["json"])
