"""Writing running jobs' progress behind its publishing, many jobs per write.

A running job's progress is published first; the process's :class:`WriteBehind`
then writes every job with unwritten progress in one bulk ``UPDATE`` per
``PERSIST_INTERVAL`` (one transaction, one executor call), instead of one
``UPDATE`` per job per publish.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from channels.db import aclose_old_connections
from django.db import connection, transaction
from django.db.models import Field

from . import conf, metrics
from .models import ACTIVE_STATUSES, Job

logger = logging.getLogger(__name__)

#: What a running state written behind may change: never its status (written first).
BEHIND_FIELDS = [
    "current",
    "total",
    "fraction",
    "stages",
    "rate",
    "files",
    "message",
    "eta_s",
    "eta_source",
    "seq",
    "updated_at",
    # Where the job is: a next attempt (a retry, a resume) goes on from it.
    "checkpoint",
]


@dataclass(frozen=True)
class UnwrittenRow:
    """A running job's progress to write behind, as it was published."""

    pk: Any
    values: dict[str, Any]
    cancel_requested: bool


class Unwritten(Protocol):
    """A running job whose progress the write-behind writes (an execution)."""

    def unwritten_row(self) -> UnwrittenRow | None:
        """The state to write now, or None if there is nothing to write."""

    def written(self, seq: int, *, ended: bool) -> None:
        """State ``seq`` is written; ``ended``: the row had ended (left as it was)."""


class WriteBehind:
    """Writes the progress of this process's running jobs behind their publishing:
    every job with unwritten progress in one bulk write per ``PERSIST_INTERVAL``."""

    def __init__(self) -> None:
        # Jobs with progress to write, in the order they asked (a dict as a set).
        self._dirty: dict[Unwritten, None] = {}
        self._task: asyncio.Task[None] | None = None

    def mark(self, job: Unwritten) -> None:
        """Write ``job``'s progress within ``PERSIST_INTERVAL``."""
        self._dirty[job] = None
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), context=contextvars.Context()
            )

    async def _run(self) -> None:
        interval = conf.get("PERSIST_INTERVAL")
        while self._dirty:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception:
                # The database is away: the jobs stay dirty; each one still writes
                # itself before it would go past the window.
                logger.warning("writing progress failed jobs=%d", len(self._dirty), exc_info=True)
                await aclose_old_connections()

    async def flush(self) -> None:
        """Write every marked job's progress now, in one executor call."""
        dirty, self._dirty = self._dirty, {}
        # Rows are taken here, on the loop, so each is one published state, whole.
        batch = [(job, job.unwritten_row()) for job in dirty]
        rows = [(job, row) for job, row in batch if row is not None]
        if not rows:
            return
        metrics.observe_batch(len(rows))
        try:
            ended = await sync_to_async(write_rows, thread_sensitive=True)([row for _, row in rows])
        except BaseException:
            for job, _ in rows:
                self._dirty.setdefault(job)
            raise
        for job, row in rows:
            job.written(row.values["seq"], ended=row.pk in ended)

    def close(self) -> None:
        """Stop writing (the process's jobs have stopped)."""
        if self._task is not None:
            self._task.cancel()


def write_rows(rows: list[UnwrittenRow]) -> set[Any]:
    """Write running jobs' progress in one transaction; returns the ids of those
    that ended meanwhile (left as they are).

    One prepared ``UPDATE`` per job, sent as one ``executemany``: each keeps the
    conditions of a job's own write (only while active; ``cancel_requested`` only
    ever set). ``QuerySet.bulk_update`` would be one statement, but its
    ``CASE WHEN`` per field and row took 1.5 s for 1,000 jobs on SQLite.
    """
    meta, quote = Job._meta, connection.ops.quote_name
    fields = [_concrete(name) for name in BEHIND_FIELDS]
    pk_field = _concrete("id")
    table, pk, status, cancel = (
        quote(name)
        for name in (
            meta.db_table,
            _column(pk_field),
            _column(_concrete("status")),
            _column(_concrete("cancel_requested")),
        )
    )
    assignments = ", ".join(f"{quote(_column(field))} = %s" for field in fields)
    active = ", ".join(["%s"] * len(ACTIVE_STATUSES))
    # Only the model's own names go into the text, quoted; every value is a parameter.
    sql = f"UPDATE {table} SET {assignments}, {cancel} = ({cancel} OR %s) WHERE "  # noqa: S608
    sql += f"{pk} = %s AND {status} IN ({active})"
    params = [
        [
            *(field.get_db_prep_value(row.values[field.name], connection) for field in fields),
            row.cancel_requested,
            pk_field.get_db_prep_value(row.pk, connection),
            *ACTIVE_STATUSES,
        ]
        for row in rows
    ]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)
            if cursor.rowcount == len(rows):
                return set()
        ids = [row.pk for row in rows]
        return set(
            Job.objects.filter(pk__in=ids)
            .exclude(status__in=ACTIVE_STATUSES)
            .values_list("pk", flat=True)
        )


def _concrete(name: str) -> Field[Any, Any]:
    """The job's column-backed field ``name``."""
    field = Job._meta.get_field(name)
    if not isinstance(field, Field) or not field.column:
        raise TypeError(f"Job.{name} is not a column")
    return field


def _column(field: Field[Any, Any]) -> str:
    return field.column or field.name
