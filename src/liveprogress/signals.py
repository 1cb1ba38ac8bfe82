"""Django signals a job sends as it starts, is retried and ends.

Each is sent once per transition, by the process whose write made it (the one
whose conditional write took), with ``sender=Job`` and the job as it was written:

- :data:`job_started`: a run of it started (``job``; ``job.attempts`` says which).
- :data:`job_retried`: it went back to `queued` for another attempt (``job``,
  ``attempt``: the number of the next one, ``delay``: seconds until it is due or
  None, ``error``: what failed).
- :data:`job_finished`: it ended (``job``, ``status``: how), for any reason: its
  function returned or raised, it was cancelled (running or queued), its process
  died, its parent ended, it could not be queued.

Receivers may be sync or async (``Signal.asend`` runs both). A receiver that
raises is logged and never stops the job's transition nor the other receivers.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

from .models import Job

logger = logging.getLogger(__name__)

job_started = Signal()
job_retried = Signal()
job_finished = Signal()


async def _send(signal: Signal, job: Job, **details: Any) -> None:
    if not signal.has_listeners(Job):
        return
    for receiver, answer in await signal.asend_robust(sender=Job, job=job, **details):
        if isinstance(answer, Exception):
            logger.error(
                "signal receiver %r failed job=%s",
                receiver,
                job.pk,
                exc_info=(type(answer), answer, answer.__traceback__),
            )


async def send_started(job: Job) -> None:
    await _send(job_started, job)


async def send_retried(job: Job, *, attempt: int, delay: float | None, error: str) -> None:
    await _send(job_retried, job, attempt=attempt, delay=delay, error=error)


async def send_finished(job: Job) -> None:
    await _send(job_finished, job, status=job.status)
