"""Storing a job's log lines: the newest ``LOG_LIMIT`` are kept per job."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.db import transaction

from .models import Job, JobLog
from .progress import LogLine


def store_lines(
    job_id: Any, lines: list[LogLine], dropped_through: int, limit: int
) -> tuple[int, int]:
    """Store log lines, keep the newest ``limit``; returns (log_seq, log_dropped)."""
    with transaction.atomic():
        JobLog.objects.bulk_create(
            [
                JobLog(
                    job_id=job_id,
                    seq=line.seq,
                    level=line.level,
                    text=line.text,
                    created_at=datetime.fromtimestamp(line.at, tz=UTC),
                )
                for line in lines
            ]
        )
        log_seq = lines[-1].seq
        dropped = max(log_seq - limit, dropped_through)
        row = Job.objects.filter(pk=job_id).values_list("log_dropped", flat=True).first() or 0
        dropped = max(dropped, row)
        if dropped > row:
            JobLog.objects.filter(job_id=job_id, seq__lte=dropped).delete()
        Job.objects.filter(pk=job_id).update(log_seq=log_seq, log_dropped=dropped)
    return log_seq, dropped
