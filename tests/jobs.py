"""Job kinds and helpers that only the tests use."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import asynccontextmanager
from typing import Any

from channels.layers import get_channel_layer

from liveprogress import job
from liveprogress.publish import (
    STATE_MESSAGE,
    in_process,
    job_group,
    owner_group,
    receive_locally,
)

# Set by a test to let `tests.blocking` return.
release = threading.Event()
# Set by a test to let every `tests.gated` job return, all at once.
gate = threading.Event()


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
        if message["type"] != STATE_MESSAGE:
            return
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
async def retryable(progress, steps: int = 3, interval: float = 0.05, say: str = ""):
    if say:
        progress.log(say)
    progress.start(total=steps)
    for _ in range(steps):
        await asyncio.sleep(interval)
        progress.advance()
    return {"steps": steps}


@job("tests.chatty")
async def chatty(progress, seconds: float = 5.0, size: int = 20_000):
    """Changes its state far more often than it is published, each state about
    ``size`` bytes (in its stages' names: a message is cut at 2,000 characters)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    progress.plan({f"{number:03d} " + "x" * 190: 1 for number in range(max(1, size // 200))})
    progress.start(total=None)
    count = 0
    while loop.time() < end:
        count += 1
        progress.set(count, message=str(count))
        await asyncio.sleep(0.002)
    return count


@job("tests.rich")
def rich(progress, rows: int = 20, delay: float = 0.005, bad_every: int = 5):
    """Stages, a tracked loop with a nested one, log lines and a result file."""
    progress.plan({"Read": 1, "Work": 3, "Write": 1})
    with progress.stage("Read"):
        progress.log("reading")
    with progress.stage("Work"):
        for row in progress.track(range(1, rows + 1)):
            for _part in progress.track(range(2)):
                time.sleep(delay)
            if bad_every and row % bad_every == 0:
                progress.log(f"row {row} is <bad> & skipped", level="warning")
    with progress.stage("Write"):
        progress.attach("out.csv", "a,b\n1,2\n", "text/csv")
        progress.log("written")
    return {"rows": rows}


@job("tests.logger")
async def logger(progress, lines: int = 50, interval: float = 0.002):
    """Logs ``lines`` numbered lines, ``interval`` seconds apart."""
    progress.start(total=lines)
    for number in range(1, lines + 1):
        progress.log(f"line {number}")
        progress.advance()
        await asyncio.sleep(interval)
    return lines


@job("tests.parent")
async def parent(progress, children: int = 2, steps: int = 3, interval: float = 0.05):
    """Starts ``children`` timed processes and waits for them all."""
    for _child in range(children):
        await progress.spawn("demo.timer", {"steps": steps, "interval": interval})
    return await progress.wait_children(poll=0.02)


@job("tests.fails_in_stage")
def fails_in_stage(progress):
    progress.plan({"First": 1, "Second": 1, "Third": 1})
    with progress.stage("First"):
        pass
    progress.stage("Second")
    raise ValueError("broken in the second stage")


@job("tests.counts_users")
def counts_users(progress, prefix: str = ""):
    """Reads the database the test wrote (the test's own rows, uncommitted in a TestCase)."""
    from django.contrib.auth import get_user_model

    names = list(
        get_user_model()
        .objects.filter(username__startswith=prefix)
        .order_by("username")
        .values_list("username", flat=True)
    )
    for name in progress.track(names):
        progress.log(f"user {name}")
    return {"users": names}


@job("tests.long_lines")
async def long_lines(progress, lines: int = 1000, width: int = 2000):
    """Logs ``lines`` lines of ``width`` characters at once: a burst far over 1 MiB."""
    for number in range(1, lines + 1):
        progress.log(f"{number:05d} " + "x" * (width - 6), level="warning")
    await asyncio.sleep(0.5)
    return lines


@job("tests.attach")
def attach(progress, name: str = "out.bin", size: int = 1000, count: int = 1):
    """Attaches ``count`` files of ``size`` bytes (``name`` numbered past the first)."""
    for number in range(count):
        progress.attach(name if number == 0 else f"{number}-{name}", b"x" * size)
    return count


@job("tests.gated")
async def gated(progress, value: int = 0):
    """Runs until the test opens the gate, then returns ``value``."""
    progress.message("waiting")
    while not gate.is_set():
        await asyncio.sleep(0.005)
    return value


@job("tests.abandons")
async def abandons(progress, children: int = 2):
    """Starts long timed processes, then fails: its children must not outlive it."""
    for _child in range(children):
        await progress.spawn("demo.timer", {"steps": 1000, "interval": 0.05})
    raise RuntimeError("the parent gave up")


@job("tests.oversized")
def oversized(progress, result_bytes: int = 0, message_chars: int = 0, stages: int = 0):
    """Says and returns as much as it is told to."""
    if message_chars:
        progress.message("m" * message_chars)
    for number in range(stages):
        with progress.stage(f"{number:03d}" + "s" * 300):
            pass
    return "r" * result_bytes


@job("tests.async_attach")
async def async_attach(progress, sync_call: bool = False):
    """Attaches a file from async code: with ``aattach``, or wrongly with ``attach``."""
    if sync_call:
        progress.attach("wrong.txt", b"hi")
    else:
        await progress.aattach("right.txt", b"hi")
    return "attached"


# -- production operations (tests/test_operations.py) ---------------------------------

# How many times each `tests.flaky` key was run, and the monotonic times of its runs.
flaky_runs: dict[str, list[float]] = {}


@job("tests.flaky", max_attempts=3, backoff=0.2, retry_on=ValueError)
async def flaky(progress, key: str, fail_times: int = 1, error: str = "ValueError"):
    """Fails (with ``error``) its first ``fail_times`` runs for ``key``, then succeeds."""
    runs = flaky_runs.setdefault(key, [])
    runs.append(time.monotonic())
    if len(runs) <= fail_times:
        raise {"ValueError": ValueError, "TypeError": TypeError}[error](f"run {len(runs)} failed")
    return {"runs": len(runs)}


@job("tests.slow_async", timeout=0.3)
async def slow_async(progress, seconds: float = 5.0):
    await asyncio.sleep(seconds)
    return "too late"


@job("tests.slow_sync", timeout=0.3)
def slow_sync(progress, steps: int = 100, delay: float = 0.05):
    progress.start(total=steps)
    for _ in range(steps):
        time.sleep(delay)
        progress.advance()
    return steps


@job("tests.silent_sync", timeout=0.3)
def silent_sync(progress, seconds: float = 0.8):
    # No progress call: the time limit can only be seen once it returns.
    time.sleep(seconds)
    return "done late"


# The jobs of `tests.one_at_a_time` running right now, and the most there ever were.
one_at_a_time_running: list[str] = []
one_at_a_time_most = [0]


@job("tests.one_at_a_time", concurrency=1)
async def one_at_a_time(progress, label: str, seconds: float = 0.3):
    one_at_a_time_running.append(label)
    one_at_a_time_most[0] = max(one_at_a_time_most[0], len(one_at_a_time_running))
    try:
        await asyncio.sleep(seconds)
    finally:
        one_at_a_time_running.remove(label)
    return label


@job("tests.monthly", unique="month")
async def monthly(progress, month: int, note: str = "", seconds: float = 0.5):
    await asyncio.sleep(seconds)
    return month


@job("tests.site_wide", unique=True, unique_scope="site")
async def site_wide(progress, seconds: float = 0.5):
    await asyncio.sleep(seconds)
    return "refreshed"


@job("tests.steady", max_attempts=3, backoff=1.0)
async def steady(progress, steps: int = 40, interval: float = 0.1):
    """Long enough to kill its worker mid-way; retried (after 1 s) if that happens."""
    progress.start(total=steps)
    for _ in range(steps):
        await asyncio.sleep(interval)
        progress.advance()
    return {"steps": steps}


# -- checkpoints and pause (tests/test_checkpoints.py) --------------------------------

# The rows each `tests.rows` key finished, in order, across every attempt.
rows_done: dict[str, list[int]] = {}


@job("tests.rows", max_attempts=3, backoff=0.1, retry_on=ValueError)
def rows(progress, key: str, count: int = 20, delay: float = 0.02, fail_at: int = -1):
    """Works through ``count`` rows; fails once, at row ``fail_at``, the first time."""
    done = rows_done.setdefault(key, [])
    for row in progress.track(range(count)):
        if row == fail_at and row not in done and not progress.resumed:
            raise ValueError(f"row {row} failed")
        time.sleep(delay)
        done.append(row)
    return {"rows": count, "resumed": progress.resumed}


# The pages each `tests.pages` key fetched, across every attempt.
pages_fetched: dict[str, list[int]] = {}


@job("tests.pages", max_attempts=2, backoff=0)
async def pages(progress, key: str, count: int = 10, delay: float = 0.02, fail_at: int = -1):
    """Keeps its own position (a page number) with `checkpoint`, and goes on from it."""
    fetched = pages_fetched.setdefault(key, [])
    page = (progress.checkpoint_data or {}).get("next", 0)
    progress.start(total=count)
    progress.set(page)
    while page < count:
        if page == fail_at and not progress.resumed:
            raise ValueError(f"page {page} failed")
        await asyncio.sleep(delay)
        fetched.append(page)
        page += 1
        progress.set(page)
        progress.checkpoint({"next": page})
    return {"pages": count}


@job("tests.paced", concurrency=1)
async def paced(progress, steps: int = 10, interval: float = 0.1, warmup: float = 0.0):
    """A run whose length the test sets: ``warmup`` seconds before its first item
    (its total said), then ``steps`` items ``interval`` apart. One at a time."""
    progress.start(total=steps)
    await asyncio.sleep(warmup)
    for _ in range(steps):
        await asyncio.sleep(interval)
        progress.advance()
    return steps


@job("tests.staged")
async def staged(progress, fetch: float = 0.4, load: float = 0.8):
    """Two stages named as they come (no plan), each as long as the test says."""
    for name, seconds in (("Fetch", fetch), ("Load", load)):
        with progress.stage(name):
            progress.start(total=4)
            for _ in range(4):
                await asyncio.sleep(seconds / 4)
                progress.advance()
    return "staged"
