"""The built-in demo job: the original example's fictitious timed process."""

from __future__ import annotations

import asyncio
from typing import Annotated

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from pydantic import Field

from .progress import Progress
from .registry import job


@job("demo.timer", title=gettext_lazy("Timed process"))
async def timer(
    progress: Progress,
    steps: Annotated[int, Field(ge=1, le=10_000)] = 10,
    interval: Annotated[float, Field(ge=0, le=60)] = 1.0,
) -> dict[str, int]:
    """Count ``steps`` steps of ``interval`` seconds, saying the percent at each."""
    progress.start(total=steps, message=_("Progress: %(percent)d%%") % {"percent": 0})
    for step in range(1, steps + 1):
        await asyncio.sleep(interval)
        progress.advance(message=_("Progress: %(percent)d%%") % {"percent": step * 100 // steps})
    progress.message(_("Process completed!"))
    return {"steps": steps}
