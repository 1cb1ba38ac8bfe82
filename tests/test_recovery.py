"""Jobs of dead processes end `interrupted`, past any seq their watchers saw."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from datetime import timedelta

import pytest
from django.utils import timezone

from liveprogress.models import UNPERSISTED_SEQ_WINDOW, Job
from liveprogress.recovery import recover_dead_processes, sweep_stale
from liveprogress.runtime import get_runtime, stop_runtime
from tests.jobs import collect

pytestmark = pytest.mark.asyncio


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


async def make_job(worker: str, *, status="running", heartbeat_age=0.0, seq=7) -> Job:
    return await Job.objects.acreate(
        kind="demo.timer",
        owner="session:x",
        status=status,
        seq=seq,
        worker=worker,
        heartbeat_at=timezone.now() - timedelta(seconds=heartbeat_age),
    )


async def test_start_up_ends_jobs_of_dead_processes_on_this_host(fast, transactional_db):
    host = socket.gethostname()
    dead = await make_job(f"{host}:{dead_pid()}:old")
    queued = await make_job(f"{host}:{dead_pid()}:old", status="queued")
    alive = await make_job(f"{host}:1:boot")  # pid 1 is alive
    elsewhere = await make_job("other-host:123:boot")
    done = await make_job(f"{host}:{dead_pid()}:old", status="succeeded")
    async with collect(owner="session:x") as seen:
        await stop_runtime()
        await get_runtime()
        await asyncio.wait_for(seen.terminal.wait(), 5)
    for job in (dead, queued):
        stored = await Job.objects.aget(pk=job.pk)
        assert stored.status == "interrupted"
        assert stored.seq == 7 + UNPERSISTED_SEQ_WINDOW + 1
        assert stored.finished_at is not None
        assert "stopped" in stored.error
    for job, status in ((alive, "running"), (elsewhere, "running"), (done, "succeeded")):
        assert (await Job.objects.aget(pk=job.pk)).status == status
    assert {m["job"] for m in seen.messages} == {str(dead.id), str(queued.id)}
    await stop_runtime()


async def test_own_pid_with_another_boot_is_a_previous_life(fast, transactional_db):
    import os

    job = await make_job(f"{socket.gethostname()}:{os.getpid()}:previous")
    assert await recover_dead_processes(f"{socket.gethostname()}:{os.getpid()}:now") == 1
    assert (await Job.objects.aget(pk=job.pk)).status == "interrupted"


async def test_stale_heartbeat_ends_the_job_anywhere(fast, transactional_db):
    stale = await make_job("far-host:1:boot", heartbeat_age=5)
    fresh = await make_job("far-host:2:boot", heartbeat_age=0)
    unclaimed = await make_job("", status="queued", heartbeat_age=5)
    assert await sweep_stale() == 1
    assert (await Job.objects.aget(pk=stale.pk)).status == "interrupted"
    assert (await Job.objects.aget(pk=fresh.pk)).status == "running"
    assert (await Job.objects.aget(pk=unclaimed.pk)).status == "queued"


async def test_running_jobs_keep_their_heartbeat(runtime):
    from liveprogress import actions

    job = await actions.start_job("session:x", "demo.timer", {"steps": 30, "interval": 0.1})
    first = (await Job.objects.aget(pk=job.pk)).heartbeat_at
    await asyncio.sleep(1.5)  # longer than STALE_AFTER (1 s) in the fast settings
    stored = await Job.objects.aget(pk=job.pk)
    assert stored.status == "running"
    assert stored.heartbeat_at > first
    await actions.cancel_job("session:x", str(job.id))
