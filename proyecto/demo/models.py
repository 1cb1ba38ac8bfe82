"""The demo's own table: the rows a CSV import has imported."""

from __future__ import annotations

from django.db import models


class ImportedRow(models.Model):
    """One good row of an uploaded CSV file, imported by the job ``job_id``.

    One row per job and line (a constraint): an import that goes on from its
    checkpoint after a crash may meet a row again, and never imports it twice.
    """

    job_id = models.UUIDField()
    #: The row's line in the file (1 is the header).
    line = models.PositiveIntegerField()
    values = models.JSONField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job_id", "line"], name="demo_row_once_per_job")
        ]

    def __str__(self) -> str:
        return f"{self.job_id} line {self.line}"
