"""Tasks that start in the caller's turn of the event loop.

``loop.create_task`` runs nothing until the loop's next iteration; on a busy
loop (thousands of ready callbacks) that iteration is what a final state waited
for, once per hop on its way (BENCHMARKS.md, "Where a final state's time goes").
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def start_now(
    coro: Coroutine[Any, Any, T], context: contextvars.Context | None = None
) -> asyncio.Task[T]:
    """A task that runs ``coro`` at once, up to its first real wait (Python 3.12+;
    before that, from the loop's next turn). A socket send the server takes without
    waiting (Daphne's, most of Uvicorn's) then costs no wake-up and no loop
    iteration. ``context``: the task's (default: a copy of the caller's, as
    ``create_task``)."""
    loop = asyncio.get_running_loop()
    if sys.version_info >= (3, 12):
        return asyncio.eager_task_factory(loop, coro, context=context)
    return loop.create_task(coro, context=context)
