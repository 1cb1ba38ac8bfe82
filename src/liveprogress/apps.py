from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules
from django.utils.translation import gettext_lazy as _


class LiveProgressConfig(AppConfig):
    name = "liveprogress"
    verbose_name = _("Live progress")

    def ready(self) -> None:
        from . import conf

        # Job kinds register on import: the demo's, then every app's `jobs` module.
        if conf.get("DEMO_JOBS"):
            from . import demo  # noqa: F401
        autodiscover_modules("jobs")
