"""``manage.py prunejobs``: results and files expire ``RESULT_TTL`` after a job ended.

The jobs that hold files ran for real (``tests.rich`` attaches ``out.csv`` and
logs four lines), then their end is moved back in time; their files live in the
test's temporary MEDIA_ROOT and are downloaded through the API by their owner.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import AsyncClient
from django.utils import timezone

from liveprogress import actions, files
from liveprogress.models import Job, JobLog, Status
from liveprogress.owner import session_owner

DAY = 24 * 3600
#: Seconds a job may take to end.
JOB_TIMEOUT = 10


async def prune(*args: str) -> str:
    """Run the command here; what it printed."""
    out = StringIO()
    await sync_to_async(call_command)("prunejobs", *args, stdout=out)
    return out.getvalue()


async def visitor() -> tuple[AsyncClient, str]:
    client = AsyncClient()
    assert (await client.get("/jobs/")).status_code == 200
    return client, session_owner(client.cookies["sessionid"].value)


async def ended_rich_job(owner: str, ended_ago: float) -> Job:
    """A ``tests.rich`` job run to its end, its end moved ``ended_ago`` seconds back."""
    started = await actions.start_job(owner, "tests.rich", {"rows": 4, "delay": 0, "bad_every": 2})
    async with asyncio.timeout(JOB_TIMEOUT):
        while (job := await Job.objects.aget(pk=started.pk)).is_active:
            await asyncio.sleep(0.02)
    assert job.status == Status.SUCCEEDED, job.error
    assert [entry["name"] for entry in job.files] == ["out.csv"]
    assert await JobLog.objects.filter(job=job).acount() == 4
    await Job.objects.filter(pk=job.pk).aupdate(
        finished_at=timezone.now() - timedelta(seconds=ended_ago)
    )
    return await Job.objects.aget(pk=job.pk)


async def running_job_with_a_file(owner: str) -> Job:
    """A job that has run for 30 days and attached a file (claimed by no process, so no
    sweep ends it)."""
    long_ago = timezone.now() - timedelta(days=30)
    job = await Job.objects.acreate(
        kind="tests.rich",
        owner=owner,
        status=Status.RUNNING,
        created_at=long_ago,
        started_at=long_ago,
        updated_at=long_ago,
        seq=3,
        log_seq=1,
    )
    await JobLog.objects.acreate(job=job, seq=1, level="info", text="still going")
    entry = await sync_to_async(files.store)(job, "partial.csv", b"a\n1\n", "text/csv")
    await Job.objects.filter(pk=job.pk).aupdate(files=[entry])
    return await Job.objects.aget(pk=job.pk)


def ended_job_without_results(owner: str, ended_ago: float) -> Job:
    ended = timezone.now() - timedelta(seconds=ended_ago)
    return Job(
        kind="tests.fail",
        owner=owner,
        status=Status.FAILED,
        error="boom",
        seq=4,
        created_at=ended,
        started_at=ended,
        finished_at=ended,
        updated_at=ended,
    )


def stored(job: Job, name: str = "out.csv") -> bool:
    return files.storage().exists(files.path(job.pk, name))


async def download(client: AsyncClient, job: Job, name: str = "out.csv") -> tuple[int, Any]:
    response = await client.get(f"/api/jobs/{job.pk}/files/{name}")
    if response.status_code != 200:
        return response.status_code, response.json()
    return 200, b"".join([chunk async for chunk in response.streaming_content])


async def snapshot() -> dict[str, tuple[Any, ...]]:
    """Every job's row as it matters here, and its log lines' count."""
    return {
        str(job.pk): (job.status, job.result, job.files, job.expired, job.seq, job.updated_at)
        + (await JobLog.objects.filter(job=job).acount(),)
        async for job in Job.objects.all()
    }


async def test_what_ended_past_the_ttl_loses_its_result_and_files_nothing_else(runtime):
    client, owner = await visitor()
    old = await ended_rich_job(owner, ended_ago=8 * DAY)  # RESULT_TTL is 7 days
    young = await ended_rich_job(owner, ended_ago=6 * DAY)
    running = await running_job_with_a_file(owner)
    failed = ended_job_without_results(owner, ended_ago=30 * DAY)
    await failed.asave()
    assert await download(client, old) == (200, b"a,b\n1,2\n")

    assert await prune() == "expired 1 jobs, deleted 1 files\n"

    expired = await Job.objects.aget(pk=old.pk)
    assert (expired.result, expired.files, expired.expired) == (None, [], True)
    assert expired.seq == old.seq + 1
    assert expired.updated_at > old.updated_at
    # What it was stays: how it ended, its times, its log.
    assert (expired.status, expired.finished_at) == (Status.SUCCEEDED, old.finished_at)
    assert await JobLog.objects.filter(job=old).acount() == 4
    assert not stored(old)
    status, error = await download(client, old)
    assert status == 404 and error["field"] == "name"
    state = (await client.get(f"/api/jobs/{old.pk}/")).json()
    assert (state["expired"], state["result"], state["files"]) == (True, None, [])
    assert state["seq"] == old.seq + 1

    # Within the TTL, running, or holding nothing: untouched.
    for job in (young, running, failed):
        now = await Job.objects.aget(pk=job.pk)
        assert (now.result, now.files, now.expired, now.seq) == (
            job.result,
            job.files,
            False,
            job.seq,
        ), job.kind
    assert stored(young) and stored(running, "partial.csv")
    assert await download(client, young) == (200, b"a,b\n1,2\n")
    assert await download(client, running, "partial.csv") == (200, b"a\n1\n")

    # Once is enough: a second run finds nothing to do, and bumps no seq again.
    before = await snapshot()
    assert await prune() == "expired 0 jobs, deleted 0 files\n"
    assert await snapshot() == before


async def test_the_ttl_is_the_result_ttl_setting(runtime, settings):
    settings.LIVEPROGRESS = {**settings.LIVEPROGRESS, "RESULT_TTL": 60}
    client, owner = await visitor()
    old = await ended_rich_job(owner, ended_ago=120)
    young = await ended_rich_job(owner, ended_ago=30)

    assert await prune() == "expired 1 jobs, deleted 1 files\n"

    assert (await Job.objects.aget(pk=old.pk)).expired and not stored(old)
    assert not (await Job.objects.aget(pk=young.pk)).expired and stored(young)


async def test_older_than_overrides_the_ttl(runtime):
    _, owner = await visitor()
    day_old = await ended_rich_job(owner, ended_ago=DAY)
    hour_old = await ended_rich_job(owner, ended_ago=3600)

    assert await prune("--older-than", "7200") == "expired 1 jobs, deleted 1 files\n"
    assert (await Job.objects.aget(pk=day_old.pk)).expired and not stored(day_old)
    assert not (await Job.objects.aget(pk=hour_old.pk)).expired and stored(hour_old)

    assert await prune("--older-than", "60") == "expired 1 jobs, deleted 1 files\n"
    assert (await Job.objects.aget(pk=hour_old.pk)).expired and not stored(hour_old)


async def test_dry_run_says_what_would_go_and_changes_nothing(runtime):
    client, owner = await visitor()
    old = await ended_rich_job(owner, ended_ago=8 * DAY)
    await ended_job_without_results(owner, ended_ago=8 * DAY).asave()
    await ended_rich_job(owner, ended_ago=DAY)
    before = await snapshot()

    assert await prune("--dry-run") == "would expire 1 jobs (1 files)\n"
    assert await prune("--dry-run", "--delete-jobs") == (
        "would expire 1 jobs (1 files) and delete 2 jobs\n"
    )
    assert await prune("--dry-run", "--older-than", "60") == "would expire 2 jobs (2 files)\n"

    assert await snapshot() == before
    assert stored(old)
    assert await download(client, old) == (200, b"a,b\n1,2\n")


async def test_delete_jobs_removes_the_ended_jobs_with_their_log_lines(runtime):
    client, owner = await visitor()
    old = await ended_rich_job(owner, ended_ago=8 * DAY)
    failed = ended_job_without_results(owner, ended_ago=8 * DAY)
    await failed.asave()
    await JobLog.objects.acreate(job=failed, seq=1, level="error", text="boom")
    young = await ended_rich_job(owner, ended_ago=DAY)
    running = await running_job_with_a_file(owner)

    assert await prune("--delete-jobs") == (
        "expired 1 jobs, deleted 1 files; deleted 7 rows (jobs and their log lines)\n"
    )

    remaining = {str(pk) async for pk in Job.objects.values_list("pk", flat=True)}
    assert remaining == {str(young.pk), str(running.pk)}
    assert not await JobLog.objects.filter(job_id__in=[old.pk, failed.pk]).aexists()
    assert await JobLog.objects.filter(job=young).acount() == 4
    assert await JobLog.objects.filter(job=running).acount() == 1
    assert not stored(old)
    assert stored(young) and stored(running, "partial.csv")
    for job in (old, failed):
        response = await client.get(f"/api/jobs/{job.pk}/")
        assert response.status_code == 404
    assert await download(client, young) == (200, b"a,b\n1,2\n")


@pytest.mark.parametrize("value", ["-1", "abc", "nan", "inf", ""])
async def test_older_than_must_be_a_number_of_seconds(runtime, value):
    await ended_job_without_results("session:x", ended_ago=DAY).asave()
    detail = f"--older-than: must be a number of seconds >= 0, got {value!r}"
    with pytest.raises(CommandError, match=re.escape(detail)):
        await prune("--older-than", value, "--delete-jobs")
    assert await Job.objects.acount() == 1
