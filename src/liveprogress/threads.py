"""The threads that run sync job functions in a process, shared fairly between owners.

A plain pool serves in arrival order: one owner who starts as many sync jobs as
there are threads (within their own cap) holds every thread, and everyone
else's jobs wait `queued` until theirs end. Here one owner runs at most
``MAX_SYNC_PER_OWNER`` at once, and when a thread frees up, the owners waiting
for one take turns (each owner's own jobs in the order they came).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from django.db import close_old_connections

T = TypeVar("T")


class FairThreads:
    """``await threads.run(owner, call)``: ``call()`` in a thread of the pool, when
    its owner's turn comes."""

    def __init__(self, workers: int, per_owner: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="liveprogress-job")
        self._free = workers
        self._per_owner = max(1, min(per_owner, workers))
        self._running: Counter[str] = Counter()
        # Owners waiting for a thread, in turn order (a dict keeps it): the one served
        # goes to the back of the line.
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}

    def running(self, owner: str) -> int:
        """How many sync jobs of ``owner`` hold a thread now."""
        return self._running[owner]

    async def run(self, owner: str, call: Callable[[], T]) -> T:
        await self._take_turn(owner)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, _closing(call))
        finally:
            self._give_back(owner)

    async def _take_turn(self, owner: str) -> None:
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(owner, deque()).append(turn)
        self._serve()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._give_back(owner)  # the thread came with the cancel: pass it on
            else:
                self._forget(owner, turn)
            raise

    def _serve(self) -> None:
        """Hand free threads to waiting owners, in turn, within each one's share."""
        while self._free > 0:
            owner = next(
                (waiting for waiting in self._waiting if self._running[waiting] < self._per_owner),
                None,
            )
            if owner is None:
                return
            turns = self._waiting.pop(owner)
            turn = turns.popleft()
            if turns:
                self._waiting[owner] = turns
            if turn.done():
                continue  # cancelled while it waited
            self._free -= 1
            self._running[owner] += 1
            turn.set_result(None)

    def _give_back(self, owner: str) -> None:
        self._free += 1
        self._running[owner] -= 1
        if self._running[owner] <= 0:
            del self._running[owner]
        self._serve()

    def _forget(self, owner: str, turn: asyncio.Future[None]) -> None:
        turns = self._waiting.get(owner)
        if turns is not None and turn in turns:
            turns.remove(turn)
            if not turns:
                del self._waiting[owner]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _closing(call: Callable[[], T]) -> Callable[[], T]:
    def in_thread() -> T:
        try:
            return call()
        finally:
            # The thread's connection outlives the job otherwise.
            close_old_connections()

    return in_thread
