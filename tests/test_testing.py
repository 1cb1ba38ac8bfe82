"""liveprogress.testing runs a job to its end inside any kind of Django test."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model
from django.test import TestCase, TransactionTestCase

from liveprogress.exceptions import BadRequest
from liveprogress.files import path, storage
from liveprogress.models import Job
from liveprogress.testing import TEST_OWNER, JobRun, arun_job, run_job
from proyecto.demo.jobs import timer
from tests import jobs


def assert_ordered(run: JobRun) -> None:
    """States in seq order, the first queued, the last the final one as stored."""
    seqs = [state["seq"] for state in run.states]
    assert seqs == sorted(set(seqs)), seqs
    assert run.states[0]["status"] == "queued"
    assert run.states[-1] == run.state
    assert run.state["seq"] == run.job.seq


class InATestCase(TestCase):
    def test_a_sync_job_sees_the_test_s_rows_and_ends_at_once(self):
        for name in ("ana", "bea"):
            get_user_model().objects.create_user(f"t-{name}")
        began = time.monotonic()
        run = run_job(jobs.counts_users, prefix="t-")
        # No lock wait (a job on another connection would wait ~60 s on SQLite).
        assert time.monotonic() - began < 5
        assert run.status == "succeeded"
        assert run.result == {"users": ["t-ana", "t-bea"]}
        assert [line["text"] for line in run.logs] == ["user t-ana", "user t-bea"]
        assert [line["seq"] for line in run.logs] == [1, 2]
        assert run.state["percent"] == 100
        assert run.job.owner == TEST_OWNER
        assert_ordered(run)

    def test_an_async_job_by_its_name(self):
        run = run_job("demo.timer", steps=3, interval=0)
        assert (run.status, run.result) == ("succeeded", {"steps": 3})
        assert run.state["message"] == "¡Proceso completado!"
        assert_ordered(run)

    def test_the_language_and_the_owner_are_the_test_s_to_choose(self):
        user = get_user_model().objects.create_user("owner")
        run = run_job(timer, owner=user, language="en", steps=1, interval=0)
        assert run.job.owner == f"user:{user.pk}"
        assert run.state["message"] == "Process completed!"

    def test_a_failing_job_says_why(self):
        run = run_job("tests.fail")
        assert run.status == "failed"
        assert run.error == "boom"
        assert_ordered(run)

    def test_params_are_validated_as_for_any_start(self):
        with pytest.raises(BadRequest, match="steps"):
            run_job(timer, steps=0)
        assert not Job.objects.exists()

    def test_children_run_beside_their_parent(self):
        run = run_job("demo.batch", parts=2, steps=2, interval=0)
        assert run.result == {"parts": 2, "succeeded": 2}
        assert [child.status for child in run.children] == ["succeeded", "succeeded"]
        assert {child.job.parent_id for child in run.children} == {run.job.pk}

    def test_files_are_stored(self):
        run = run_job("tests.rich", rows=3, delay=0)
        assert run.state["files"][0]["name"] == "out.csv"
        with storage().open(path(run.job.pk, "out.csv")) as handle:
            assert handle.read() == b"a,b\n1,2\n"
        assert [stage["status"] for stage in run.state["stages"]] == ["done"] * 3

    async def test_an_async_test_method(self):
        run = await arun_job(timer, steps=2, interval=0)
        assert run.status == "succeeded"
        assert await Job.objects.filter(pk=run.job.pk, status="succeeded").aexists()


class InATransactionTestCase(TransactionTestCase):
    def test_a_job_runs_to_its_end(self):
        run = run_job("tests.sync_steps", steps=4, delay=0)
        assert (run.status, run.result) == ("succeeded", {"done": 4})
        assert Job.objects.get(pk=run.job.pk).status == "succeeded"
        assert_ordered(run)


def test_with_pytest_django_s_db_fixture(db):
    get_user_model().objects.create_user("p-one")
    run = run_job(jobs.counts_users, prefix="p-")
    assert run.result == {"users": ["p-one"]}


async def test_an_async_pytest_test(transactional_db):
    run = await arun_job("tests.logger", lines=3, interval=0)
    assert [line["text"] for line in run.logs] == ["line 1", "line 2", "line 3"]
    assert run.status == "succeeded"


async def test_run_job_refuses_an_async_test(transactional_db):
    with pytest.raises(RuntimeError, match="await arun_job"):
        run_job(timer, steps=1, interval=0)


class AsyncJobsAttachingFiles(TestCase):
    def test_an_async_job_s_aattach_counts_the_quota_on_the_test_s_connection(self):
        run = run_job("tests.async_attach")
        assert run.status == "succeeded", run.error
        assert [entry["name"] for entry in run.state["files"]] == ["right.txt"]

    def test_an_async_job_calling_the_sync_attach_is_told_to_await_aattach(self):
        run = run_job("tests.async_attach", sync_call=True)
        assert run.status == "failed"
        assert "await aattach" in run.error
