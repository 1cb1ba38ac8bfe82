"""The signals a job sends: started, retried, finished; once each, in order."""

from __future__ import annotations

import asyncio

import pytest

from liveprogress import actions
from liveprogress.models import Job
from liveprogress.signals import job_finished, job_retried, job_started

OWNER = "session:signals"
pytestmark = pytest.mark.asyncio


@pytest.fixture
def heard():
    seen: list[tuple[str, str, dict]] = []

    def started(sender, job, **details):
        seen.append(("started", str(job.pk), {"status": job.status, "attempt": job.attempts}))

    async def finished(sender, job, status, **details):
        # An async receiver: awaited on the loop, with the job as written.
        seen.append(("finished", str(job.pk), {"status": status}))

    def retried(sender, job, **details):
        seen.append(("retried", str(job.pk), details))

    def broken(sender, job, **details):
        raise RuntimeError("a receiver that fails")

    pairs = [(job_started, started), (job_finished, finished), (job_retried, retried)]
    for signal, receiver in pairs:
        signal.connect(receiver, sender=Job)
        signal.connect(broken, sender=Job)
    yield seen
    for signal, receiver in pairs:
        signal.disconnect(receiver, sender=Job)
        signal.disconnect(broken, sender=Job)


async def test_started_then_finished_once_each(runtime, heard):
    job = await actions.start_job(OWNER, "demo.timer", {"steps": 3, "interval": 0.02})
    await asyncio.wait_for(runtime.runner.wait(str(job.id)), 10)
    ours = [(name, details) for name, job_id, details in heard if job_id == str(job.pk)]
    assert ours == [
        ("started", {"status": "running", "attempt": 1}),
        ("finished", {"status": "succeeded"}),
    ]
    # The failing receiver changed nothing: the job ended as its function did.
    assert (await Job.objects.aget(pk=job.pk)).status == "succeeded"


async def test_a_failure_and_a_cancel_are_finishes_too(runtime, heard):
    failed = await actions.start_job(OWNER, "tests.fail", {})
    await asyncio.wait_for(runtime.runner.wait(str(failed.id)), 10)
    sleeper = await actions.start_job(OWNER, "tests.ignores_cancel_checks", {"steps": 500})
    await actions.cancel_job(OWNER, str(sleeper.id))
    await asyncio.wait_for(runtime.runner.wait(str(sleeper.id)), 10)
    finishes = {job_id: details["status"] for name, job_id, details in heard if name == "finished"}
    assert finishes == {str(failed.pk): "failed", str(sleeper.pk): "cancelled"}
