"""RQ jobs of the engine tests (tests/test_engines.py)."""

from __future__ import annotations

from rq import Retry, get_current_job

from liveprogress import Progress
from liveprogress.engines.rq import MAX_ATTEMPTS_META, progress_job


def attempt() -> int:
    """The running RQ job's attempt: of the attempts its Retry allows, those left
    are still to come."""
    job = get_current_job()
    assert job is not None
    return job.meta[MAX_ATTEMPTS_META] - (job.retries_left or 0)


@progress_job("default", name="tests.flaky", retry=Retry(max=2, interval=1))
def flaky(progress: Progress, failures: int) -> dict[str, int]:
    """Fail its first ``failures`` attempts (RQ retries it a second later: the
    shortest interval RQ takes but 0), then succeed."""
    progress.start(total=2, message="trying")
    progress.advance()
    if attempt() <= failures:
        raise ValueError(f"attempt {attempt()} failed")
    progress.advance(message="done")
    return {"attempt": attempt()}
