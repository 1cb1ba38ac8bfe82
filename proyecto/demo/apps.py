from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DemoConfig(AppConfig):
    # Its job kinds register from its `jobs` module, which liveprogress imports
    # at start-up like every installed app's.
    name = "proyecto.demo"
    label = "demo"
    verbose_name = _("liveprogress demo")
