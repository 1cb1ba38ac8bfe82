"""The timed process as a Dramatiq actor (liveprogress.engines.dramatiq)."""

from __future__ import annotations

from liveprogress import Progress
from liveprogress.engines.dramatiq import progress_actor
from proyecto.dramatiq import broker

from . import count_steps


@progress_actor(broker=broker, actor_name="demo.timer")
def timer(progress: Progress, steps: int = 10, interval: float = 1.0) -> dict[str, int]:
    return count_steps(progress, steps, interval)
