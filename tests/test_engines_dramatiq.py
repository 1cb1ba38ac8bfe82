"""Dramatiq's adapter in one process: Dramatiq's stub broker and a worker on threads,
liveprogress on its own loop (tests/test_engines.py runs the real worker on Redis).

A send makes the job the message carries; the worker runs it, skips it once
cancelled, and tells the Retries middleware's retries as attempts, read as that
middleware reads its options.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from dramatiq import Retry, Worker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries

from liveprogress import Progress, cancel_job, registry
from liveprogress.bridge import call
from liveprogress.engines.dramatiq import (
    LiveprogressMiddleware,
    ProgressActor,
    current_message,
    progress_actor,
)
from liveprogress.models import Job, Status
from liveprogress.registry import kinds
from liveprogress.runtime import stop_runtime


@pytest.fixture
def broker(transactional_db, fast, monkeypatch) -> Iterator[StubBroker]:
    # The actors' kinds stay in their test: check W009 reads every kind registered.
    monkeypatch.setattr(registry, "_registry", kinds())
    stub = StubBroker()
    stub.emit_after("process_boot")
    yield stub
    call(stop_runtime)
    stub.close()


@pytest.fixture
def actors(broker: StubBroker) -> dict[str, ProgressActor[Any, Any]]:
    @progress_actor(broker=broker, actor_name="tests.count", max_retries=0)
    def count(progress: Progress, steps: int) -> dict[str, int]:
        for _ in progress.track(range(steps)):
            pass
        return {"steps": steps}

    @progress_actor(broker=broker, actor_name="tests.flaky", max_retries=2, min_backoff=10)
    def flaky(progress: Progress, failures: int) -> int:
        message = current_message()
        attempt = (message.options.get("retries", 0) if message is not None else 0) + 1
        progress.start(total=1)
        if attempt <= failures:
            raise ValueError(f"attempt {attempt} failed")
        return attempt

    @progress_actor(broker=broker, actor_name="tests.strict", throws=(KeyError,))
    def strict(progress: Progress) -> None:
        raise KeyError("never retried")

    return {"count": count, "flaky": flaky, "strict": strict}


def run_queue(broker: StubBroker) -> None:
    """Process every message on the default queue (retries included), then stop."""
    worker = Worker(broker, worker_timeout=50)
    worker.start()
    try:
        broker.join("default", fail_fast=False, timeout=20_000)
        worker.join()
    finally:
        worker.stop()


def test_a_send_makes_the_job_its_message_carries(broker, actors):
    message = actors["count"].send(3)
    job = Job.objects.get(pk=message.message_id)
    assert (job.owner, job.status) == ("system:dramatiq", "queued")
    assert job.kind == "dramatiq:tests.count"
    assert job.params == {"args": [3], "kwargs": {}}
    other = actors["count"].send_with_options(args=(1,), liveprogress_owner="system:nightly")
    assert Job.objects.get(pk=other.message_id).owner == "system:nightly"
    run_queue(broker)
    job.refresh_from_db()
    assert (job.status, job.result, job.attempts) == (Status.SUCCEEDED, {"steps": 3}, 1)


def test_start_names_the_owner_and_a_cancelled_job_never_runs(broker, actors):
    handle = actors["count"].start("system:nightly", 2)
    assert Job.objects.get(pk=handle.id).owner == "system:nightly"
    cancel_job("system:nightly", handle.id)
    run_queue(broker)
    job = Job.objects.get(pk=handle.id)
    assert (job.status, job.attempts, job.started_at) == (Status.CANCELLED, 0, None)


def test_the_retries_middleware_s_retries_show_as_attempts(broker, actors):
    message = actors["flaky"].send(2)
    run_queue(broker)
    job = Job.objects.get(pk=message.message_id)
    assert (job.status, job.result) == (Status.SUCCEEDED, 3)
    assert (job.attempts, job.max_attempts) == (3, 3)
    assert job.error == ""


def test_an_error_past_the_retries_fails_the_job(broker, actors):
    too_many = actors["flaky"].send(5)
    thrown = actors["strict"].send()
    run_queue(broker)
    failed = Job.objects.get(pk=too_many.message_id)
    assert (failed.status, failed.attempts, failed.error) == ("failed", 3, "attempt 3 failed")
    # ``throws`` is never retried.
    assert Job.objects.get(pk=thrown.message_id).attempts == 1


def test_a_time_limit_fails_the_job_and_its_retries_show_as_attempts(broker):
    """Dramatiq raises its time limit in the thread as a BaseException; the job fails
    (it is no worker stopping), and the Retries middleware still retries it."""

    @progress_actor(broker=broker, actor_name="tests.slow", time_limit=100, max_retries=1)
    def slow(progress: Progress) -> None:
        for _ in range(100):
            time.sleep(0.05)

    message = slow.send_with_options(min_backoff=10)
    run_queue(broker)
    job = Job.objects.get(pk=message.message_id)
    assert (job.status, job.error) == (Status.FAILED, "Time limit exceeded")
    assert (job.attempts, job.max_attempts) == (2, 2)


def test_called_directly_the_body_reports_nowhere(broker, actors):
    assert actors["count"](2) == {"steps": 2}
    assert not Job.objects.exists()


def test_a_message_sent_around_the_actor_runs_without_a_job(broker, actors, caplog):
    broker.enqueue(actors["count"].message(2))
    run_queue(broker)
    assert not Job.objects.exists()
    assert "task run without its job" in caplog.text


def test_the_middleware_is_added_once(broker, actors):
    added = [each for each in broker.middleware if isinstance(each, LiveprogressMiddleware)]
    assert len(added) == 1


class FakeMessage:
    def __init__(self, **options: Any) -> None:
        self.options = options


@pytest.mark.parametrize(
    ("options", "error", "expected"),
    [
        # max_retries=2: the first two retries, after Dramatiq's backoff (10 ms x 2**retries).
        ({}, ValueError(), (0.01, 2, 3)),
        ({"retries": 1}, ValueError(), (0.02, 3, 3)),
        ({"retries": 2}, ValueError(), None),
        # The message's options come before the actor's.
        ({"retries": 2, "max_retries": 5}, ValueError(), (0.04, 4, 6)),
        ({"retries": 3, "max_retries": 5, "max_backoff": 50}, ValueError(), (0.05, 5, 6)),
        # A Retry's delay is the one the middleware waits.
        ({}, Retry(delay=5000), (5.0, 2, 3)),
    ],
)
def test_will_retry_reads_the_options_as_the_middleware_does(actors, options, error, expected):
    retrying = actors["flaky"]._will_retry(FakeMessage(**options), error)
    if expected is None:
        assert retrying is None
    else:
        assert (retrying.delay, retrying.attempt, retrying.max_attempts) == pytest.approx(expected)


def test_will_retry_without_a_limit_or_a_middleware(broker):
    @progress_actor(broker=broker, actor_name="tests.judged", retry_when=lambda n, e: n < 1)
    def judged(progress: Progress) -> None:
        """Retried while retry_when says so: the most attempts are unknown."""

    assert judged._will_retry(FakeMessage(), ValueError()).max_attempts is None
    assert judged._will_retry(FakeMessage(retries=1), ValueError()) is None
    bare = StubBroker(middleware=[])

    @progress_actor(broker=bare, actor_name="tests.bare")
    def once(progress: Progress) -> None:
        """No Retries middleware: Dramatiq never retries."""

    assert not any(isinstance(each, Retries) for each in bare.middleware)
    assert once._will_retry(FakeMessage(), ValueError()) is None
