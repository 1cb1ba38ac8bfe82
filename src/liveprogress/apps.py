from __future__ import annotations

from importlib import import_module

from django.apps import AppConfig
from django.core import checks as django_checks
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import autodiscover_modules
from django.utils.translation import gettext_lazy as _


class LiveProgressConfig(AppConfig):
    name = "liveprogress"
    verbose_name = _("Live progress")
    # Fixed here, not left to the site's DEFAULT_AUTO_FIELD (whose default differs
    # between Django 5.2 and 6): the migrations say BigAutoField.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out

        from . import access, checks, conf, notices

        # A logout ends the session's sockets and streams in every server process.
        user_logged_out.connect(access.broadcast_logout, dispatch_uid="liveprogress.logout")

        for check in checks.CHECKS:
            django_checks.register(check, checks.TAG)
        # Emails and webhook calls when jobs start, are retried and end.
        notices.connect()
        # Job kinds register on import: every app's `jobs` module, and the modules
        # JOB_MODULES names.
        autodiscover_modules("jobs")
        try:
            job_modules = conf.get("JOB_MODULES")
        except ImproperlyConfigured:
            # Invalid settings: start anyway, so `manage.py check` reports them
            # (liveprogress.E008) instead of a traceback; any use raises the same.
            job_modules = []
        for module in job_modules:
            import_module(module)
