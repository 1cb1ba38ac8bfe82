"""The site's jobs. liveprogress imports every installed app's ``jobs`` module at start-up."""

import time
from typing import Annotated

from liveprogress import Progress, job
from pydantic import Field


@job("reports.count", title="Count rows")
def count_rows(
    progress: Progress,
    n: Annotated[int, Field(ge=1, le=10_000)] = 100,
    delay: Annotated[float, Field(ge=0, le=1)] = 0.0,
) -> dict[str, int]:
    """Count ``n`` rows, ``delay`` seconds each (so that a person can watch the bar)."""
    counted = 0
    for _row in progress.track(range(n)):
        time.sleep(delay)
        counted += 1
    progress.log(f"counted {counted} rows")
    return {"rows": counted}
