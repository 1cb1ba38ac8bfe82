from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DemoConfig(AppConfig):
    # Its job kinds register from its `jobs` module, which liveprogress imports
    # at start-up like every installed app's.
    name = "proyecto.demo"
    label = "demo"
    # As its migrations were made (Django 6's default; 5.2's is AutoField).
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = _("liveprogress demo")

    def ready(self) -> None:
        from liveprogress.models import Job
        from liveprogress.signals import job_finished

        job_finished.connect(forget_import, sender=Job, dispatch_uid="demo.forget_import")


def forget_import(sender: Any, job: Any, **details: Any) -> None:
    """An import that ended (however: done, failed, cancelled, interrupted) needs its
    upload and its imported rows no more; one paused or waiting for a retry still
    does, and is not ended."""
    if job.kind != "demo.csv_import":
        return
    from liveprogress.files import storage

    from .models import ImportedRow

    upload = job.params.get("upload", "")
    store = storage()
    if upload and store.exists(upload):
        store.delete(upload)
    ImportedRow.objects.filter(job_id=job.pk).delete()
