"""Dramatiq actors of the engine tests (tests/test_engines.py)."""

from __future__ import annotations

from liveprogress import Progress
from liveprogress.engines.dramatiq import current_message, progress_actor
from proyecto.dramatiq import broker


@progress_actor(broker=broker, actor_name="tests.flaky", max_retries=2, min_backoff=200)
def flaky(progress: Progress, failures: int) -> dict[str, int]:
    """Fail its first ``failures`` attempts (the Retries middleware sends it again
    0.2 to 0.4 s later, then 0.4 to 0.8 s), then succeed."""
    message = current_message()
    attempt = (message.options.get("retries", 0) if message is not None else 0) + 1
    progress.start(total=2, message="trying")
    progress.advance()
    if attempt <= failures:
        raise ValueError(f"attempt {attempt} failed")
    progress.advance(message="done")
    return {"attempt": attempt}
