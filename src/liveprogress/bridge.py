"""Calling liveprogress's async core from sync code (the sync public API).

Jobs run on an event loop that lives as long as they do. In a sync view served
over ASGI that is the server's loop, reached as Django reaches it
(``async_to_sync``). Where no server loop exists (a management command, a shell,
a script), it is a loop of liveprogress's own, on a daemon thread started on
first use: jobs started there run inside that process, which must wait for them
(``handle.wait()``) before it exits.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from asgiref.sync import SyncToAsync, async_to_sync

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def call(work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work()`` on the server's loop, else on the process's own; return its value."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "This is the sync API, called from async code: await its a-prefixed twin "
            "(astart, aget_job, acancel_job, arefresh, acancel, await_end)"
        )
    if server_loop() is not None:
        return async_to_sync(_awaited)(work)
    return asyncio.run_coroutine_threadsafe(_awaited(work), own_loop()).result()


async def _awaited(work: Callable[[], Awaitable[T]]) -> T:
    return await work()


def server_loop() -> asyncio.AbstractEventLoop | None:
    """The running loop of the ASGI server this sync code was called from, if any."""
    if getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None) != os.getpid():
        return None
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    return loop if loop is not None and loop.is_running() else None


def current_own_loop() -> asyncio.AbstractEventLoop | None:
    """liveprogress's own loop for this process if it was started (none is started)."""
    return _loop


def own_loop() -> asyncio.AbstractEventLoop:
    """liveprogress's own loop for this process, started on first use."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="liveprogress-loop", daemon=True).start()
            _loop = loop
        return _loop
