"""An RQ job function (liveprogress.engines.rq) makes its job when enqueued, and the
RQ job is that job: same id, cancelled in RQ too while queued. Called directly it
reports nowhere; RQ can pickle it, and refuses what its worker can't import.

Without a worker (tests/test_engines.py runs one): a private Redis, django-rq's
queue on it.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import django_rq
import pytest
from rq import Retry
from rq.job import JobStatus

import liveprogress
from liveprogress import Progress, registry
from liveprogress.bridge import call
from liveprogress.engines.rq import MAX_ATTEMPTS_META, ProgressJob, progress_job
from liveprogress.registry import kinds
from liveprogress.runtime import get_runtime, stop_runtime
from tests.topology import RedisServer


def add(progress: Progress, a: int, b: int) -> int:
    progress.start(total=1)
    progress.advance(message="added")
    return a + b


def echo(progress: Progress, value: str) -> str:
    return value


@pytest.fixture
def jobs(monkeypatch) -> SimpleNamespace:
    """``add`` and ``echo`` decorated, for one test: an engine's kind left registered
    would make the demo site's checks warn (W009) in the tests that follow, so they
    register in a copy of the registry."""
    monkeypatch.setattr(registry, "_registry", dict(kinds()))
    decorated = {
        "add": progress_job("default", retry=Retry(max=2, interval=5))(add),
        "echo": progress_job(echo),
    }
    for name, job in decorated.items():
        # Where RQ's worker, and pickle, look for them.
        monkeypatch.setattr(sys.modules[__name__], name, job)
    return SimpleNamespace(**decorated)


@pytest.fixture
def queue(settings, tmp_path, transactional_db, fast) -> Iterator[dict]:
    """django-rq's default queue on a Redis of this test's; liveprogress's runtime
    stopped afterwards."""
    redis = RedisServer(tmp_path)
    redis.start()
    settings.RQ_QUEUES = {"default": {"URL": redis.url}}
    try:
        yield settings.RQ_QUEUES["default"]
    finally:
        call(stop_runtime)
        redis.stop()


def test_called_directly_the_function_reports_nowhere(jobs):
    assert jobs.add(2, 3) == 5
    assert jobs.echo("x") == "x"


def test_rq_pickles_it_by_its_name(jobs):
    """``queue.enqueue(add, ...)`` pickles the callable: its name is enough (the
    worker's run then has no job, and reports nowhere)."""
    assert pickle.loads(pickle.dumps(jobs.add)) is jobs.add  # noqa: S301 (its own bytes)


def test_what_rq_s_worker_can_t_import_or_run_is_refused():
    async def later(progress: Progress) -> None:
        pass

    def inner(progress: Progress) -> None:
        pass

    with pytest.raises(TypeError, match="is async"):
        ProgressJob(later)
    with pytest.raises(TypeError, match="top level"):
        progress_job("default")(inner)


@pytest.mark.integration
def test_the_rq_job_is_the_job(queue, jobs):
    handle = jobs.add.start("system:nightly", 2, b=3)
    assert handle.state["status"] == "queued"
    assert handle.state["kind"] == "rq:tests.test_rq_jobs.add"
    assert handle.state["max_attempts"] == 3
    rq_job = django_rq.get_queue().fetch_job(handle.id)
    assert rq_job is not None
    assert rq_job.func_name == "tests.test_rq_jobs.add"
    assert (rq_job.args, rq_job.kwargs) == ((2,), {"b": 3})
    assert (rq_job.retries_left, rq_job.retry_intervals) == (2, [5])
    assert rq_job.meta[MAX_ATTEMPTS_META] == 3
    # The usual enqueue: owned by the adapter's default owner, no retries.
    other = jobs.echo.delay("hi")
    assert liveprogress.get_job("system:rq", other.id).state["max_attempts"] is None
    assert django_rq.get_queue().fetch_job(other.id).retries_left is None


@pytest.mark.integration
def test_a_job_cancelled_while_queued_leaves_rq_s_queue(queue, jobs):
    rq_queue = django_rq.get_queue()
    queued = jobs.add.start("system:nightly", 1, 1)
    # One waiting for its retry, as RQ's worker leaves it after a failed attempt.
    waiting = jobs.add.start("system:nightly", 2, 2)
    rq_queue.remove(waiting.id)
    rq_queue.schedule_job(rq_queue.fetch_job(waiting.id), datetime.now(UTC) + timedelta(hours=1))
    assert rq_queue.scheduled_job_registry.get_job_ids() == [waiting.id]
    for handle in (queued, waiting):
        assert liveprogress.cancel_job("system:nightly", handle.id).status == "cancelled"
        rq_job = rq_queue.fetch_job(handle.id)
        assert rq_job is not None and rq_job.get_status() == JobStatus.CANCELED
    assert rq_queue.job_ids == []
    assert rq_queue.scheduled_job_registry.get_job_ids() == []


@pytest.mark.integration
def test_a_queue_that_is_not_async_runs_the_job_as_it_is_enqueued(queue, jobs):
    """django-rq's ``"ASYNC": False`` (tests): the job runs within ``start``, on the
    enqueuer's runtime, which goes on."""
    queue["ASYNC"] = False
    before = call(get_runtime)
    handle = jobs.add.start("system:nightly", 2, 3)
    assert call(get_runtime) is before
    job = liveprogress.get_job("system:nightly", handle.id)
    assert (job.status, job.result, job.state["message"]) == ("succeeded", 5, "added")
