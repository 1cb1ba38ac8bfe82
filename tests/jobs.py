"""Job kinds and helpers that only the tests use."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import asynccontextmanager
from typing import Any

from channels.layers import get_channel_layer

from liveprogress.publish import in_process, job_group, owner_group, receive_locally
from liveprogress.registry import job

# Set by a test to let `tests.blocking` return.
release = threading.Event()


@job("tests.sync_steps")
def sync_steps(progress, steps: int = 5, delay: float = 0.01):
    progress.start(total=steps)
    for _ in range(steps):
        time.sleep(delay)
        progress.advance()
    return {"done": steps}


@job("tests.million")
def million(progress, count: int = 1_000_000):
    progress.start(total=count)
    for _ in range(count):
        progress.advance()
    return count


@job("tests.fail")
def fail(progress):
    progress.start(total=2)
    progress.advance()
    raise ValueError("boom")


@job("tests.not_json")
async def not_json(progress):
    return {1, 2}


@job("tests.blocking")
def blocking(progress, seconds: float = 10.0):
    progress.start(total=1)
    release.wait(seconds)
    return "released"


@job("tests.ignores_cancel_checks")
def cooperative(progress, steps: int = 1000):
    progress.start(total=steps)
    for _ in range(steps):
        time.sleep(0.01)
        progress.advance()
    return steps


class Collected:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.terminal = asyncio.Event()

    @property
    def seqs(self) -> list[int]:
        return [message["seq"] for message in self.messages]


@asynccontextmanager
async def collect(*, job_id: str | None = None, owner: str | None = None):
    """Every state message published for a job or an owner, the way a server's hub
    gets them: straight from the publisher with the in-memory layer, else through
    the job's or the owner's group on the layer."""
    collected = Collected()

    def keep(message: dict[str, Any]) -> None:
        if message["job"] == job_id if job_id else message["owner"] == owner:
            collected.messages.append(message)
            if message["terminal"]:
                collected.terminal.set()

    layer = get_channel_layer()
    if in_process(layer):
        stop = receive_locally(keep)
        try:
            yield collected
        finally:
            stop()
        return
    channel = await layer.new_channel("tests.")
    group = job_group(job_id) if job_id else owner_group(owner or "")
    await layer.group_add(group, channel)

    async def receive() -> None:
        while True:
            keep(await layer.receive(channel))

    task = asyncio.get_running_loop().create_task(receive())
    try:
        yield collected
    finally:
        task.cancel()
        await layer.group_discard(group, channel)


@job("tests.retryable", retryable=True)
async def retryable(progress, steps: int = 3, interval: float = 0.05):
    progress.start(total=steps)
    for _ in range(steps):
        await asyncio.sleep(interval)
        progress.advance()
    return {"steps": steps}


@job("tests.chatty")
async def chatty(progress, seconds: float = 5.0, size: int = 20_000):
    """Changes its state far more often than it is published, with a big message."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    progress.start(total=None)
    count = 0
    while loop.time() < end:
        count += 1
        progress.set(count)
        progress.message(f"{count} " + "x" * size)
        await asyncio.sleep(0.002)
    return count
